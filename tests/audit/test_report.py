"""The audit report end to end on a tiny store: files, member split from the catalog, CLI, demo step."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from silodiff.audit.membership import membership_split, served_model
from silodiff.audit.report import run_audit
from silodiff.cli.main import app
from silodiff.data import load_digits
from silodiff.demo import QUICK
from silodiff.demo.audit import demo_step
from silodiff.errors import SilodiffError
from silodiff.jobs import plan_compartments, train_compartments, train_paragon
from silodiff.store import Store
from silodiff.training import TrainConfig

FAST = dict(n=40, steps=10, mia_n=30, progress=False)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, single_thread):
    """60 digits, two sources → two compartments and the paragon, briefly trained; no router."""
    store = Store(tmp_path_factory.mktemp("audit") / "store")
    store.ingest(load_digits("random:2", limit=60), "digits")
    plan_compartments(store, by="source", slices=1)
    with single_thread():
        config = TrainConfig(epochs=20, batch_size=32)
        train_compartments(store, config=config, progress=False)
        train_paragon(store, config=config, progress=False)
    return store


def test_members_and_nonmembers_come_from_the_catalog(tiny_store):
    paragon = served_model(tiny_store, "paragon")
    assert set(paragon.lineage) == {r["sample_id"] for r in tiny_store.catalog.sample_rows()}
    with pytest.raises(SilodiffError, match="no non-members"):
        membership_split(tiny_store, paragon)  # the paragon saw every live sample
    members, nonmembers, info = membership_split(tiny_store, paragon, load_digits("single", limit=100), n=25)
    assert len(members) == len(nonmembers) == info["n_per_side"] == 25
    assert info["holdout_dropped_as_members"] == 60  # the first 60 digits are the ingested ones
    assert set(members.sample_ids) <= set(paragon.lineage)
    assert not set(nonmembers.sample_ids) & set(paragon.lineage)
    # one compartment: the other compartment's live samples are its non-members, no holdout needed
    name = tiny_store.catalog.compartments()[0]["name"]
    single = served_model(tiny_store, name)
    m, nm, info = membership_split(tiny_store, single, n=1000)
    assert info["nonmembers_in_store"] == 60 - len(single.lineage) and not set(nm.sample_ids) & set(single.lineage)


def test_run_audit_writes_a_complete_report(tiny_store, tmp_path):
    report = run_audit(tiny_store, tmp_path / "a", "composed", router="trajectory", holdout=load_digits("single", limit=120),
                       **FAST)
    folder = report.parent
    for name in ("report.md", "report.json", "details.json", "samples.png", "memorised.png", "ratio-hist.png", "roc.png"):
        assert (folder / name).stat().st_size > 0, name
    summary = json.loads((folder / "report.json").read_text())
    served = served_model(tiny_store, "composed", router="trajectory")
    assert set(summary["artifacts"].values()) == set(served.artifacts.values())
    assert summary["training_images"] == 60 and summary["membership_split"]["n_per_side"] == 30
    assert set(summary["membership"]) == {"loss", "pia", "secmi"}
    for result in summary["membership"].values():
        assert 0 <= result["auc"] <= 1 and str(result["best_t"]) in result["per_t"]
    details = json.loads((folder / "details.json").read_text())
    lineage = set(served.lineage)
    assert len(details["generated"]) == 40 and all(g["nn_sample_id"] in lineage for g in details["generated"])
    scores = details["membership_scores"]["loss"]
    assert set(scores["members"]) <= lineage and not set(scores["nonmembers"]) & lineage
    text = report.read_text()
    assert "## Memorisation" in text and "## Membership inference" in text and "![roc](roc.png)" in text


def test_without_non_members_the_report_says_why(tiny_store, tmp_path):
    report = run_audit(tiny_store, tmp_path / "p", "paragon", attacks=("loss",), **FAST)
    summary = json.loads((report.parent / "report.json").read_text())
    assert summary["membership"] == {} and "no non-members" in summary["membership_split"]["skipped"]
    assert "Skipped: no non-members" in report.read_text() and not (report.parent / "roc.png").exists()
    assert summary["memorisation"]["n"] == 40  # memorisation is still audited


def test_cli_audit_and_its_errors(tiny_store, tmp_path):
    runner = CliRunner()
    args = ["audit", "--store", str(tiny_store.root), "--out", str(tmp_path / "cli"), "--n", "20", "--steps", "5",
            "--mia-n", "10", "--attacks", "loss", "--json"]
    result = runner.invoke(app, args + ["--model", "paragon", "--holdout", "digits"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["results"]["loss_auc"] is not None and (tmp_path / "cli" / "report.md").exists()
    bad = runner.invoke(app, args + ["--model", "paragon", "--attacks", "nope"])
    assert bad.exit_code == 2 and "error: unknown attack" in bad.output
    missing = runner.invoke(app, args + ["--model", "no-such-model"])
    assert missing.exit_code == 2 and "error:" in missing.output


def test_demo_step_returns_markdown_with_pictures(tiny_store, tmp_path):
    text = demo_step(tiny_store, tmp_path, QUICK)
    first = tiny_store.catalog.compartments()[0]["name"]
    assert text.startswith("## Audit") and "| paragon |" in text and "| composed |" in text and f"| {first} |" in text
    assert text.count("roc.png") == 3  # non-members: the digits this tiny store never ingested
    assert (tmp_path / "audit" / "paragon" / "memorised.png").exists()
    assert (tmp_path / "audit" / "composed" / "report.md").exists()
