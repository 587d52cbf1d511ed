"""The whole path at 32×32 RGB with the tiny UNet preset, through the CLI: ingest a folder of RGB PNGs, train
2 compartments, compose with each router, sample, audit, forget, certify; and the bad device / config inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from silodiff.cli.main import app
from silodiff.store import Store

runner = CliRunner()


def cli_json(*args):
    result = runner.invoke(app, [str(a) for a in args] + ["--json"])
    assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return json.loads(result.stdout)


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]


def rgb_folder(root, per_label: int = 6):
    """root/<source>/<label>/*.png: 2 sources × 2 labels of 32×32 RGB images, colour carries the label."""
    rng = np.random.default_rng(0)
    for s, source in enumerate(("alice", "bob")):
        for label in (0, 1):
            folder = root / source / str(label)
            folder.mkdir(parents=True)
            for i in range(per_label):
                img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
                img[..., label] += 150  # red for 0, green for 1
                img[8 + 4 * s : 16 + 4 * s, 4 + i : 12 + i, 2] = 255
                Image.fromarray(img, "RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def rgb_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rgb")
    store = tmp / "store"
    ingest = cli_json("data", "ingest", "--store", store, "--dataset", "folder", "--path", rgb_folder(tmp / "png"))
    assert ingest["added"] == 24
    trained = cli_json("train", "compartments", "--store", store, "--epochs", "2", "--slices", "2", "--batch-size", "8",
                       "--unet-config", "tiny", "--device", "cpu", "--hflip")
    assert sorted(r["compartment"] for r in trained) == ["alice", "bob"]
    assert cli_json("train", "router", "--store", store, "--epochs", "2", "--device", "cpu")["router"]
    return store


def test_rgb_images_ingest_as_three_channels_and_train_the_tiny_unet(rgb_store):
    st = Store(rgb_store, create=False)
    assert st.dataset().image_shape == (3, 32, 32)
    final = [a for a in st.catalog.artifacts("compartment") if a["slice"] == 1]
    config = st.catalog.artifact(final[0]["hash"])["config"]
    assert config["kind"] == "unet-denoiser" and config["image_shape"] == [3, 32, 32]
    assert "AttnDownBlock2D" in config["unet"]["down_block_types"]


@pytest.mark.parametrize("router", ["classifier", "trajectory", "uniform"])
def test_compose_with_each_router_and_sample(rgb_store, tmp_path, router):
    out = cli_json("sample", "--store", rgb_store, "--out", tmp_path, "--n", "4", "--steps", "3", "--router", router,
                   "--device", "cpu", "--gate", "0.1")
    assert out["device"] == "cpu" and sorted(out["compartments"]) == ["alice", "bob"]
    images = np.load(tmp_path / "samples.npz")["images"]
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8


def test_audit_forget_and_certify(rgb_store, tmp_path):
    # a copy, so the other tests keep the module's store as it was
    import shutil

    store = tmp_path / "store"
    shutil.copytree(rgb_store, store)
    result = runner.invoke(app, [str(a) for a in ("audit", "--store", store, "--out", tmp_path / "audit", "--n", "4", "--steps",
                                                  "3", "--mia-n", "4", "--attacks", "loss", "--device", "cpu", "--json")])
    assert result.exit_code == 0, result.output
    audit = json.loads(result.stdout[result.stdout.index("{"):])  # the audit logs its progress first
    assert audit["results"]["model"] == "composed"
    victim = Store(store, create=False).catalog.sample_rows("alice")[0]["sample_id"]
    result = runner.invoke(app, ["forget", "--store", str(store), "--sample", victim, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    cert = next((store / "certificates").glob("*.json"))
    verified = cli_json("certificate", "verify", cert, "--store", store)
    assert verified["ok"] and verified["problems"] == []
    assert victim not in Store(store, create=False).dataset().sample_ids


@pytest.mark.parametrize("args, fragments", [
    (["train", "compartments", "--unet-config", "huge"], ["unknown UNet preset 'huge'"]),
    (["train", "compartments", "--device", "tpu"], ["unknown device 'tpu'"]),
    (["train", "paragon", "--precision", "fp8"], ["unknown precision 'fp8'"]),
    (["sample", "--device", "gpu"], ["unknown device 'gpu'"]),
])
def test_bad_device_precision_or_preset_is_one_line_and_registers_nothing(tmp_path, args, fragments):
    store = tmp_path / "store"
    cli_json("data", "ingest", "--store", store, "--dataset", "folder", "--path", rgb_folder(tmp_path / "png", 1))
    before = Store(store, create=False).catalog.verify_chain()[1]
    extra = ["--out", str(tmp_path / "o")] if args[0] == "sample" else []
    one_line_error(runner.invoke(app, [*args, "--store", str(store), *extra]), *fragments)
    st = Store(store, create=False)
    assert st.catalog.verify_chain()[1] == before and st.catalog.compartments() == [] and st.catalog.artifacts(None) == []


def test_cuda_without_a_gpu_and_a_config_the_images_cannot_take(tmp_path):
    import torch

    store = tmp_path / "store"
    cli_json("data", "ingest", "--store", store, "--dataset", "folder", "--path", rgb_folder(tmp_path / "png", 1))
    bad = tmp_path / "unet.json"
    bad.write_text(json.dumps({"block_out_channels": [8, 8, 8, 8, 8, 8, 8], "norm_num_groups": 4,
                               "down_block_types": ["DownBlock2D"] * 7, "up_block_types": ["UpBlock2D"] * 7}))
    cases = [(["--unet-config", str(bad)], ["cannot go through 7 UNet levels", "multiple of 64"]),
             (["--unet-config", str(tmp_path / "rejected.json")], ["does not exist"])]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], ["no CUDA GPU is available"]))
    for extra, fragments in cases:
        one_line_error(runner.invoke(app, ["train", "compartments", "--store", str(store), *extra]), *fragments)
        assert Store(store, create=False).catalog.compartments() == []
