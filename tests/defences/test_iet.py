"""Iterative ensemble training: class-balanced shards, size-weighted averaging (EMA separate), one
non-compartmentalised artifact, fine-tune mode."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from silodiff.config import build
from silodiff.composition import load_denoiser
from silodiff.defences import average_weights, class_balanced_shards, iet_round, skip_counts, train_iet
from silodiff.errors import SilodiffError
from silodiff.sampling import generate
from silodiff.training import TrainConfig, new_state

from defences_helpers import tiny_model


def test_class_balanced_shards_partition_the_data():
    ids = [f"id{i:03d}" for i in range(103)]
    labels = [i % 7 for i in range(103)]
    shards = class_balanced_shards(ids, labels, 4, seed=1)
    assert sorted(s for sh in shards for s in sh) == sorted(ids)
    by_id = dict(zip(ids, labels))
    for y in range(7):
        counts = [Counter(by_id[s] for s in sh)[y] for sh in shards]
        assert max(counts) - min(counts) <= 1
    assert class_balanced_shards(ids, labels, 4, seed=1) == shards
    with pytest.raises(SilodiffError, match="shards"):
        class_balanced_shards(ids[:3], labels[:3], 4)


def test_average_weights_is_weighted_by_size_and_keeps_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([5.0, 6.0]), "n": torch.tensor(7)}
    out = average_weights([a, b], [1, 3])
    assert torch.allclose(out["w"], 0.25 * a["w"] + 0.75 * b["w"])
    assert out["n"].item() == 3


def test_round_averages_raw_and_ema_separately_by_shard_size(digits32):
    config = TrainConfig(epochs=1, batch_size=8, ema_decay=0.9)
    parts = [digits32.sample_ids[:8], digits32.sample_ids[8:]]  # sizes 8 and 24
    subsets = [digits32.subset(p) for p in parts]
    torch.manual_seed(0)
    start = build(tiny_model()).state_dict()
    states = [new_state(build(tiny_model()), config) for _ in parts]
    raw, ema = iet_round(states, subsets, [config, config], start, start, local_epochs=2)
    for key in ("inp.weight", "out.2.bias"):
        want_raw = (8 * states[0].model.state_dict()[key] + 24 * states[1].model.state_dict()[key]) / 32
        want_ema = (8 * states[0].ema.model.state_dict()[key] + 24 * states[1].ema.model.state_dict()[key]) / 32
        assert torch.allclose(raw[key], want_raw, atol=1e-6)
        assert torch.allclose(ema[key], want_ema, atol=1e-6)
        assert not torch.allclose(raw[key], ema[key])  # EMA is kept apart, not overwritten by raw
        assert not torch.allclose(raw[key], start[key])
    # the next round starts every shard from the global weights; the optimizer state survives
    steps = [len(s.optimizer.state) for s in states]
    iet_round(states, subsets, [config, config], raw, ema, local_epochs=0.01)
    assert steps == [len(s.optimizer.state) for s in states] and steps[0] > 0


def test_train_iet_agc_registers_one_artifact_over_all_shards(defence_store):
    store = defence_store
    summary = train_iet(store, shards=2, rounds=2, local_epochs=1, agc={"lam": 2.0, "decay": 0.8},
                        config=TrainConfig(batch_size=16), model=tiny_model(), progress=False)
    row = store.catalog.artifact(summary["artifact"])
    assert row["kind"] == "iet-agc" and row["compartment"] is None
    assert row["metrics"]["compartmentalised"] is False and row["metrics"]["shards"] == 2
    all_ids = [r["sample_id"] for r in store.catalog.sample_rows()]
    assert sorted(store.catalog.lineage(row["hash"])) == sorted(all_ids)
    model = load_denoiser(store, row["hash"])
    assert set(skip_counts(model.info["hooks"]["agc"])) == set(all_ids)
    images, _ = generate(model, 4, labels=[0, 1, 2, 3], steps=5)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()


def test_fine_tune_keeps_the_start_lineage_and_weights(defence_store):
    store = defence_store
    paragon = store.active("paragon", "paragon")[-1]["hash"]
    source = store.source_names()[0]
    ids = [r["sample_id"] for r in store.catalog.sample_rows(source)]
    summary = train_iet(store, shards=2, rounds=1, local_epochs=0.01, agc=None, init=paragon[:12], ids=ids,
                        config=TrainConfig(batch_size=16, lr=1e-9), progress=False, name="iet-ft")
    row = store.catalog.artifact(summary["artifact"])
    assert row["kind"] == "iet" and row["name"] == "iet-ft"
    assert set(store.catalog.lineage(row["hash"])) == set(store.catalog.lineage(paragon)) | set(ids)
    tuned, _ = store.artifacts.get(row["hash"])
    start, _ = store.artifacts.get(paragon)
    raw = [k for k in start if k.startswith("train/raw.")]
    assert raw and all(torch.allclose(tuned[k], start[k], atol=1e-5) for k in raw)  # lr ≈ 0: the raw start weights come through


def test_bad_options_are_loud(defence_store):
    with pytest.raises(SilodiffError, match="rounds"):
        train_iet(defence_store, rounds=0, model=tiny_model(), progress=False)


def test_train_iet_agc_from_the_cli(defence_store):
    """``train iet-agc`` trains IET-AGC, ``--no-agc`` plain IET; a bad option exits 2."""
    from typer.testing import CliRunner

    from silodiff.cli.main import app

    runner = CliRunner()
    common = ["--store", str(defence_store.root), "--shards", "2", "--rounds", "1", "--epochs", "0.5", "--json"]
    kinds = {}
    for extra in ([], ["--no-agc"], ["--name", "named"]):
        r = runner.invoke(app, ["train", "iet-agc", *extra, *common])
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        kinds[out["name"]] = out["kind"]
    assert kinds == {"iet-agc": "iet-agc", "iet": "iet", "named": "iet-agc"}
    r = runner.invoke(app, ["train", "iet-agc", *common[:2], "--shards", "bogus", *common[4:]])
    assert r.exit_code == 2 and "--shards" in r.output
