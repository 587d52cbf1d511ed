"""The one training loop: determinism, exact resume, sample-dropping hooks, label
dropout and config validation."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.nn import MLPDenoiser
from silodiff.training import TrainConfig, new_state, noise_scheduler, steps_for, train
from silodiff.training.plan import derive_seed, group_compartments, split_slices


def _fresh(seed: int = 0) -> MLPDenoiser:
    torch.manual_seed(seed)
    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=32, depth=1)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CONFIG = TrainConfig(epochs=1, batch_size=8, seed=7)


def test_same_seed_same_weights(digits32):
    a = train(new_state(_fresh(), CONFIG), digits32, CONFIG, steps=6, progress=False)
    b = train(new_state(_fresh(), CONFIG), digits32, CONFIG, steps=6, progress=False)
    assert _same(_weights(a.model), _weights(b.model)) and _same(_weights(a.ema.model), _weights(b.ema.model))
    other = TrainConfig(epochs=1, batch_size=8, seed=8)
    c = train(new_state(_fresh(), other), digits32, other, steps=6, progress=False)
    assert not _same(_weights(a.model), _weights(c.model))
    assert a.step == 6


def test_resume_equals_straight_run(digits32):
    n, k = 9, 4  # crosses an epoch boundary (32 / 8 = 4 batches per epoch)
    straight = train(new_state(_fresh(), CONFIG), digits32, CONFIG, steps=n, progress=False)
    first = train(new_state(_fresh(), CONFIG), digits32, CONFIG, steps=k, progress=False)
    saved = first.to_tensors()
    saved.update({k_: v.clone() for k_, v in first.ema.model.state_dict().items()})
    resumed = new_state(_fresh(seed=123), CONFIG)  # different init: everything must come from the checkpoint
    resumed.load_tensors(saved)
    assert resumed.step == k
    train(resumed, digits32, CONFIG, steps=n - k, progress=False)
    assert resumed.step == n
    assert _same(_weights(resumed.model), _weights(straight.model))
    assert _same(_weights(resumed.ema.model), _weights(straight.ema.model))


class KeepEven:
    """A hook that keeps only even rows and records what the loop saw."""

    def __init__(self) -> None:
        self.batches, self.grads, self.before = [], [], None

    def on_batch(self, batch):
        self.batches.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items() if k != "loss"})
        self.loss = batch["loss"].detach().clone()
        return torch.arange(len(batch["rows"])) % 2 == 0

    def on_step(self, state):
        self.grads.append({n: p.grad.clone() for n, p in state.model.named_parameters()})


def test_hook_drop_changes_the_gradient_as_expected(digits32):
    """One step with a keep-mask: the gradient equals that of the mean loss over the kept rows only."""
    config = TrainConfig(epochs=1, batch_size=16, grad_clip=0.0, seed=1)
    model = _fresh()
    start = _weights(model)
    hook = KeepEven()
    train(new_state(model, config), digits32, config, steps=1, hooks=[hook], progress=False)
    (batch,), (grad,) = hook.batches, hook.grads
    assert len(batch["ids"]) == 16 and batch["ids"] == [digits32.sample_ids[i] for i in batch["rows"].tolist()]
    assert hook.loss.shape == (16,)  # per-sample, unreduced

    def reference(keep: torch.Tensor) -> dict[str, torch.Tensor]:
        ref = _fresh()
        ref.load_state_dict(start)
        ref.train()
        x0, labels, t, noise = (batch[k][keep] for k in ("x0", "labels", "t", "noise"))
        loss = ref.loss(x0, labels, t, noise, noise_scheduler())
        loss.mean().backward()
        return {n: p.grad for n, p in ref.named_parameters()}

    kept, everything = reference(torch.arange(16) % 2 == 0), reference(torch.ones(16, dtype=torch.bool))
    for name, g in grad.items():
        torch.testing.assert_close(g, kept[name], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(grad[n], everything[n], rtol=1e-3, atol=1e-5) for n in grad)


def test_hooks_masks_combine(digits32):
    """Two hooks: a sample is kept only if both keep it; all dropped → no update of the weights."""

    class Drop:
        def on_batch(self, batch):
            return torch.zeros(len(batch["rows"]), dtype=torch.bool)

    config = TrainConfig(epochs=1, batch_size=16, grad_clip=0.0, weight_decay=0.0, seed=1)
    model = _fresh()
    start = _weights(model)
    train(new_state(model, config), digits32, config, steps=2, hooks=[KeepEven(), Drop()], progress=False)
    assert _same(_weights(model), start)


def test_label_dropout_replaces_labels_with_the_null_class(digits32):
    seen = []

    class Record:
        def on_batch(self, batch):
            seen.append(batch["labels"].clone())

    for rate, expect in ((0.0, False), (0.5, True)):
        seen.clear()
        config = TrainConfig(epochs=1, batch_size=32, label_dropout=rate, seed=0)
        train(new_state(_fresh(), config), digits32, config, steps=4, hooks=[Record()], progress=False)
        labels = torch.cat(seen)
        null = (labels == 10).float().mean().item()
        assert (null > 0.25) == expect and labels.max() <= 10
        if not expect:
            assert null == 0.0


@pytest.mark.parametrize(
    "field, value, message",
    [("epochs", 0, "epochs"), ("batch_size", 0, "batch_size"), ("lr", 0.0, "lr"),
     ("label_dropout", 1.0, "label_dropout"),
     ("num_train_timesteps", 0, "num_train_timesteps"), ("max_timestep", 0, "max_timestep"),
     ("max_timestep", 1001, "max_timestep")],
)
def test_config_validation(digits32, field, value, message):
    config = TrainConfig(**{field: value})
    with pytest.raises(SilodiffError, match=message):
        config.check()
    with pytest.raises(SilodiffError, match=message):
        train(new_state(_fresh(), TrainConfig()), digits32, config, steps=1, progress=False)


def test_empty_data_is_an_error(digits32):
    with pytest.raises(SilodiffError, match="empty"):
        train(new_state(_fresh(), CONFIG), digits32.where([False] * len(digits32)), CONFIG, steps=1, progress=False)


def test_steps_for_and_default_length(digits32):
    assert steps_for(32, CONFIG) == 4 and steps_for(33, CONFIG) == 5 and steps_for(32, CONFIG, 0.5) == 2
    config = TrainConfig(epochs=2, batch_size=16)
    state = train(new_state(_fresh(), config), digits32, config, progress=False)
    assert state.step == 4


def test_loss_fn_is_pluggable(digits32):
    calls = []

    def loss_fn(model, batch, scheduler):
        calls.append(len(batch["rows"]))
        return model(batch["x0"], batch["t"], batch["labels"]).pow(2).flatten(1).mean(1)

    train(new_state(_fresh(), CONFIG), digits32, CONFIG, steps=3, loss_fn=loss_fn, progress=False)
    assert calls == [8, 8, 8]


def test_max_timestep_limits_the_drawn_timesteps(digits32):
    drawn = {}

    def record(limit):
        def loss_fn(model, batch, scheduler):
            drawn.setdefault(limit, []).append(batch["t"])
            return model(batch["x0"], batch["t"], batch["labels"]).pow(2).flatten(1).mean(1)
        return loss_fn

    for limit in (None, 50):
        config = TrainConfig(epochs=1, batch_size=8, max_timestep=limit)
        train(new_state(_fresh(), config), digits32, config, steps=40, loss_fn=record(limit), progress=False)
    every, low = torch.cat(drawn[None]), torch.cat(drawn[50])
    assert int(low.max()) < 50 and len(low.unique()) > 40  # t ~ U{0..49}: all below 50, and spread over them
    assert int(every.max()) >= 50


# ----------------------------------------------------------------------------- plans
def test_split_slices_is_a_deterministic_partition(digits32):
    ids = digits32.sample_ids
    slices = split_slices(ids, 3, seed=0)
    assert sorted(sum(slices, [])) == sorted(ids) and [len(s) for s in slices] == [11, 11, 10]
    assert split_slices(list(reversed(ids)), 3, seed=0) == slices
    assert split_slices(ids, 3, seed=1) != slices
    with pytest.raises(SilodiffError):
        split_slices(ids, 0)
    with pytest.raises(SilodiffError):
        split_slices(ids[:2], 3)


def test_group_compartments_and_seeds():
    rows = [{"sample_id": f"{i:064x}", "source": f"s{i % 2}"} for i in range(10)]
    assert group_compartments(rows, "source") == {"s0": [r["sample_id"] for r in rows[::2]],
                                                 "s1": [r["sample_id"] for r in rows[1::2]]}
    shards = group_compartments(rows, "shards:3")
    assert sorted(sum(shards.values(), [])) == sorted(r["sample_id"] for r in rows)
    with pytest.raises(SilodiffError):
        group_compartments(rows, "shards:0")
    with pytest.raises(SilodiffError):
        group_compartments(rows, "owner")
    assert derive_seed(0, "a") == derive_seed(0, "a") != derive_seed(0, "b")
