"""``evaluate_quality``: FLD and class accuracy of a model in the store (METHODS.md §6)."""

from __future__ import annotations

from typing import Any

import torch

from ..composition import load_denoiser
from ..data import ChunkedSamples
from ..devices import resolve_device
from ..errors import SilodiffError
from ..sampling import balanced_labels, generate
from ..store import Store
from .frechet import class_accuracy, feature_net, fld


def evaluate_quality(
    store: Store, model: str = "composed", *, router: str = "classifier", gate: float = 0.0, n: int = 1000,
    steps: int = 100, sampler: str = "ddpm", seed: int = 0, progress: bool = True,
    device: str | torch.device | None = None, combine: str = "mixture",
) -> dict[str, Any]:
    """Class-balanced conditional samples → FLD against the store's live data, and accuracy (on ``device``, default auto).

    ``combine``: ``mixture`` or ``soup``, for the composed model (``composition.compose``)."""
    if model != "composed" and combine != "mixture":
        raise SilodiffError("--combine only applies to --model composed")
    device = resolve_device(device or "auto")
    net = feature_net(store, progress=progress, device=device)
    options = dict(router=router, gate=gate, combine=combine) if model == "composed" else {}
    denoiser = load_denoiser(store, model, device=device, **options)
    labels = balanced_labels(n, denoiser.num_classes)
    images, _ = generate(denoiser, n, labels=labels, sampler=sampler, steps=steps, seed=seed, progress=progress)
    return {"model": model, **options, "n": n, "steps": steps, "seed": seed,
            "fld": fld(net, images, _reference(store)), "class_accuracy": class_accuracy(net, images, labels)}


def _reference(store: Store) -> torch.Tensor | ChunkedSamples:
    """The store's live images: in memory when they fit, else streamed from the chunks."""
    data = store.training_set()
    return data if isinstance(data, ChunkedSamples) else data.x()
