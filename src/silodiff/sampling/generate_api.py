"""``generate``: the convenience entry point around ``sample`` (labels, seed, batching)."""

from __future__ import annotations

import torch

from ..devices import check_precision, device_of, resolve_device, seeded
from ..errors import SilodiffError
from .samplers import SAMPLERS, NoiseTrajectory, make_scheduler, sample


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, …, C−1, 0, 1, … (n labels)."""
    return torch.arange(n) % num_classes


def generate(
    model: torch.nn.Module,
    n: int,
    *,
    labels: torch.Tensor | list[int] | None = None,
    sampler: str = "ddpm",
    steps: int = 100,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 500,
    callback=None,
    progress: bool = False,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` images in [-1, 1] (on the CPU) and their labels; labels ``None`` samples unconditionally.

    ``device`` moves the model there first (default: where it already is); the noise
    is drawn by a generator seeded with ``seed`` on that device, one ``NoiseTrajectory``
    for the whole run, so the same call on the same device type gives the same images
    whatever the batch size.  ``precision``: fp32, bf16 or fp16 (autocast forward passes).
    """
    if sampler not in SAMPLERS:
        raise SilodiffError(f"unknown sampler {sampler!r}: use one of {SAMPLERS}")
    if n < 1:
        raise SilodiffError(f"n must be ≥ 1, got {n}")
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(labels) != n:
            raise SilodiffError(f"{len(labels)} labels for n = {n}")
        num_classes = getattr(model, "num_classes", 0)
        bad = labels[(labels < 0) | (labels >= max(num_classes, 1))]
        if len(bad):
            raise SilodiffError(f"label {int(bad[0])} is outside 0..{num_classes - 1}")
    check_precision(precision)
    if device is not None:
        model = model.to(resolve_device(device))
    shape = (n, *model.image_shape)
    noise = NoiseTrajectory.draw(shape, steps, seeded(seed, device_of(model)))
    scheduler = make_scheduler(sampler)
    out = []
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        out.append(
            sample(model, None, scheduler, steps=steps, labels=None if labels is None else labels[rows], eta=eta,
                   noise=noise.rows(rows), callback=callback, progress=progress, precision=precision).cpu()
        )
    return torch.cat(out), labels
