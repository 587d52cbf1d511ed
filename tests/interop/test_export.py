"""Export to diffusers and peft: the folders load with diffusers / peft alone and give the same ε."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import silodiff as sd
from silodiff.cli.main import app

runner = CliRunner()


def test_exported_unet_gives_the_compartments_eps(unet_store, tmp_path, inputs):
    from diffusers import UNet2DModel

    x, t, y = inputs
    report = sd.export(unet_store, tmp_path / "out", compartment="source-1")
    model = sd.load_denoiser(unet_store, "source-1")
    cond = UNet2DModel.from_pretrained(str(tmp_path / "out" / "unet_conditional"), local_files_only=True)
    plain = UNet2DModel.from_pretrained(str(tmp_path / "out" / "unet"), local_files_only=True)
    with torch.no_grad():
        assert (cond(x, t, class_labels=y).sample - model(x, t, y)).abs().max() <= 1e-5
        assert (plain(x, t).sample - model(x, t, None)).abs().max() <= 1e-5  # the null label folded in
        assert (plain(x, t).sample - model(x, t, y)).abs().max() > 1e-4  # ... and only the null label
    assert report["artifact"] == sd.load_denoiser(unet_store, "source-1").artifact_hash
    assert report["null_label"] == 10 and report["folders"]["unet_conditional"] == "unet_conditional"


def test_ddpm_pipeline_runs_from_the_exported_folder(unet_store, tmp_path):
    from diffusers import DDPMPipeline

    sd.export(unet_store, tmp_path / "pipe", paragon=False, base=True)
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "pipe"), local_files_only=True)
    assert pipe.scheduler.config.num_train_timesteps == 1000 and pipe.scheduler.config.beta_end == 0.02
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1) and images.min() >= 0 and images.max() <= 1


def test_a_lora_compartment_exports_as_a_merged_unet_and_as_a_peft_adapter(unet_store, tmp_path, inputs):
    from diffusers import UNet2DModel
    from peft import PeftModel

    x, t, y = inputs
    model = sd.load_denoiser(unet_store, "source-2")
    sd.export(unet_store, tmp_path / "merged", compartment="source-2")
    merged = UNet2DModel.from_pretrained(str(tmp_path / "merged" / "unet_conditional"), local_files_only=True)
    report = sd.export(unet_store, tmp_path / "peft", compartment="source-2", format="peft")
    base = UNet2DModel.from_pretrained(str(tmp_path / "peft" / "base_unet"), local_files_only=True)
    with torch.no_grad():
        before = base(x, t, class_labels=y).sample
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "peft" / "adapter"))
        eps = model(x, t, y)
        assert (adapted(x, t, class_labels=y).sample - eps).abs().max() <= 1e-5
        assert (merged(x, t, class_labels=y).sample - eps).abs().max() <= 1e-5
        assert (before - eps).abs().max() > 1e-6  # the adapter changes the base
    assert report["format"] == "peft" and set(report["folders"]) == {"adapter", "base_unet"}


def test_peft_needs_a_lora_compartment(unet_store, tmp_path):
    r = runner.invoke(app, ["export", "--store", str(unet_store.root), "--compartment", "source-1", "--format", "peft",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not a LoRA adapter" in r.output and not (tmp_path / "o").exists()


def test_an_mlp_model_is_one_clear_error(tmp_store, tmp_path):
    config = sd.TrainConfig(epochs=1, batch_size=16, device="cpu")
    sd.train_paragon(tmp_store, config=config, progress=False)
    r = runner.invoke(app, ["export", "--store", str(tmp_store.root), "--paragon", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "MLP denoiser" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


def test_a_non_empty_out_is_refused_unless_forced(unet_store, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["export", "--store", str(unet_store.root), "--compartment", "source-1", "--out", str(out), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "not empty" in r.output and (out / "keep.txt").exists()
    r = runner.invoke(app, [*args, "--force"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"] == "source-1"
    assert not (out / "keep.txt").exists() and (out / "model_index.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no staging folder left


def test_exactly_one_target(unet_store, tmp_path):
    r = runner.invoke(app, ["export", "--store", str(unet_store.root), "--paragon", "--compartment", "source-1",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "exactly one" in r.output


def test_a_composition_exports_every_member_and_loads_back(unet_store, tmp_path, inputs):
    x, t, y = inputs
    report = sd.export(unet_store, tmp_path / "comp", composition=["source-1", "source-2"], router="trajectory")
    manifest = json.loads((tmp_path / "comp" / "composition.json").read_text())
    assert manifest["allowed"] == ["source-1", "source-2"] == report["allowed"]
    assert "no composed pipeline" in manifest["note"]
    for name in manifest["allowed"]:
        assert (tmp_path / "comp" / "members" / name / "model_index.json").exists()
    back = sd.load_export(tmp_path / "comp")
    model = sd.compose(unet_store, ["source-1", "source-2"], router="trajectory", share=False)
    with torch.no_grad():
        assert (back(x, torch.full((4,), 999), y) - model(x, torch.full((4,), 999), y)).abs().max() <= 1e-5


def test_a_composition_with_the_classifier_router_loads_back_with_it(unet_store, tmp_path, inputs):
    x, _, y = inputs
    sd.train_router(unet_store, config=sd.TrainConfig(epochs=1, batch_size=16, device="cpu"), progress=False)
    r = runner.invoke(app, ["export", "--store", str(unet_store.root), "--composition", "all", "--out",
                            str(tmp_path / "comp"), "--json"])
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.stdout)
    assert manifest["router"]["kind"] == "classifier" and (tmp_path / "comp" / "router" / "model.safetensors").exists()
    back = sd.load_export(tmp_path / "comp")
    model = sd.compose(unet_store, share=False)
    assert back.names == model.names == ["source-1", "source-2"]
    t = torch.full((4,), 999)
    with torch.no_grad():
        assert (back(x, t, y) - model(x, t, y)).abs().max() <= 1e-5
        assert torch.allclose(back.last_weights, model.last_weights, atol=1e-6)
