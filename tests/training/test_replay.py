"""Replay: a fixed share of every batch from a base's samples (``TrainConfig.replay``), the steps unchanged."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.nn import MLPDenoiser
from silodiff.training import TrainConfig, new_state, train
from silodiff.training.loop import replay_batches


def _fresh() -> MLPDenoiser:
    torch.manual_seed(0)
    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=32, depth=1)


@pytest.fixture
def halves(digits32):
    """(own, base): two disjoint halves of the 32 digits."""
    ids = digits32.sample_ids
    return digits32.subset(ids[:20]), digits32.subset(ids[20:])


def test_every_batch_holds_the_replay_share_and_the_own_rows_cycle_through_epochs(halves):
    own, base = halves
    config = TrainConfig(batch_size=8, replay=0.25, seed=3)
    batches = replay_batches(own, base, config, torch.Generator().manual_seed(3), torch.device("cpu"))
    seen_own = []
    for _ in range(8):  # own rows 6, 6, 6, 2 per epoch of 20 (an epoch's last batch is short, as without replay)
        pixels, labels, rows = next(batches)
        assert int((rows >= len(own)).sum()) == 2 and len(rows) <= 8  # round(0.25 · 8) replayed rows (12 = 6 × 2)
        replayed = rows[rows >= len(own)] - len(own)
        torch.testing.assert_close(pixels[rows >= len(own)], base.pixels[replayed], rtol=0, atol=0)
        torch.testing.assert_close(labels[rows >= len(own)], base.labels[replayed], rtol=0, atol=0)
        seen_own += rows[rows < len(own)].tolist()
    assert sorted(seen_own[:20]) == list(range(20)) and sorted(seen_own[20:40]) == list(range(20))


def test_a_tiny_share_still_replays_one_row_and_a_large_one_keeps_one_own_row(halves):
    own, base = halves
    for share, expect in ((0.01, 1), (0.99, 7)):
        config = TrainConfig(batch_size=8, replay=share)
        _, _, rows = next(replay_batches(own, base, config, torch.Generator().manual_seed(0), torch.device("cpu")))
        assert int((rows >= len(own)).sum()) == expect


def test_hooks_see_the_replayed_ids_and_the_steps_are_counted_on_the_own_samples(halves):
    own, base = halves
    seen = []

    class Record:
        def on_batch(self, batch):
            seen.append(batch["ids"])

    config = TrainConfig(epochs=2, batch_size=8, replay=0.5, seed=1)  # 4 own + 4 replayed rows: 20 and 12 divide
    state = train(new_state(_fresh(), config), own, config, hooks=[Record()], progress=False, replay=base)
    assert state.step == 5 == len(seen)  # ⌈2 epochs · 20 own samples / batch 8⌉, as without replay
    for ids in seen:
        assert len(ids) == 8 and sum(i in set(base.sample_ids) for i in ids) == 4
        assert set(ids) <= set(own.sample_ids) | set(base.sample_ids)


def test_replay_changes_the_run_and_is_refused_without_samples_to_replay(halves):
    own, base = halves
    plain_config, config = TrainConfig(epochs=1, batch_size=8, seed=2), TrainConfig(epochs=1, batch_size=8, seed=2,
                                                                                     replay=0.5)
    plain = train(new_state(_fresh(), plain_config), own, plain_config, progress=False, replay=base)  # share 0: unused
    alone = train(new_state(_fresh(), plain_config), own, plain_config, progress=False)
    mixed = train(new_state(_fresh(), config), own, config, progress=False, replay=base)
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(v, alone.model.state_dict()[k], rtol=0, atol=0)
    assert any(not torch.equal(v, mixed.model.state_dict()[k]) for k, v in plain.model.state_dict().items())
    with pytest.raises(SilodiffError, match="needs the base's samples"):
        train(new_state(_fresh(), config), own, config, progress=False)
    with pytest.raises(SilodiffError, match=r"replay must be in \[0, 1\)"):
        TrainConfig(replay=1.0).check()
    assert "replay" not in TrainConfig().recipe_dict() and TrainConfig(replay=0.5).recipe_dict()["replay"] == 0.5
