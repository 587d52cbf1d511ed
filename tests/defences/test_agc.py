"""Anti-gradient control: mask and bank against a direct reference, skip counts, use through jobs."""

from __future__ import annotations

import pytest
import torch

from silodiff.defences import AntiGradientControl, agc_hooks, skip_counts
from silodiff.errors import SilodiffError
from silodiff.jobs import train_paragon
from silodiff.training import TrainConfig, new_state, train
from silodiff.training.hooks import build_hooks

from defences_helpers import tiny_model


def reference(bank: list[float], t: list[int], loss: list[float], lam: float, decay: float) -> tuple[list[bool], list[float]]:
    """The rule as written: mask against the old bank, then one EMA update per sample in batch order."""
    keep = [loss[j] * lam >= bank[t[j]] for j in range(len(t))]
    bank = list(bank)
    for j in range(len(t)):
        bank[t[j]] = decay * bank[t[j]] + (1 - decay) * loss[j]
    return keep, bank


@pytest.mark.parametrize("lam,decay", [(2.0, 0.8), (1.3, 0.5)])
def test_mask_and_bank_match_reference(lam, decay):
    gen = torch.Generator().manual_seed(0)
    hook = AntiGradientControl(lam=lam, decay=decay, num_train_timesteps=12)
    hook.bank_ = torch.rand(12, generator=gen, dtype=torch.float64)
    for _ in range(5):  # several batches, with repeated timesteps inside each
        t = torch.randint(0, 12, (40,), generator=gen)
        loss = torch.rand(40, generator=gen) * 0.6
        want_keep, want_bank = reference(hook.bank_.tolist(), t.tolist(), loss.double().tolist(), lam, decay)
        keep = hook.on_batch({"t": t, "loss": loss})
        assert keep.tolist() == want_keep
        assert torch.allclose(hook.bank_, torch.tensor(want_bank, dtype=torch.float64), atol=1e-12)
    assert 0 < sum(want_keep) < 40  # the test data exercise both branches


def test_bank_starts_at_zero_so_first_samples_are_kept():
    hook = AntiGradientControl(num_train_timesteps=10)
    keep = hook.on_batch({"t": torch.tensor([3, 3, 4]), "loss": torch.tensor([0.5, 0.01, 0.2])})
    assert keep.all()  # M = 0 before any update
    # second 3: M[3] after two sequential updates = 0.2·0.01 + 0.8·0.2·0.5
    assert hook.bank_[3].item() == pytest.approx(0.2 * 0.01 + 0.8 * 0.2 * 0.5)


def test_skip_counts_per_sample_id():
    hook = AntiGradientControl(lam=2.0, decay=0.0, num_train_timesteps=4)  # decay 0: bank = last loss at t
    hook.on_batch({"t": torch.tensor([1]), "loss": torch.tensor([1.0]), "ids": ["a"]})
    keep = hook.on_batch({"t": torch.tensor([1, 1, 2]), "loss": torch.tensor([0.1, 0.9, 0.1]), "ids": ["b", "c", "b"]})
    assert keep.tolist() == [False, True, True]
    assert hook.skips_ == {"b": 1}
    assert hook.seen_ == {"a": 1, "b": 2, "c": 1}
    assert hook.top_skipped(1) == [{"sample_id": "b", "skips": 1, "seen": 2, "skip_rate": 0.5}]
    assert skip_counts(hook.report())["b"] == {"skips": 1, "seen": 2}


def test_bad_parameters_are_loud():
    with pytest.raises(SilodiffError, match="lambda"):
        AntiGradientControl(lam=0)
    with pytest.raises(SilodiffError, match="decay"):
        AntiGradientControl(decay=1.0)


def test_hook_in_the_training_loop_sees_every_sample(digits32, tiny_mlp):
    config = TrainConfig(epochs=3, batch_size=8)
    hook = AntiGradientControl()
    train(new_state(tiny_mlp, config), digits32, config, hooks=[hook], progress=False)
    assert sum(hook.seen_.values()) == 3 * len(digits32)
    assert set(hook.seen_) == set(digits32.sample_ids)
    assert (hook.bank_ > 0).sum() > 0


def test_specs_rebuild_fresh_hooks():
    (spec,) = agc_hooks(lam=1.5, decay=0.7)
    (hook,) = build_hooks([spec])
    assert isinstance(hook, AntiGradientControl) and (hook.lam, hook.decay) == (1.5, 0.7)
    with pytest.raises(SilodiffError, match="not part of silodiff"):
        build_hooks([{"module": "os", "config": spec["config"]}])


def test_paragon_with_agc_records_skip_counts_and_does_not_reuse_plain_checkpoints(tmp_store):
    config = TrainConfig(epochs=2, batch_size=8)
    plain = train_paragon(tmp_store, config=config, model=tiny_model(), progress=False)
    with_agc = train_paragon(tmp_store, config=config, model=tiny_model(), progress=False, hooks=agc_hooks())
    assert with_agc.resumed_from == 0 and with_agc.artifacts != plain.artifacts  # retrained, not resumed
    row = tmp_store.catalog.artifact(with_agc.artifacts[-1])
    assert row["active"] and row["metrics"]["hooks"] == ["agc"]
    assert 0 <= row["metrics"]["agc_skipped_fraction"] <= 1
    info = tmp_store.load(row["hash"]).info
    assert info["hook_specs"] == agc_hooks()  # a retrain can rebuild the same hook
    counts = skip_counts(info["hooks"]["agc"])
    assert set(counts) == set(tmp_store.catalog.lineage(row["hash"]))
    assert not tmp_store.catalog.artifact(plain.artifacts[-1])["active"]
    again = train_paragon(tmp_store, config=config, model=tiny_model(), progress=False, hooks=agc_hooks())
    assert again.artifacts == [] and again.resumed_from == 1  # an AGC run resumes from its own checkpoint


def test_a_checkpoint_trained_another_way_is_not_resumed(tmp_store):
    """Resuming matches the whole recipe: AGC with another λ, or other epochs, trains anew."""
    config = TrainConfig(epochs=2, batch_size=8)
    lam2 = train_paragon(tmp_store, config=config, model=tiny_model(), progress=False, hooks=agc_hooks(lam=2.0))
    lam12 = train_paragon(tmp_store, config=config, model=tiny_model(), progress=False, hooks=agc_hooks(lam=1.2))
    assert lam12.resumed_from == 0 and lam12.artifacts and lam12.artifacts != lam2.artifacts
    assert tmp_store.load(lam12.artifacts[-1]).info["hook_specs"] == agc_hooks(lam=1.2)
    longer = train_paragon(tmp_store, config=TrainConfig(epochs=3, batch_size=8), model=tiny_model(), progress=False,
                           hooks=agc_hooks(lam=1.2))
    assert longer.resumed_from == 0 and longer.steps > lam12.steps
    again = train_paragon(tmp_store, config=TrainConfig(epochs=3, batch_size=8), model=tiny_model(), progress=False,
                          hooks=agc_hooks(lam=1.2))
    assert again.artifacts == [] and again.resumed_from == 1
