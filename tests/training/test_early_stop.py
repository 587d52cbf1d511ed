"""Early stopping on held-out samples: a stable split, a run that stops and keeps its best EMA, and a full
fine-tune from a base that records where it stopped while its lineage keeps the held-out samples."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.training import TrainConfig, new_state, train
from silodiff.training.early_stop import (DRAWS, EVAL_SHARE, EVALUATIONS, MIN_EVALUATIONS, EarlyStopping, auto_every,
                                          draws, split_validation)


def test_the_split_is_stable_when_another_sample_goes():
    ids = [f"s{i:03d}" for i in range(200)]
    fit, held = split_validation(ids, 0.1, seed=3)
    assert set(fit) | set(held) == set(ids) and not set(fit) & set(held)
    assert 8 <= len(held) <= 35  # about a tenth
    # forgetting one sample moves no other across the split
    gone = held[0]
    fit2, held2 = split_validation([s for s in ids if s != gone], 0.1, seed=3)
    assert set(held2) == set(held) - {gone} and set(fit2) == set(fit)
    assert split_validation(ids, 0.1, seed=4)[1] != held  # the seed decides
    assert split_validation(ids[:2], 0.9, seed=0)[0] and split_validation(ids[:2], 0.01, seed=0)[1]  # one each side
    assert split_validation(ids, 0.0, seed=0) == (ids, [])


def test_a_run_stops_when_held_out_loss_stalls_and_keeps_the_best_ema(digits32, tiny_mlp):
    config = TrainConfig(epochs=1, batch_size=8, lr=5e-2, ema_decay=0.5)
    data, val = digits32.subset(digits32.sample_ids[:24]), digits32.subset(digits32.sample_ids[24:])
    state = new_state(tiny_mlp, config)
    stopper = EarlyStopping(val, every=5, patience=2, seed=0)
    train(state, data, config, steps=2000, hooks=[stopper], progress=False)
    stopper.finish(state)
    report = stopper.report()
    assert report["stopped_early"] and state.step == report["stop_step"] < 2000
    assert report["best_step"] < report["stop_step"]
    # the EMA put back is the best one: its held-out loss is the best recorded, below the last evaluation's
    assert stopper.loss(state.ema.model) == pytest.approx(report["val_loss"], abs=1e-5)
    assert report["val_loss"] < report["history"][-1][1]


def test_the_automatic_schedule_bounds_what_evaluations_cost():
    """40 evaluations where they are cheap; fewer where they would cost over a tenth of the training (a step is
    about 3 forward passes per sample), never fewer than 10."""
    assert draws(14) == 14 * 74 and draws(2000) == 2000 and draws(1) == DRAWS
    assert auto_every(100_000, 64, 100) == 100_000 // EVALUATIONS  # a long run: the 40 evaluations are cheap
    for budget, batch, n_val in [(562, 64, 14), (2_000, 32, 100), (5_000, 16, 300)]:
        every = auto_every(budget, batch, n_val)
        evaluations = budget // every
        assert MIN_EVALUATIONS <= evaluations < EVALUATIONS
        # within one step's slack
        assert evaluations * draws(n_val) <= EVAL_SHARE * 3 * batch * budget + every * 3 * batch
    assert auto_every(30, 32, 22) == 3  # a 30-step fine-tune: 10 evaluations, not 40 (nor one every step)
    assert auto_every(5, 8, 4) == 1


def test_a_job_without_val_every_evaluates_on_the_automatic_schedule(tmp_store, tiny_model_config):
    from silodiff.jobs import train_paragon

    config = TrainConfig(epochs=40, batch_size=8, val_fraction=0.25, patience=1000)  # never stops: count them
    result = train_paragon(tmp_store, config=config, model=tiny_model_config, slices=1, progress=False)
    stop = tmp_store.artifacts.get(result.artifacts[-1])[1]["info"]["early_stop"]
    assert stop["every"] == auto_every(result.steps, 8, stop["val_n"])
    assert len(stop["history"]) == pytest.approx(result.steps // stop["every"], abs=1)


def test_a_bad_early_stopping_setting_is_refused():
    with pytest.raises(SilodiffError, match="val_fraction"):
        TrainConfig(val_fraction=1.0).check()
    with pytest.raises(SilodiffError, match="patience"):
        TrainConfig(patience=0).check()


def test_a_full_fine_tune_from_a_base_stops_early_and_records_it(tmp_store, tiny_model_config):
    from silodiff.jobs import plan_compartments, train_base, train_compartments

    train_base(tmp_store, ["source-0"], config=TrainConfig(epochs=2, batch_size=16), model=tiny_model_config,
               progress=False)
    plan_compartments(tmp_store, by="source", slices=1)
    config = TrainConfig(epochs=400, batch_size=8, lr=2e-2, val_every=4, patience=2)
    (result,) = train_compartments(tmp_store, ["source-1"], config=config, from_base=True, progress=False)
    (final,) = tmp_store.catalog.artifacts("compartment", name="source-1")
    info = tmp_store.artifacts.get(final["hash"])[1]["info"]
    stop = info["early_stop"]
    own = {r["sample_id"] for r in tmp_store.catalog.sample_rows("source-1")}
    budget = 400 * -(-len(own) // 8)
    assert stop["stopped_early"] and result.steps == stop["stop_step"] < budget  # the default for a full fine-tune
    assert 1 <= stop["val_n"] < len(own)
    assert final["metrics"]["best_step"] == stop["best_step"]
    assert own <= set(tmp_store.catalog.lineage(final["hash"]))  # held-out samples stay in the lineage
    # LoRA adapters and models from scratch do not hold anything out unless asked
    plan_compartments(tmp_store, by="source", slices=1)
    (scratch,) = train_compartments(tmp_store, ["source-1"], config=TrainConfig(epochs=1, batch_size=8), progress=False)
    assert "early_stop" not in tmp_store.artifacts.get(scratch.artifacts[-1])[1]["info"]


def test_early_stopping_works_on_a_streamed_training_set(tmp_store, tiny_model_config, monkeypatch):
    """A job whose samples are streamed from the store's chunks holds out and evaluates the same way."""
    import silodiff.data.chunked as chunked
    from silodiff.jobs import train_paragon

    monkeypatch.setattr(chunked, "IN_MEMORY_BYTES", 0)  # every training set streams
    assert isinstance(tmp_store.training_set(), chunked.ChunkedSamples)
    config = TrainConfig(epochs=200, batch_size=8, lr=2e-2, val_fraction=0.25, val_every=4, patience=2)
    result = train_paragon(tmp_store, config=config, model=tiny_model_config, slices=1, progress=False)
    stop = tmp_store.artifacts.get(result.artifacts[-1])[1]["info"]["early_stop"]
    assert stop["stopped_early"] and result.steps == stop["stop_step"] and stop["val_n"] >= 1
