import json
import shutil

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from silodiff.cli.main import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_attribute_generated_images_writes_json_and_pngs(comp_store, tmp_path):
    out = tmp_path / "a"
    r = _run(
        "attribute",
        "--store",
        comp_store.root,
        "--seed",
        3,
        "--labels",
        "0,none",
        "--n",
        2,
        "--steps",
        6,
        "--out",
        out,
        "--json",
    )
    assert r.exit_code == 0, r.output
    result = json.loads((out / "attribution.json").read_text())
    assert [im["label"] for im in result["images"]] == [0, None]
    assert set(result["images"][0]["loo_distance"]) == set(result["compartments"])
    for name in ("images.png", "weights.png", "loo.png", "counterfactuals.png"):
        assert (out / name).stat().st_size > 0


def test_attribute_image_file_posterior(comp_store, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(comp_store.dataset().pixels[3, 0].numpy()).save(path)
    r = _run("attribute", "--store", comp_store.root, "--image", path, "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    post = json.loads((tmp_path / "p" / "posterior.json").read_text())
    assert abs(sum(post["posterior"].values()) - 1) < 1e-5 and (tmp_path / "p" / "posterior.png").exists()


def test_train_encoded_then_attribute_units(comp_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(comp_store.root, store)
    r = _run("train", "encoded", "--store", store, "--members", 4, "--unit", "source", "--epochs", 2, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["units"] == 3
    out = tmp_path / "e"
    r = _run(
        "attribute", "--store", store, "--ensemble", "--seed", 1, "--n", 2, "--steps", 5, "--top-k", 2, "--out", out
    )
    assert r.exit_code == 0, r.output
    result = json.loads((out / "influence.json").read_text())
    assert len(result["images"]) == 2 and len(result["images"][0]["top"]) == 2 and (out / "topk.png").exists()
    r = _run("attribute", "--store", store, "--ensemble", "--seed", 1, "--n", 2, "--steps", 5, "--contrast", "full",
             "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    full_run = json.loads((tmp_path / "m" / "influence.json").read_text())
    assert result["contrast"] == "matched" and full_run["contrast"] == "full"
    assert full_run["images"][0]["top"] != result["images"][0]["top"]
    r = _run("attribute", "--store", store, "--ensemble", "--seed", 1, "--contrast", "half", "--out", tmp_path / "m")
    assert r.exit_code == 2 and r.output.strip().startswith("error: unknown contrast"), r.output
    path = tmp_path / "x.png"
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(path)
    r = _run("attribute", "--store", store, "--ensemble", "--image", path, "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    assert "loss_change" in json.loads((tmp_path / "f" / "influence.json").read_text())["images"][0]["top"][0]


def test_bad_input_is_one_line_and_exit_2(comp_store, tmp_path):
    cases = [
        ("attribute", "--store", comp_store.root, "--out", tmp_path),  # neither --seed nor --image
        ("attribute", "--store", comp_store.root, "--seed", 1, "--image", tmp_path / "x.png", "--out", tmp_path),
        ("attribute", "--store", comp_store.root, "--seed", 1, "--labels", "12", "--out", tmp_path),
        ("attribute", "--store", comp_store.root, "--image", tmp_path / "missing.png", "--out", tmp_path),
        ("attribute", "--store", comp_store.root, "--seed", 1, "--ensemble", "--out", tmp_path),  # no encoded ensemble
        ("train", "encoded", "--store", comp_store.root, "--members", 5),
        ("train", "encoded", "--store", comp_store.root, "--unit", "column:owner"),
    ]
    for args in cases:
        r = _run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
