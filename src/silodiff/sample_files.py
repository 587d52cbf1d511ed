"""Sample from a store to files (``silodiff sample``): ``samples.png`` (grid) and ``samples.npz``.

The .npz holds uint8 images (n, c, h, w), labels (−1 = unconditional), the seed,
and for a composed model the compartment weights per image, averaged over the
trajectory (``weights_mean``) and at the last step (``weights_last``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .composition import AdapterSoup, ComposedDenoiser, load_denoiser
from .data import to_uint8
from .devices import check_precision, resolve_device
from .errors import SilodiffError
from .sampling import WeightRecorder, balanced_labels, generate
from .store import Store


def parse_labels(spec: str, n: int, num_classes: int) -> torch.Tensor | None:
    """'all' → balanced, 'none' → unconditional, '3' → all threes, '0,1,2' → cycled to n."""
    spec = spec.strip().lower()
    if spec == "none":
        return None
    if spec == "all":
        return balanced_labels(n, num_classes)
    try:
        values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise SilodiffError(f"bad labels {spec!r}: use all, none or comma-separated integers") from None
    if not values:
        raise SilodiffError("no labels given")
    return torch.as_tensor([values[i % len(values)] for i in range(n)])


def run_sample(
    store: Store, out: str | Path, *, model: str = "composed", allowed: list[str] | None = None, router: str = "classifier",
    gate: float = 0.0, n: int = 100, labels: str = "all", sampler: str = "ddpm", steps: int = 100, eta: float = 0.0,
    seed: int = 0, progress: bool = True, cpsample: dict[str, float] | None = None,
    device: str | torch.device | None = None, precision: str = "fp32", with_base: bool = False, combine: str = "mixture",
) -> dict[str, Any]:
    """Sample ``n`` images and write them; returns a summary.

    ``cpsample={"alpha": A, "scale": S}`` guides with the stored protection classifier(s) (CPSample).
    ``device``: auto | cpu | cuda[:N] | mps (default auto); ``precision``: fp32 | bf16 | fp16.
    ``with_base``: the active base is one more member of the composition (``compose(..., with_base=True)``).
    ``combine``: ``mixture`` (routed) or ``soup`` (LoRA compartments averaged into one model; ``composition.soup``).
    """
    from .viz import save_grid

    options = dict(allowed=allowed, router=router, gate=gate, with_base=with_base,
                   combine=combine) if model == "composed" else {}
    if model != "composed" and (allowed or with_base or combine != "mixture"):
        what = "--allowed" if allowed else "--with-base" if with_base else "--combine"
        raise SilodiffError(f"{what} only applies to --model composed")
    if with_base and cpsample is not None:
        raise SilodiffError("--cpsample and --with-base do not combine: the base has no protection classifier")
    if combine == "soup" and cpsample is not None:
        raise SilodiffError("--cpsample and --combine soup do not combine: CPSample guards each member, a soup is one model")
    dev = resolve_device(device or "auto")
    check_precision(precision, dev)
    net = load_denoiser(store, model, device=dev, **options)
    if cpsample is not None:
        from .defences.cpsample import protect_from_store

        net = protect_from_store(store, net, model, **cpsample).to(dev)
    y = parse_labels(labels, n, net.num_classes)
    recorder = WeightRecorder()
    images, y = generate(net, n, labels=y, sampler=sampler, steps=steps, eta=eta, seed=seed, callback=recorder, progress=progress,
                         precision=precision)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"images": to_uint8(images).numpy(), "labels": (y if y is not None else torch.full((n,), -1)).numpy(),
                              "seed": np.asarray(seed)}
    summary: dict[str, Any] = {"model": model, "n": n, "sampler": sampler, "steps": steps, "seed": seed, "device": str(dev)}
    if isinstance(net, AdapterSoup):
        summary.update(combine="soup", compartments=net.names, soup_weights={k: round(v, 4) for k, v in net.weights.items()})
    weights = recorder.result()
    if isinstance(net, ComposedDenoiser) and weights is not None:
        arrays.update(weights_mean=weights[0], weights_last=weights[1], compartments=np.asarray(net.names))
        summary["compartments"] = net.names
        summary["mean_weights"] = dict(zip(net.names, np.round(weights[0].mean(0), 4).tolist()))
        summary["member_evaluations"] = dict(zip(net.names, net.calls.tolist()))
    if cpsample is not None:
        from .defences.cpsample import guided_fraction

        summary["cpsample"] = {**cpsample, "guided_fraction": round(guided_fraction(net), 5)}
    tmp = out / "samples.part.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out / "samples.npz")
    summary["png"] = str(save_grid(images, out / "samples.png", nrow=min(10, n), title=f"{model} ({sampler}, {steps} steps)"))
    summary["npz"] = str(out / "samples.npz")
    return summary
