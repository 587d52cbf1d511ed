"""The demo's plans: the short default still shows every promise, ``--full`` keeps the longer run, and the CLI
picks them."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

import silodiff.demo
from silodiff.cli.main import app
from silodiff.demo import FULL, QUICK, SHORT, demo_plan
from silodiff.errors import SilodiffError


def test_the_default_and_full_are_different_plans():
    assert demo_plan() is SHORT and demo_plan(full=True) is FULL and demo_plan(quick=True) is QUICK
    assert SHORT != FULL
    with pytest.raises(SilodiffError, match="do not combine"):
        demo_plan(quick=True, full=True)


def test_full_is_the_run_the_demo_made_before_it_had_a_short_default():
    assert (FULL.epochs, FULL.router_epochs, FULL.fld_epochs, FULL.n_eval, FULL.steps) == (200, 25, 30, 500, 50)
    assert FULL.routers == ("classifier", "trajectory", "uniform")
    assert FULL.lora_rows == ("classifier", "uniform", "soup")
    assert FULL.defences.models == ("baseline", "agc", "iet-agc", "cpsample")
    assert (FULL.defences.n, FULL.defences.epochs, FULL.defences.n_gen) == (24, 700, 300)
    assert FULL.audit == dataclasses.replace(FULL.audit, n=1000, steps=100, mia_n=500,
                                             models=("paragon", "composed", "compartment"))
    assert FULL.forgetting.requests == ("sample", "source") and FULL.forgetting.steps == 100


def test_the_short_plan_still_shows_each_promise_once():
    # composition against the paragon, routed against uniform (with and without labels), base + LoRA
    assert {"classifier", "uniform"} <= set(SHORT.routers) and SHORT.lora_rows
    assert {"composed/classifier", "composed/uniform"} <= set(SHORT.unconditional)
    # one defence beside its baseline, one audit, one forget (its certificate is verified by the step)
    assert SHORT.defences.models[0] == "baseline" and len(SHORT.defences.models) >= 2
    assert SHORT.audit.models and SHORT.forgetting.requests
    # and it is smaller than the full run wherever time goes
    assert SHORT.epochs < FULL.epochs and SHORT.n_eval < FULL.n_eval and SHORT.audit.n < FULL.audit.n
    assert SHORT.router_epochs < FULL.router_epochs and SHORT.defences.n_gen < FULL.defences.n_gen
    assert set(SHORT.features) <= set(FULL.features) and set(SHORT.defences.models) < set(FULL.defences.models)


@pytest.mark.parametrize(("args", "plan"), [([], SHORT), (["--full"], FULL), (["--quick"], QUICK)])
def test_the_cli_runs_the_plan_its_options_name(args, plan, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(silodiff.demo, "run_demo", lambda out, plan, **kw: seen.append(plan) or tmp_path / "report.md")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 0, result.output
    assert seen == [plan]


def test_quick_and_full_together_are_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "out"), "--quick", "--full"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --quick and --full do not combine: pick one"]
