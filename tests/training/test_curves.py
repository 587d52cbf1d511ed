"""Training curves to TensorBoard (``TrainConfig.log_dir``): the scalars written, read back with TensorBoard's own
reader; a run that logs learns the same weights; the option is no part of a recipe; without TensorBoard one line."""

from __future__ import annotations

import sys

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.training import TrainConfig, new_state, train
from silodiff.training.early_stop import EarlyStopping

pytest.importorskip("tensorboard")


def scalars(folder) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def test_a_run_writes_loss_lr_speed_and_held_out_loss(digits32, tiny_mlp, tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, lr=3e-3, log_dir=str(tmp_path / "tb"))
    data, val = digits32.subset(digits32.sample_ids[:24]), digits32.subset(digits32.sample_ids[24:])
    state = new_state(tiny_mlp, config)
    stopper = EarlyStopping(val, every=3, patience=100, seed=0)
    train(state, data, config, steps=12, hooks=[stopper], progress=False, name="source-0")
    got = scalars(tmp_path / "tb" / "source-0")
    assert set(got) == {"train/loss", "train/lr", "train/images_per_s", "val/loss"}
    for tag in ("train/loss", "train/lr", "train/images_per_s"):
        assert [e.step for e in got[tag]] == list(range(1, 13)), tag
    assert all(e.value == pytest.approx(3e-3) for e in got["train/lr"])
    assert all(e.value > 0 for e in got["train/images_per_s"]) and all(e.value > 0 for e in got["train/loss"])
    assert [(e.step, round(e.value, 5)) for e in got["val/loss"]] == [(s, round(v, 5)) for s, v in stopper.history]
    assert len(got["val/loss"]) == 4  # steps 3, 6, 9, 12

    # a second stage of the same job goes on in the same run folder, at the steps after the first
    train(state, data, config, steps=3, hooks=[], progress="stage 2", name="source-0")
    assert [e.step for e in scalars(tmp_path / "tb" / "source-0")["train/loss"]] == list(range(1, 16))


def test_the_loss_written_is_the_mean_per_sample_loss_of_the_step(digits32, tiny_mlp, tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, grad_accum=2, log_dir=str(tmp_path))
    seen = []

    class Record:
        def on_batch(self, batch):
            seen.append(batch["loss"].detach().clone())

    train(new_state(tiny_mlp, config), digits32, config, steps=2, hooks=[Record()], progress=False)
    written = [e.value for e in scalars(tmp_path / "train")["train/loss"]]
    want = [float(torch.cat(seen[0:2]).mean()), float(torch.cat(seen[2:4]).mean())]
    assert written == pytest.approx(want, rel=1e-5)


def test_logging_changes_no_weight(digits32, tmp_path):
    from silodiff.nn import MLPDenoiser

    weights = []
    for log_dir in (None, str(tmp_path)):
        torch.manual_seed(0)
        config = TrainConfig(epochs=2, batch_size=8, log_dir=log_dir)
        state = train(new_state(MLPDenoiser(hidden=16, depth=1), config), digits32, config, progress=False)
        weights.append(state.ema.model.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_log_dir_is_no_part_of_the_recipe_and_absent_from_configs_when_unset(tmp_path):
    from silodiff.jobs.slices import SliceJob, recipe

    plain, logged = TrainConfig(epochs=3), TrainConfig(epochs=3, log_dir=str(tmp_path))
    assert plain.recipe_dict() == logged.recipe_dict() and "log_dir" not in plain.recipe_dict()
    jobs = [SliceJob(str(tmp_path), "compartment", "c", [["a"]], {"kind": "mlp-denoiser"}, c.to_dict())
            for c in (plain, logged)]
    assert recipe(jobs[0]) == recipe(jobs[1])
    # the config recorded beside every artifact (and hashed with it) is what it was before the option existed
    assert "log_dir" not in plain.to_dict() and logged.to_dict()["log_dir"] == str(tmp_path)
    assert TrainConfig(**logged.to_dict()) == logged and TrainConfig(**plain.to_dict()) == plain


def test_a_training_job_writes_its_curves_under_its_name(tmp_store, tiny_model_config, tmp_path):
    from silodiff.jobs import plan_compartments, train_compartments

    plan_compartments(tmp_store, by="source", slices=2)
    config = TrainConfig(epochs=2, batch_size=8, log_dir=str(tmp_path / "tb"))
    results = train_compartments(tmp_store, config=config, model=tiny_model_config, progress=False)
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["source-0", "source-1"]
    for result in results:
        assert len(scalars(tmp_path / "tb" / result.name)["train/loss"]) == result.steps


def test_a_forget_retrain_writes_no_curves_into_the_original_runs_folder(tmp_store, tiny_model_config, tmp_path):
    from silodiff import forget
    from silodiff.jobs import plan_compartments, train_compartments

    plan_compartments(tmp_store, by="source", slices=2)
    tb = tmp_path / "tb"
    train_compartments(tmp_store, config=TrainConfig(epochs=1, batch_size=8, log_dir=str(tb)), model=tiny_model_config,
                       progress=False)
    before = {f: f.stat().st_size for f in tb.rglob("*") if f.is_file()}
    sid = tmp_store.catalog.sample_rows("source-0")[0]["sample_id"]
    forget(tmp_store, sample_ids=[sid], progress=False)  # retrains source-0 from its first slice
    assert {f: f.stat().st_size for f in tb.rglob("*") if f.is_file()} == before


def test_without_tensorboard_log_dir_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "tensorboard" else object())
    with pytest.raises(SilodiffError) as caught:
        TrainConfig(log_dir=str(tmp_path)).check()
    assert str(caught.value) == "log_dir needs TensorBoard, which is not installed: pip install 'silodiff[tb]'"
    TrainConfig().check()  # no log_dir, no TensorBoard needed


def test_the_command_line_writes_curves_with_log_dir(tmp_path):
    from typer.testing import CliRunner

    from silodiff.cli.main import app

    store, tb = str(tmp_path / "st"), tmp_path / "tb"
    run = CliRunner().invoke
    assert run(app, ["data", "ingest", "--store", store, "--assign", "random:2", "--limit", "40"]).exit_code == 0
    r = run(app, ["train", "compartments", "--store", store, "--epochs", "1", "--batch-size", "16",
                  "--log-dir", str(tb), "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tb.iterdir()) == ["source-0", "source-1"]
    assert all(scalars(tb / name)["train/loss"] for name in ("source-0", "source-1"))
