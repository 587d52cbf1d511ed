"""The core CLI through Typer's CliRunner: ingest → train → sample → quality →
catalog queries, ``--json`` output, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from silodiff.cli.main import app
from silodiff.store import Store

runner = CliRunner()


def cli(*args: str, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def cli_json(*args: str):
    return json.loads(cli(*args, "--json").stdout)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory):
    """A store built entirely through the CLI (tiny epochs)."""
    store = tmp_path_factory.mktemp("cli") / "store"
    ingest = cli_json("data", "ingest", "--store", store, "--dataset", "digits", "--limit", "120",
                      "--assign", "random:3")
    assert ingest["loaded"] == ingest["added"] == 120 and len(ingest["sources"]) == 3
    trained = cli_json("train", "compartments", "--store", store, "--epochs", "2", "--slices", "2",
                       "--batch-size", "32")
    assert sorted(r["compartment"] for r in trained) == ["source-0", "source-1", "source-2"]
    assert all(r["checkpoints"] == 2 and r["resumed_from_slice"] == 0 for r in trained)
    assert cli_json("train", "paragon", "--store", store, "--epochs", "2")["paragon"]
    assert cli_json("train", "router", "--store", store, "--epochs", "2")["router"]
    return store


def test_ingest_again_adds_nothing(cli_store):
    again = cli_json("data", "ingest", "--store", cli_store, "--limit", "120", "--assign", "random:3")
    assert again["added"] == 0 and sum(s["n"] for s in again["sources"]) == 120
    assert "source-2" in cli("data", "ingest", "--store", cli_store, "--limit", "10", "--assign", "random:3").stdout


def test_training_again_resumes_past_the_last_slice(cli_store):
    rows = cli_json("train", "compartments", "--store", cli_store, "--epochs", "2", "--batch-size", "32",
                    "--only", "source-1")
    assert rows == [{"compartment": "source-1", "checkpoints": 0, "final": None, "steps": 0,
                     "seconds": rows[0]["seconds"], "resumed_from_slice": 2}]


def test_sample_composed_writes_png_and_npz_with_weights(cli_store, tmp_path):
    out = tmp_path / "samples"
    summary = cli_json("sample", "--store", cli_store, "--out", out, "--n", "6", "--steps", "3",
                       "--router", "trajectory", "--allowed", "source-0,source-2", "--labels", "1,2")
    assert summary["compartments"] == ["source-0", "source-2"]
    assert set(summary["member_evaluations"]) == {"source-0", "source-2"}
    assert (out / "samples.png").stat().st_size > 0
    npz = np.load(out / "samples.npz")
    assert npz["images"].shape == (6, 1, 8, 8) and npz["images"].dtype == np.uint8
    assert npz["labels"].tolist() == [1, 2, 1, 2, 1, 2] and int(npz["seed"]) == 0
    assert npz["weights_mean"].shape == npz["weights_last"].shape == (6, 2)
    np.testing.assert_allclose(npz["weights_mean"].sum(1), 1, rtol=1e-5)
    assert npz["compartments"].tolist() == ["source-0", "source-2"]
    # same seed → same images
    cli("sample", "--store", cli_store, "--out", tmp_path / "again", "--n", "6", "--steps", "3",
        "--router", "trajectory", "--allowed", "source-0,source-2", "--labels", "1,2")
    assert np.array_equal(np.load(tmp_path / "again" / "samples.npz")["images"], npz["images"])


def test_sample_paragon_and_classifier_router(cli_store, tmp_path):
    paragon = cli_json("sample", "--store", cli_store, "--out", tmp_path / "p", "--model", "paragon", "--n", "4",
                       "--steps", "2", "--labels", "none", "--sampler", "ddim")
    npz = np.load(tmp_path / "p" / "samples.npz")
    assert "weights_mean" not in npz and npz["labels"].tolist() == [-1] * 4 and "compartments" not in paragon
    gated = cli_json("sample", "--store", cli_store, "--out", tmp_path / "c", "--n", "4", "--steps", "2",
                     "--gate", "0.5")
    assert len(gated["compartments"]) == 3
    assert sum(gated["member_evaluations"].values()) < 3 * 4 * 2  # gating skipped members


def test_quality(cli_store):
    result = cli_json("quality", "--store", cli_store, "--model", "paragon", "--n", "20", "--steps", "2")
    assert result["model"] == "paragon" and result["fld"] > 0 and 0 <= result["class_accuracy"] <= 1


def test_catalog_commands(cli_store):
    sources = cli_json("catalog", "sources", "--store", cli_store)
    assert {s["name"] for s in sources} == {"source-0", "source-1", "source-2"}
    compartments = cli_json("catalog", "compartments", "--store", cli_store)
    assert all(c["status"] == "trained" and c["n_slices"] == 2 for c in compartments)
    assert sum(c["n"] for c in compartments) == 120
    artifacts = cli_json("catalog", "artifacts", "--store", cli_store)
    kinds = sorted(a["kind"] for a in artifacts)
    assert kinds.count("compartment") == 6 and kinds.count("paragon") == 2 and kinds.count("router") == 1
    assert cli_json("catalog", "artifacts", "--store", cli_store, "--kind", "router")[0]["kind"] == "router"
    final = next(a for a in artifacts if a["name"] == "source-0" and a["slice"] == 1)
    lineage = cli_json("catalog", "lineage", "--store", cli_store, final["hash"][:12])
    own = {r["sample_id"] for r in Store(cli_store, create=False).catalog.sample_rows("source-0")}
    assert lineage["artifact"] == final["hash"] and set(lineage["sample_ids"]) == own and lineage["n"] == len(own)
    assert cli("catalog", "lineage", "--store", cli_store, final["hash"]).stdout.split() == sorted(own)
    saw = cli_json("catalog", "saw", "--store", cli_store, min(own))
    assert {(a["kind"], a["name"]) for a in saw} >= {("compartment", "source-0"), ("paragon", "paragon"),
                                                     ("router", "shard-classifier")}
    assert not any(a["kind"] == "compartment" and a["name"] != "source-0" for a in saw)
    events = cli_json("catalog", "events", "--store", cli_store, "--limit", "100")
    assert {"ingest", "plan", "artifact", "train"} <= {e["kind"] for e in events}
    assert cli_json("catalog", "verify", "--store", cli_store)["ok"] is True
    for command in ("sources", "compartments", "artifacts", "events", "verify"):  # the tables print too
        assert cli("catalog", command, "--store", cli_store).stdout.strip()


def test_verify_fails_after_tampering(tmp_path):
    store = tmp_path / "s"
    cli("data", "ingest", "--store", store, "--limit", "20")
    Store(store, create=False).catalog.db.execute("UPDATE events SET kind = 'forged' WHERE seq = 1")
    result = cli("catalog", "verify", "--store", store, "--json", code=1)
    assert json.loads(result.stdout) == {"ok": False, "head": "event 1 does not chain"}


def test_help_on_every_command():
    commands = [[], ["data"], ["data", "ingest"], ["train"], ["train", "compartments"], ["train", "paragon"],
                ["train", "router"], ["sample"], ["quality"], ["demo"], ["catalog"]]
    commands += [["catalog", c] for c in ("sources", "compartments", "artifacts", "lineage", "saw", "events", "verify")]
    for args in commands:
        assert "Usage" in cli(*args, "--help").stdout


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["sample", "--labels", "one,two"], ["bad labels 'one,two'"]),
        (["sample", "--labels", "12"], ["label 12 is outside 0..9"]),
        (["sample", "--allowed", "source-0,nope"], ["not a trained compartment: nope"]),
        (["sample", "--router", "oracle"], ["unknown router 'oracle'"]),
        (["sample", "--steps", "0"], ["steps must be in 1..1000, got 0"]),
        (["sample", "--sampler", "euler"], ["unknown sampler 'euler'"]),
        (["sample", "--model", "paragon", "--allowed", "source-0"], ["--allowed only applies"]),
        (["sample", "--gate", "1"], ["gate must be in [0, 1)"]),
        (["quality", "--router", "oracle"], ["unknown router"]),
        (["catalog", "lineage", "0123456789ab"], ["no artifact '0123456789ab'"]),
        (["catalog", "saw", "not-a-sample"], ["unknown sample id 'not-a-sample'"]),
        (["train", "compartments", "--only", "nope", "--epochs", "1"], ["unknown compartment(s): nope"]),
        (["train", "compartments", "--epochs", "0"], ["epochs must be ≥ 1"]),
        (["train", "compartments", "--backend", "threads", "--epochs", "1"], ["unknown backend 'threads'"]),
    ],
)
def test_bad_input_is_one_error_line(cli_store, tmp_path, args, fragments):
    before = Store(cli_store, create=False).catalog.verify_chain()[1]
    out = ["--out", str(tmp_path / "o")] if args[0] == "sample" else []
    result = runner.invoke(app, [*args, "--store", str(cli_store), *out])
    assert_one_line_error(result, *fragments)
    assert Store(cli_store, create=False).catalog.verify_chain()[1] == before  # nothing was recorded


def test_missing_store_is_one_error_line(tmp_path):
    for args in (["catalog", "sources"], ["sample", "--out", str(tmp_path / "o")], ["train", "router"]):
        result = runner.invoke(app, [*args, "--store", str(tmp_path / "nowhere")])
        assert_one_line_error(result, "nowhere", "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_unknown_dataset_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["data", "ingest", "--store", str(tmp_path / "s"), "--dataset", "mnist"])
    assert_one_line_error(result, "unknown dataset 'mnist'")
    assert not (tmp_path / "s").exists()


def test_ingest_of_bad_files_registers_nothing(tmp_path):
    images = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 4])  # 9 images of 4×4: 144 bytes promised
    images.write_bytes(gzip.compress(header + bytes(50)))
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + bytes(9))
    store = tmp_path / "s"
    cli("data", "ingest", "--store", store, "--limit", "10")  # an existing store with data
    before = Store(store, create=False).catalog.sample_rows()
    result = runner.invoke(app, ["data", "ingest", "--store", str(store), "--dataset", "idx",
                                 "--path", f"{images},{labels}"])
    assert_one_line_error(result, str(images), "truncated")
    assert Store(store, create=False).catalog.sample_rows() == before
    folder = tmp_path / "folder" / "alice" / "x"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"junk")
    result = runner.invoke(app, ["data", "ingest", "--store", str(tmp_path / "s2"), "--dataset", "folder", "--path",
                                 str(tmp_path / "folder")])
    assert_one_line_error(result, "a.png")
    assert not (tmp_path / "s2").exists()
