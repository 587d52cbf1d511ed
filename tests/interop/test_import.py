"""``--init-from``: a pretrained diffusers UNet2DModel starts a model; the catalog and certificates name it as external."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import silodiff as sd
from silodiff.cli.main import app
from silodiff.nn.presets import PRESETS

runner = CliRunner()


def _pretrained(folder, *, classes: int | None = None, channels: int = 1, size: int = 8):
    """A diffusers UNet2DModel written with save_pretrained (random weights, no download)."""
    from diffusers import UNet2DModel

    torch.manual_seed(1)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, num_class_embeds=classes,
                       **PRESETS["tiny"])
    unet.save_pretrained(str(folder))
    return unet


def _artifact_count(store) -> int:
    return len(store.catalog.artifacts(None, active=None))


def test_init_from_trains_and_lineage_shows_the_external_artifact(tmp_store, tmp_path):
    from silodiff.store.lineage import store_image_shape
    from silodiff.nn.diffusers_io import denoiser_from_unet

    unet = _pretrained(tmp_path / "pretrained")
    args = ["train", "paragon", "--store", str(tmp_store.root), "--init-from", str(tmp_path / "pretrained"),
            "--provenance", "our own model, trained on licensed photos", "--epochs", "1", "--batch-size", "16",
            "--slices", "1", "--device", "cpu", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    paragon = json.loads(r.stdout)["paragon"]
    (ext,) = tmp_store.catalog.artifacts("external")
    assert ext["metrics"]["provenance"] == "our own model, trained on licensed photos"
    assert tmp_store.catalog.lineage(ext["hash"]) == []  # no sample of this store
    r = runner.invoke(app, ["catalog", "lineage", "--store", str(tmp_store.root), paragon, "--json"])
    lineage = json.loads(r.stdout)
    assert lineage["n"] == 32 and [e["hash"] for e in lineage["external"]] == [ext["hash"]]
    assert lineage["external"][0]["status"] == "external, not forgettable here"
    r = runner.invoke(app, ["catalog", "lineage", "--store", str(tmp_store.root), paragon])
    assert f"external {ext['hash']}" in r.stdout and "not forgettable here" in r.stdout
    # the stored external weights are the pretrained UNet's (an unconditional UNet: zero class embeddings)
    start = tmp_store.load(ext["hash"])
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 700])
    with torch.no_grad():
        assert (start(x, t, torch.tensor([3, 10])) - unet(x, t).sample).abs().max() <= 1e-5
        trained = tmp_store.load(paragon)
        assert (trained(x, t, None) - start(x, t, None)).abs().max() > 1e-6  # it trained from there
    from silodiff.store.artifacts import canonical_json

    assert canonical_json(start.config) == canonical_json(denoiser_from_unet(unet, store_image_shape(tmp_store), 10).config)


def test_a_conditional_pretrained_unet_and_the_api(tmp_store, tmp_path):
    _pretrained(tmp_path / "p", classes=11)
    config = sd.TrainConfig(epochs=1, batch_size=16, device="cpu")
    sd.plan_compartments(tmp_store, by="source", slices=1)
    (r,) = sd.train_compartments(tmp_store, ["source-0"], config=config, init_from=tmp_path / "p",
                                 provenance="test", progress=False)
    info = json.loads((tmp_store.artifacts.path(r.artifacts[-1]) / "config.json").read_text())["info"]
    assert info["init_from"] == tmp_store.catalog.artifacts("external")[0]["hash"]


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("empty", "not a diffusers model folder"),
    ("not-diffusers", "not a diffusers UNet2DModel"),
    ("channels", "in/out channels 3/3, the store's images have 1"),
    ("size", "sample_size 16"),
    ("classes", "num_class_embeds 5"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_registered(tmp_store, tmp_path, case, message):
    folder = tmp_path / "p"
    if case == "empty":
        folder.mkdir()
    elif case == "not-diffusers":
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    elif case == "channels":
        _pretrained(folder, channels=3)
    elif case == "size":
        _pretrained(folder, size=16)
    elif case == "classes":
        _pretrained(folder, classes=5)
    before, events = _artifact_count(tmp_store), len(tmp_store.catalog.events())
    for command in (["train", "paragon"], ["train", "compartments"], ["train", "base", "--sources", "source-0"]):
        r = runner.invoke(app, [*command, "--store", str(tmp_store.root), "--init-from", str(folder), "--epochs", "1"])
        assert r.exit_code == 2, r.output
        assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert _artifact_count(tmp_store) == before and len(tmp_store.catalog.events()) == events
    assert tmp_store.catalog.compartments() == [] and tmp_store.catalog.public_sources() == []


def test_exported_then_imported_back_gives_the_same_eps(unet_store, tmp_path, inputs):
    """The diffusers round trip: export a compartment, import its UNet back: the same ε."""
    from silodiff.jobs.pretrained import import_unet

    x, t, y = inputs
    sd.export(unet_store, tmp_path / "out", compartment="source-1")
    model = sd.load_denoiser(unet_store, "source-1")
    for folder in ("unet_conditional", "."):  # the class-conditional UNet; the pipeline folder (its unconditional unet/)
        record = import_unet(unet_store, tmp_path / "out" / folder, "exported from this store")
        back = unet_store.load(record["hash"])
        with torch.no_grad():
            want = model(x, t, y) if folder != "." else model(x, t, None)
            assert (back(x, t, y) - want).abs().max() <= 1e-5


def test_a_forget_retrains_from_the_same_pretrained_unet_and_the_certificate_names_it(tmp_store, tmp_path):
    _pretrained(tmp_path / "p")
    config = sd.TrainConfig(epochs=1, batch_size=16, device="cpu")
    sd.plan_compartments(tmp_store, by="source", slices=1)
    sd.train_compartments(tmp_store, config=config, init_from=tmp_path / "p", provenance="licensed", progress=False)
    (ext,) = tmp_store.catalog.artifacts("external")
    victim = tmp_store.catalog.sample_rows("source-0")[0]["sample_id"]
    cert = sd.forget(tmp_store, sample_ids=[victim])
    (entry,) = cert["external_artifacts"]
    assert entry["hash"] == ext["hash"] and entry["status"] == "external, not forgettable here"
    assert entry["provenance"] == "licensed"
    new = cert["new_artifacts"][0]["hash"]
    info = json.loads((tmp_store.artifacts.path(new) / "config.json").read_text())["info"]
    assert info["init_from"] == ext["hash"]  # retrained from slice 0: from the same pretrained weights
    ok, problems = sd.verify_certificate(tmp_store, cert)
    assert ok, problems
    train_file = tmp_store.artifacts.path(new) / "train.safetensors"  # the resume state, which sampling never reads
    blob = bytearray(train_file.read_bytes())
    blob[-2] ^= 0x01
    train_file.write_bytes(bytes(blob))
    ok, problems = sd.verify_certificate(tmp_store, cert)
    assert not ok and any("train.safetensors was modified" in p for p in problems)
