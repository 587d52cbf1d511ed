"""Early stopping on held-out samples: a stable split, a run that stops and keeps its best EMA, and a full
fine-tune from a base that records where it stopped while its lineage keeps the held-out samples."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.training import TrainConfig, new_state, train
from silodiff.training.early_stop import EarlyStopping, split_validation


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
