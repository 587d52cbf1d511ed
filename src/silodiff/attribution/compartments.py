"""Which compartment a generated image drew on (Golatkar et al. 2023, arXiv 2308.01937; METHODS.md §1).

Three estimates, all over the allowed compartments S:

1. **Router weights along the trajectory.** The composition's ε is
   ``Σ_i w_i(x_t, t) ε_i``; ``w`` is the posterior P(i | x_t).  We report its
   mean over the sampling steps and its value at the last step (small t).
2. **Exact leave-one-compartment-out.** Resample with the same
   ``NoiseTrajectory`` (x_T and every step's z) from the composition over
   S \\ {i} and measure, per image, the pixel distance ``‖x̂ − x̂_{−i}‖₂`` (in
   [0, 1] units) and the change of the image's denoising loss
   ``Δℓ_i = ℓ_{S∖i}(x̂) − ℓ_S(x̂)`` on a timestep grid (``likelihood.py``).  A
   class-conditional image whose label no other compartment holds cannot be
   resampled with that label: its counterfactual is drawn unconditionally and
   flagged (``label_unsupported``).
3. **Posterior for an arbitrary image** (a file): each compartment model's
   bound on −log p_i(x) from the same grid and noise, combined with the prior
   λ_i(y):  ``P(i | x) ∝ λ_i(y) exp(−bound_i(x))``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..composition import compose
from ..data import to_unit_range
from ..devices import resolve_device, seeded
from ..errors import SilodiffError
from ..sampling import NoiseTrajectory, WeightRecorder, make_scheduler, sample
from ..store import Store
from ..store.lineage import final_checkpoint, num_classes, trained_compartments
from .likelihood import loss_grid, nll_bound, timestep_grid


def label_tensor(labels: int | Sequence[int | None], num_classes: int) -> torch.Tensor:
    """Labels as a (n,) tensor; ``None`` or −1 → the null label (index ``num_classes``) = unconditional."""
    if labels is None:
        raise SilodiffError("give one label per image (None or -1 for an unconditional image)")
    if isinstance(labels, (int, np.integer)):
        labels = [int(labels)]
    values = [num_classes if v is None or int(v) == -1 else int(v) for v in labels]
    if not values:
        raise SilodiffError("no labels given")
    bad = [v for v in values if not 0 <= v <= num_classes]
    if bad:
        raise SilodiffError(f"label {bad[0]} is outside 0..{num_classes - 1} (or -1 for unconditional)")
    return torch.as_tensor(values, dtype=torch.long)


def pixel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance per image in [0, 1] pixel units, (n,)."""
    return ((a - b) / 2).flatten(1).norm(dim=1)


@dataclass
class CompartmentAttribution:
    names: list[str]
    labels: torch.Tensor  # (n,), num_classes = unconditional
    num_classes: int
    images: torch.Tensor  # (n, c, h, w) in [-1, 1]
    weights_mean: np.ndarray  # (n, K)
    weights_last: np.ndarray  # (n, K)
    loo_images: torch.Tensor | None = None  # (K, n, c, h, w)
    loo_distance: np.ndarray | None = None  # (n, K)
    loo_loss_change: np.ndarray | None = None  # (n, K)
    label_unsupported: np.ndarray | None = None  # (n, K) bool
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: one entry per image, each figure keyed by compartment name."""

        def by_name(row) -> dict[str, float]:
            return {n: round(float(v), 6) for n, v in zip(self.names, row)}

        images = []
        for i in range(len(self.labels)):
            y = int(self.labels[i])
            entry: dict[str, Any] = {
                "index": i,
                "label": None if y == self.num_classes else y,
                "weights_mean": by_name(self.weights_mean[i]),
                "weights_last": by_name(self.weights_last[i]),
                "top_by_weight": self.names[int(np.argmax(self.weights_mean[i]))],
            }
            if self.loo_distance is not None:
                entry.update(
                    loo_distance=by_name(self.loo_distance[i]),
                    loo_loss_change=by_name(self.loo_loss_change[i]),
                    top_by_loo=self.names[int(np.argmax(self.loo_distance[i]))],
                    label_unsupported_without=[n for n, u in zip(self.names, self.label_unsupported[i]) if u],
                )
            images.append(entry)
        return {"compartments": self.names, "images": images, "seconds": self.seconds}


def attribute_compartments(
    store: Store,
    *,
    labels: int | Sequence[int | None],
    seed: int,
    allowed: Sequence[str] | None = None,
    router: str = "classifier",
    sampler: str = "ddpm",
    steps: int = 100,
    eta: float = 0.0,
    leave_one_out: bool = True,
    grid: int = 10,
    draws: int = 2,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> CompartmentAttribution:
    """Generate ``len(labels)`` images with ``seed`` from the composition and attribute each to compartments.

    The noise trajectory is the one ``silodiff sample --seed`` draws for the same
    number of images on the same device, so image i here is image i there.
    """
    t0 = time.perf_counter()
    device = resolve_device(device or "auto")
    model = compose(store, allowed, router=router, device=device)
    y = label_tensor(labels, model.num_classes)
    n = len(y)
    scheduler = make_scheduler(sampler)
    noise = NoiseTrajectory.draw((n, *model.image_shape), steps, seeded(seed, device))
    # 1. the factual run, recording the router weights at every step
    recorder = WeightRecorder()
    images = sample(
        model, None, scheduler, steps=steps, labels=y, eta=eta, noise=noise, callback=recorder, progress=progress
    ).cpu()
    weights_mean, weights_last = recorder.result()
    t_sample = time.perf_counter() - t0
    out = CompartmentAttribution(model.names, y, model.num_classes, images, weights_mean, weights_last)
    out.seconds = {"sampling": round(t_sample, 3)}
    if not leave_one_out or len(model.names) < 2:
        out.seconds["total"] = round(time.perf_counter() - t0, 3)
        return out
    # 2. leave one compartment out: same noise, S \ {i}; labels no other member holds fall back to unconditional
    names, K = model.names, len(model.names)
    counts = torch.zeros(K, model.num_classes + 1)
    for k, name in enumerate(names):
        for label, c in store.catalog.label_counts(name).items():
            counts[k, label] = c
    counts[:, -1] = counts[:, :-1].sum(1)
    timesteps, _ = timestep_grid(grid)
    base_loss = loss_grid(model, images, y, timesteps, draws=draws, seed=seed).mean(1)  # (n,)
    loo_images = torch.empty(K, *images.shape)
    distance, loss_change, unsupported = np.zeros((n, K)), np.zeros((n, K)), np.zeros((n, K), dtype=bool)
    for k in range(K):
        others = [m for m in names if m != names[k]]
        rest = counts[[names.index(m) for m in others]].sum(0)  # (C + 1,)
        missing = rest[y] == 0  # (n,)
        y_k = torch.where(missing, model.num_classes, y)
        counterfactual = compose(store, others, router=router, device=device)
        loo_images[k] = sample(counterfactual, None, scheduler, steps=steps, labels=y_k, eta=eta, noise=noise).cpu()
        distance[:, k] = pixel_distance(images, loo_images[k]).numpy()
        loss_change[:, k] = (
            loss_grid(counterfactual, images, y_k, timesteps, draws=draws, seed=seed).mean(1) - base_loss
        ).numpy()
        unsupported[:, k] = missing.numpy()
    out.loo_images, out.loo_distance, out.loo_loss_change, out.label_unsupported = (
        loo_images,
        distance,
        loss_change,
        unsupported,
    )
    out.seconds["total"] = round(time.perf_counter() - t0, 3)
    out.seconds["ratio_to_sampling"] = round(out.seconds["total"] / max(t_sample, 1e-9), 2)
    return out


def attribute_generation(
    store: Store,
    *,
    labels: int | Sequence[int | None],
    seed: int,
    allowed: Sequence[str] | None = None,
    router: str = "classifier",
    sampler: str = "ddpm",
    steps: int = 100,
    leave_one_out: bool = True,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """JSON-ready attribution of generated images (the service calls this): per image the mean and
    last-step router weights, leave-one-out pixel distances and loss changes per compartment, and names."""
    result = attribute_compartments(
        store,
        labels=labels,
        seed=seed,
        allowed=allowed,
        router=router,
        sampler=sampler,
        steps=steps,
        leave_one_out=leave_one_out,
        device=device,
    )
    return {"seed": seed, "router": router, "sampler": sampler, "steps": steps, **result.to_dict()}


def read_image(path: str | Path, image_shape: Sequence[int]) -> torch.Tensor:
    """One image file as (c, h, w) in [-1, 1]; its size and channels must match the store's images."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = image_shape
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L" if c == 1 else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SilodiffError(f"{path}: unreadable image ({exc})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[1:] != (h, w):
        raise SilodiffError(f"{path}: image is {arr.shape[2]}×{arr.shape[1]}, the store's images are {w}×{h}")
    return to_unit_range(torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)))


@torch.no_grad()
def compartment_posterior(
    store: Store,
    image: torch.Tensor,
    *,
    label: int | None = None,
    allowed: Sequence[str] | None = None,
    grid: int = 20,
    draws: int = 4,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Posterior over compartments for one image (c, h, w) in [-1, 1] from each model's denoising-loss bound."""
    names = list(allowed) if allowed is not None else trained_compartments(store)
    unknown = sorted(set(names) - set(trained_compartments(store)))
    if unknown or not names:
        raise SilodiffError(
            f"not a trained compartment: {', '.join(unknown)}" if unknown else "no trained compartments"
        )
    C = num_classes(store)
    y = label_tensor([label], C)
    timesteps, weights = timestep_grid(grid)
    bounds, priors, losses = [], [], []
    for name in names:
        model = store.load(final_checkpoint(store, "compartment", name)["hash"], device=device or "auto")
        if tuple(model.image_shape) != tuple(image.shape):
            raise SilodiffError(
                f"the image has shape {tuple(image.shape)}, compartment {name!r} takes {tuple(model.image_shape)}"
            )
        ell = loss_grid(model, image[None], y, timesteps, draws=draws, seed=seed)  # (1, G)
        losses.append(float(ell.mean()))
        bounds.append(float(nll_bound(ell, weights, image.numel())[0]))
        counts = store.catalog.label_counts(name)
        priors.append(sum(counts.values()) if label is None else counts.get(int(label), 0))
    prior = np.asarray(priors, dtype=float)
    if prior.sum() == 0:
        raise SilodiffError(f"no allowed compartment holds label {label}")
    log_post = np.log(np.where(prior > 0, prior / prior.sum(), 1e-300)) - np.asarray(bounds)
    log_post[prior == 0] = -np.inf
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    return {
        "compartments": names,
        "label": label,
        "posterior": dict(zip(names, np.round(post, 6).tolist())),
        "prior": dict(zip(names, np.round(prior / prior.sum(), 6).tolist())),
        "nll_bound": dict(zip(names, np.round(bounds, 4).tolist())),
        "mean_loss": dict(zip(names, np.round(losses, 6).tolist())),
        "top": names[int(np.argmax(post))],
        "grid": grid,
        "draws": draws,
    }
