"""CLI: forget (dry run, ids file, JSON), certificate verify (exit 0 / 1), add-source from an image folder, errors."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner
from unlearning_helpers import pick

from silodiff.cli.main import app

runner = CliRunner()


def test_forget_cli_dry_run_then_ids_file_then_verify(fstore, tmp_path):
    ids = [pick(fstore, "source-0", 1), pick(fstore, "source-1", 1)]
    store = str(fstore.root)
    dry = runner.invoke(app, ["forget", "--store", store, "--sample", ids[0], "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)
    assert plan["forget_ids"] == [ids[0]] and plan["compartments"][0]["name"] == "source-0"
    assert fstore.catalog.sample(ids[0])["forgotten_at"] is None
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# to forget\n" + "\n".join(ids) + "\n")
    out = runner.invoke(app, ["forget", "--store", store, "--ids-file", str(ids_file), "--json"])
    assert out.exit_code == 0, out.output
    cert = json.loads(out.output[out.output.index("{"):])
    assert sorted(cert["forgotten"]["sample_ids"]) == sorted(ids)
    path = fstore.root / "certificates" / f"{cert['request_id']}.json"
    ok = runner.invoke(app, ["certificate", "verify", str(path), "--store", store])
    assert ok.exit_code == 0 and "OK" in ok.output
    fstore.catalog.db.execute("UPDATE artifacts SET active = 1 WHERE hash = ?", (cert["old_artifacts"][0]["hash"],))
    bad = runner.invoke(app, ["certificate", "verify", str(path), "--store", store])
    assert bad.exit_code == 1 and "FAILED" in bad.output
    again = runner.invoke(app, ["forget", "--store", store, "--sample", ids[0]])
    assert again.exit_code == 0 and "already forgotten" in again.output


def test_forget_cli_errors_are_one_line(fstore, tmp_path):
    out = runner.invoke(app, ["forget", "--store", str(fstore.root), "--sample", "nope"])
    assert out.exit_code == 2 and out.output.strip().splitlines() == ["error: unknown sample id 'nope'"]
    out = runner.invoke(app, ["certificate", "verify", str(tmp_path / "missing.json"), "--store", str(fstore.root)])
    assert out.exit_code == 2 and out.output.startswith("error: cannot read certificate")


def test_add_source_cli_from_a_folder(fstore, tmp_path):
    rng = np.random.default_rng(0)
    for label in (3, 7):
        folder = tmp_path / "new" / "museum-c" / str(label)
        folder.mkdir(parents=True)
        for k in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{k}.png")
    before = {a["hash"] for a in fstore.catalog.artifacts("compartment")}
    out = runner.invoke(app, ["add-source", "--store", str(fstore.root), "--dataset", "folder",
                              "--path", str(tmp_path / "new"), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output[out.output.index("{"):])
    assert result["sources"] == ["museum-c"] and result["n_samples"] == 12
    assert before <= {a["hash"] for a in fstore.catalog.artifacts("compartment")}
    assert "museum-c" in {c["name"] for c in fstore.catalog.compartments("trained")}


def test_demo_step_forgets_a_sample_and_a_source(fstore, tmp_path):
    from silodiff.demo import QUICK
    from silodiff.demo.forgetting import demo_step

    section = demo_step(fstore, tmp_path, QUICK)
    assert section.startswith("## Forgetting") and section.count("| True |") == 2
    assert len(list(tmp_path.glob("certificate-*.json"))) == 2
    assert (tmp_path / "samples-after-forget.png").exists() and (tmp_path / "forgotten-sample.png").exists()
    assert {c["name"]: c["status"] for c in fstore.catalog.compartments()}["source-2"] == "dropped"
