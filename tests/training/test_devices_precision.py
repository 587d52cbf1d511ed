"""Devices, mixed precision, gradient accumulation, flips and the DataLoader of the one training loop."""

from __future__ import annotations

import pytest
import torch

from silodiff.devices import autocast, resolve_device, seeded
from silodiff.errors import SilodiffError
from silodiff.sampling import generate
from silodiff.training import TrainConfig, new_state, train


def _mlp():
    from silodiff.nn import MLPDenoiser

    torch.manual_seed(0)
    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=32, depth=1)


class LossLog:
    def __init__(self):
        self.losses, self.x0 = [], []

    def on_batch(self, batch):
        self.losses.append(batch["loss"].detach().cpu())
        self.x0.append((batch["rows"].clone(), batch["x0"].detach().cpu()))


@pytest.mark.parametrize("spec, message", [
    ("tpu", "unknown device 'tpu'"),
    ("cuda:x", "bad device 'cuda:x'"),
])
def test_unknown_device_is_one_clear_error(spec, message):
    with pytest.raises(SilodiffError, match=message):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_clear_error(spec):
    with pytest.raises(SilodiffError, match="no CUDA GPU is available"):
        resolve_device(spec)
    with pytest.raises(SilodiffError, match="no CUDA GPU"):
        TrainConfig(device=spec).check()


def test_auto_picks_cuda_then_mps_then_cpu():
    want = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == want
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_precision_is_an_error():
    with pytest.raises(SilodiffError, match="unknown precision 'fp8'"):
        TrainConfig(precision="fp8").check()


def test_training_lives_on_the_device_and_is_reproducible(digits32, device):
    config = TrainConfig(epochs=2, batch_size=8, seed=3, device=device)
    runs = []
    for _ in range(2):
        state = train(new_state(_mlp(), config), digits32, config, progress=False)
        assert {p.device.type for p in state.model.parameters()} == {device}
        assert {p.device.type for p in state.ema.model.parameters()} == {device}
        assert state.generator.device.type == device
        runs.append(torch.cat([p.detach().cpu().flatten() for p in state.model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    tensors = state.to_tensors()  # checkpoints are saved from the CPU in fp32
    assert all(v.device.type == "cpu" for v in tensors.values())
    assert all(v.dtype == torch.float32 for k, v in tensors.items() if k.startswith("train/raw."))


def test_sampling_on_the_device_gives_cpu_images_and_is_seeded(digits32, device):
    config = TrainConfig(epochs=1, batch_size=16, device=device)
    model = train(new_state(_mlp(), config), digits32, config, progress=False).ema.model
    a, _ = generate(model, 4, labels=[1, 2, 3, 4], steps=5, seed=7, device=device)
    b, _ = generate(model, 4, labels=[1, 2, 3, 4], steps=5, seed=7, device=device, batch_size=3)
    assert a.device.type == "cpu" and a.shape == (4, 1, 8, 8)
    assert torch.allclose(a, b, atol=1e-4)  # the same noise whatever the batch size (GEMM rounding aside)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cpu_trains_and_samples(digits32, precision):
    config = TrainConfig(epochs=2, batch_size=8, precision=precision, device="cpu")
    log = LossLog()
    state = train(new_state(_mlp(), config), digits32, config, progress=False, hooks=[log])
    assert all(bool(torch.isfinite(l).all()) and l.dtype == torch.float32 for l in log.losses)
    # master weights, EMA and optimizer state stay fp32
    assert {p.dtype for p in state.model.parameters()} == {torch.float32}
    assert {p.dtype for p in state.ema.model.parameters()} == {torch.float32}
    assert {v.dtype for s in state.optimizer.state.values() for k, v in s.items() if k != "step"} == {torch.float32}
    images, _ = generate(state.ema.model, 3, labels=[0, 1, 2], steps=4, precision=precision, device="cpu")
    assert images.shape == (3, 1, 8, 8) and bool(torch.isfinite(images).all())


def test_autocast_really_casts_on_cpu():
    lin = torch.nn.Linear(4, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert lin(torch.randn(2, 4)).dtype == torch.float32


def _x0_only_loss(model, batch, scheduler):
    """A loss of the clean rows only (no t, no ε): equal micro-batches must give the big batch's gradient."""
    t = torch.zeros(len(batch["x0"]), dtype=torch.long)
    return model(batch["x0"], t, batch["labels"]).pow(2).flatten(1).mean(1)


def test_gradient_accumulation_equals_the_big_batch(digits32):
    data = digits32.subset(digits32.sample_ids[:16])
    out = []
    for bs, acc in ((16, 1), (8, 2), (4, 4)):
        config = TrainConfig(batch_size=bs, grad_accum=acc, label_dropout=0.0, grad_clip=0.0, seed=1, device="cpu")
        state = new_state(_mlp(), config)
        state.optimizer = torch.optim.SGD(state.model.parameters(), lr=0.5)  # the update is the gradient itself
        state = train(state, data, config, steps=1, loss_fn=_x0_only_loss, progress=False)
        out.append(torch.cat([p.detach().flatten() for p in state.model.parameters()]))
    assert torch.allclose(out[0], out[1], atol=1e-6) and torch.allclose(out[0], out[2], atol=1e-6)
    assert not torch.allclose(out[0], torch.cat([p.detach().flatten() for p in _mlp().parameters()]))


def test_steps_count_optimizer_steps_with_accumulation(digits32):
    config = TrainConfig(epochs=1, batch_size=4, grad_accum=2, device="cpu")
    log = LossLog()
    state = train(new_state(_mlp(), config), digits32, config, hooks=[log], progress=False)
    assert state.step == 4 and len(log.losses) == 8  # 32 samples: 4 steps of 2 micro-batches of 4


def test_hflip_mirrors_about_half_the_rows(digits32):
    config = TrainConfig(epochs=4, batch_size=8, hflip=True, device="cpu")
    log = LossLog()
    train(new_state(_mlp(), config), digits32, config, hooks=[log], progress=False)
    x_all = digits32.x()
    flipped = same = 0
    for rows, x0 in log.x0:
        orig = x_all[rows]
        is_same = (x0 == orig).flatten(1).all(1)
        is_flip = (x0 == orig.flip(-1)).flatten(1).all(1)
        assert bool((is_same | is_flip).all())
        flipped += int((is_flip & ~is_same).sum())
        same += int((is_same & ~is_flip).sum())
    assert flipped > 20 and same > 20  # 128 rows, a fair coin each


def test_dataloader_workers_train_reproducibly(digits32):
    config = TrainConfig(epochs=1, batch_size=8, num_workers=1, device="cpu")
    runs = [torch.cat([p.detach().flatten() for p in train(new_state(_mlp(), config), digits32, config,
                                                             progress=False).model.parameters()]) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_generators_are_seeded_on_the_device(device):
    a = torch.randn(5, generator=seeded(4, device), device=device)
    b = torch.randn(5, generator=seeded(4, device), device=device)
    assert torch.equal(a, b) and a.device.type == device


def test_a_ray_task_given_a_gpu_trains_on_the_gpu_ray_assigned(monkeypatch):
    """Inside a Ray task with GPUs, auto and cuda mean the first GPU Ray gave the task (cuda:0 after Ray's
    CUDA_VISIBLE_DEVICES); a fake ``ray`` module stands in for a worker here."""
    import sys
    import types

    fake = types.SimpleNamespace(is_initialized=lambda: True, get_gpu_ids=lambda: [3, 5])
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit CPU stays the CPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,3")
    assert resolve_device("auto") == torch.device("cuda", 1)
    fake.get_gpu_ids = lambda: []  # a task without GPUs: the usual rules
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.slow  # two spawned processes: about a minute on the shared 2-core machine
@pytest.mark.parametrize("which", ["paragon", "base"])
def test_data_parallel_paragon_follows_the_single_process_run(tmp_path, digits32, tiny_model_config, which):
    """The paragon (and the base) trained by 2 gloo processes (each half of every batch, gradients summed) matches
    one process."""
    from silodiff.jobs import train_base, train_paragon
    from silodiff.store import Store

    config = TrainConfig(epochs=2, batch_size=8, device="cpu")
    runs = {}
    for n in (1, 2):  # two stores: the second run must not resume from the first's checkpoint
        store = Store(tmp_path / f"dp{n}")
        store.ingest(digits32, "digits")
        if which == "paragon":
            result = train_paragon(store, config=config, model=tiny_model_config, progress=False, data_parallel=n)
        else:
            result = train_base(store, ["source-0", "source-1"], config=config, model=tiny_model_config,
                                progress=False, data_parallel=n)
        assert len(result.artifacts) == 1 and result.steps == 8
        runs[n] = (store, result.artifacts[0])
    (s1, h1), (s2, h2) = runs[1], runs[2]
    a, _ = s1.artifacts.get(h1)
    b, _ = s2.artifacts.get(h2)
    assert set(a) == set(b)
    for k in a:
        if k.startswith("train/raw.") or not k.startswith("train/"):
            assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert s1.catalog.lineage(h1) == s2.catalog.lineage(h2)
