"""plan_forget: the first affected slice, every hit artifact (all kinds), the SISA cost estimate, no side effects."""

from __future__ import annotations

import pytest
from unlearning_helpers import pick

from silodiff.errors import SilodiffError
from silodiff.jobs import SliceJob, stage_steps
from silodiff.store.external import artifact_info
from silodiff.training import TrainConfig
from silodiff.unlearning import forget, plan_forget


def test_plan_lists_slices_artifacts_and_cost(fstore):
    sid = pick(fstore, "source-1", 1)
    events = len(fstore.catalog.events())
    plan = plan_forget(fstore, [sid])
    assert len(fstore.catalog.events()) == events  # planning changes nothing
    (comp,) = plan["compartments"]
    assert (comp["name"], comp["first_slice"], comp["removed"], comp["action"]) == ("source-1", 1, 1, "retrain")
    assert sid not in {s for sl in comp["slices"] for s in sl}
    # every artifact that saw it: compartment slice 1 only (slice 0 did not), router, FLD net, some paragon slice
    hit = {(a["kind"], a["slice"]): a["action"] for a in plan["artifacts"]}
    assert hit[("compartment", 1)] == "replace" and ("compartment", 0) not in hit
    assert hit[("router", None)] == "retrain" and hit[("feature-net", None)] == "drop"
    assert any(k == "paragon" and v == "drop" for (k, _), v in hit.items())
    # cost: stage 1 of 2 over the new slices, recomputed here from the recorded training config
    final = fstore.catalog.artifacts("compartment", name="source-1")[-1]
    train = artifact_info(fstore, final["hash"])["train"]
    steps = stage_steps(SliceJob("", "compartment", "source-1", comp["slices"], {}, train), TrainConfig(**train))
    assert comp["cost_fraction"] == pytest.approx(steps[1] / sum(steps), abs=1e-4)
    assert plan["estimate"]["compartment_steps"] == steps[1]


def test_plan_whole_source_drops_its_compartment(fstore):
    plan = plan_forget(fstore, sources=["source-2"])
    (comp,) = plan["compartments"]
    assert comp["action"] == "drop" and comp["remaining"] == 0
    assert plan["sources_forgotten"] == ["source-2"]
    assert plan["router"]["compartments"] == ["source-0", "source-1"]


def test_unknown_ids_and_empty_requests_are_errors(fstore):
    with pytest.raises(SilodiffError, match="unknown sample id"):
        forget(fstore, sample_ids=["0" * 64])
    with pytest.raises(SilodiffError, match="unknown source"):
        forget(fstore, sources=["nobody"])
    with pytest.raises(SilodiffError, match="nothing to forget"):
        plan_forget(fstore)


def test_dry_run_returns_the_plan_and_changes_nothing(fstore):
    sid = pick(fstore, "source-0", 0)
    before = {a["hash"] for a in fstore.catalog.artifacts(None, active=True)}
    plan = forget(fstore, sample_ids=[sid], dry_run=True)
    assert plan["forget_ids"] == [sid] and plan["compartments"][0]["first_slice"] == 0
    assert {a["hash"] for a in fstore.catalog.artifacts(None, active=True)} == before
    assert fstore.catalog.sample(sid)["forgotten_at"] is None


def test_a_dry_run_of_every_source_at_once_plans_dropping_everything(fstore):
    sources = fstore.source_names()
    plan = plan_forget(fstore, sources=sources)  # once failed: "cannot split 0 samples into 1 slices"
    assert sorted(plan["sources_forgotten"]) == sorted(sources)
    assert {c["action"] for c in plan["compartments"]} == {"drop"}
    assert plan["estimate"]["paragon_steps"] == 0 and plan["estimate"]["speedup_vs_paragon"] is None
