"""Attribution to files: ``silodiff attribute`` writes one JSON and a few PNGs into ``out``.

- compartments, generated (``seed`` + labels): ``attribution.json``, ``images.png``,
  ``weights.png`` (mean router weight per image), ``loo.png`` (leave-one-out
  distance per image, normalised to sum one), ``counterfactuals.png`` (row 0:
  the images; row k: the same noise without compartment k);
- compartments, a file: ``posterior.json`` and ``posterior.png``;
- encoded ensemble, generated: ``influence.json`` and ``topk.png`` (per image:
  the image, its resample without the top unit, then the top-k units' first
  training images);
- encoded ensemble, a file: ``influence.json`` (loss change per unit) and ``topk.png``;
- D-TRAK / TRAK (``method="dtrak" | "trak"``, with ``models`` single, ensemble or
  compartments), generated or a file: ``influence.json`` (the top-k units and their
  scores) and ``topk.png`` (the image, then the top-k units' first training images).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices import resolve_device
from ..errors import SilodiffError
from ..sample_files import parse_labels
from ..store import Store
from ..store.lineage import num_classes

METHODS = ("ensemble", "dtrak", "trak")


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)
    return path


def _labels(store: Store, spec: str, n: int) -> list[int | None]:
    """As ``silodiff sample --labels`` (all, none, 3, 0,1,2), plus ``none`` / −1 entries in a list (unconditional)."""
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    if len(parts) > 1 and any(p in ("none", "-1") for p in parts):
        values = [None if p in ("none", "-1") else int(p) if p.isdigit() else None for p in parts]
        if any(v is None and p not in ("none", "-1") for v, p in zip(values, parts)):
            raise SilodiffError(
                f"bad labels {spec!r}: use all, none or comma-separated integers (none / -1 = unconditional)"
            )
        return [values[i % len(values)] for i in range(n)]
    y = parse_labels(spec, n, num_classes(store))
    return [None] * n if y is None else y.tolist()


def _normalised(rows: np.ndarray) -> np.ndarray:
    return rows / np.clip(rows.sum(1, keepdims=True), 1e-12, None)


def run_attribute(
    store: Store,
    out: str | Path,
    *,
    seed: int | None = None,
    labels: str = "all",
    n: int = 1,
    image: str | Path | None = None,
    ensemble: bool = False,
    allowed: list[str] | None = None,
    router: str = "classifier",
    sampler: str = "ddpm",
    steps: int = 100,
    top_k: int = 5,
    leave_one_out: bool = True,
    first_order: bool = False,
    contrast: str = "matched",
    method: str | None = None,
    models: str = "single",
    unit: str = "sample",
    groups: str | Path | None = None,
    timesteps: int = 10,
    proj_dim: int = 512,
    lam: float = 1e-2,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Attribute generated images (``seed``) or an image file (``image``) and write the results into ``out``.

    ``method``: None (compartments, or the encoded ensemble with ``ensemble``), ``"ensemble"``,
    ``"dtrak"`` or ``"trak"`` (gradient attribution to ``unit`` s: sample, source, column:NAME), with the
    features of ``models``: single (one model), ensemble (the encoded ensemble's members) or compartments
    (each allowed compartment), scores averaged over the members.
    ``device`` (default auto) runs the compartment attribution; the encoded ensemble runs on the CPU.
    """
    from ..viz import save_grid, save_weight_bars
    from .compartments import attribute_compartments, compartment_posterior, read_image

    if method is not None and method not in METHODS:
        raise SilodiffError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if method is not None and method != "ensemble" and ensemble:
        raise SilodiffError(f"--ensemble and --method {method} disagree: give one")
    if models != "single" and method not in ("dtrak", "trak"):
        raise SilodiffError(f"--models {models} applies to --method dtrak or trak")
    ensemble = ensemble or method == "ensemble"
    if (seed is None) == (image is None):
        raise SilodiffError("give either --seed (generated images) or --image FILE, not both")
    if n < 1:
        raise SilodiffError(f"n must be ≥ 1, got {n}")
    if method in ("dtrak", "trak"):
        from .gradient import check_proj_dim
        from .gradient_units import MODELS

        check_proj_dim(proj_dim)
        if models not in MODELS:
            raise SilodiffError(f"unknown models {models!r}: use one of {', '.join(MODELS)}")
    device = resolve_device(device or "auto")  # a missing device is refused before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if ensemble:
        return _run_ensemble(
            store,
            out,
            seed=seed,
            labels=labels,
            n=n,
            image=image,
            sampler=sampler,
            steps=steps,
            top_k=top_k,
            first_order=first_order,
            contrast=contrast,
        )
    if allowed is not None and not allowed:
        raise SilodiffError("the allowed set is empty")
    if method in ("dtrak", "trak"):
        return _run_gradient(
            store, out, method=method, seed=seed, labels=labels, n=n, image=image, allowed=allowed, router=router,
            models=models, unit=unit, groups=groups, sampler=sampler, steps=steps, top_k=top_k, timesteps=timesteps,
            proj_dim=proj_dim, lam=lam,
        )
    if image is not None:
        x = read_image(image, store.dataset([store.catalog.sample_rows()[0]["sample_id"]]).image_shape)
        y = None if labels == "all" else _labels(store, labels, 1)[0]  # the file's label, or unconditional
        result = compartment_posterior(store, x, label=y, allowed=allowed, device=device)
        result.update(image=str(image), json=str(_write_json(out / "posterior.json", result)))
        result["png"] = str(
            save_weight_bars(
                np.asarray([list(result["posterior"].values())]),
                result["compartments"],
                out / "posterior.png",
                title="posterior over compartments",
            )
        )
        return result
    attribution = attribute_compartments(
        store,
        labels=_labels(store, labels, n),
        seed=seed,
        allowed=allowed,
        router=router,
        sampler=sampler,
        steps=steps,
        leave_one_out=leave_one_out,
        device=device,
    )
    result = {"seed": seed, "router": router, "sampler": sampler, "steps": steps, **attribution.to_dict()}
    names = attribution.names
    files = {
        "images": save_grid(attribution.images, out / "images.png", nrow=min(10, n), title=f"seed {seed}"),
        "weights": save_weight_bars(attribution.weights_mean, names, out / "weights.png", title="mean router weight"),
    }
    if attribution.loo_distance is not None:
        files["loo"] = save_weight_bars(
            _normalised(attribution.loo_distance), names, out / "loo.png", title="leave-one-out distance (normalised)"
        )
        grid = torch.cat([attribution.images[None], attribution.loo_images])  # (1 + K, n, c, h, w)
        files["counterfactuals"] = save_grid(
            grid.flatten(0, 1),
            out / "counterfactuals.png",
            nrow=n,
            title="row 0: images; row k: without " + ", ".join(names),
        )
    result["files"] = {k: str(v) for k, v in files.items()}
    result["json"] = str(_write_json(out / "attribution.json", result))
    return result


def _run_ensemble(
    store: Store, out: Path, *, seed, labels, n, image, sampler, steps, top_k, first_order, contrast
) -> dict[str, Any]:
    from ..viz import save_grid
    from .compartments import label_tensor, read_image
    from .encoded import load_ensemble
    from .influence import attribute_units, loss_influence

    if image is None:
        est, result = attribute_units(
            store,
            labels=_labels(store, labels, n),
            seed=seed,
            sampler=sampler,
            steps=steps,
            top_k=top_k,
            first_order=first_order,
            contrast=contrast,
        )
        plan, images, tau = est.plan_, est.images_, est.influence_
        top = est.top_k(min(top_k, len(plan.units)))
        without_top = (
            None
            if est.counterfactuals_ is None  # the signed contrast resamples nothing
            else est.counterfactuals_[est.unit_subset_[top[:, 0]], torch.arange(len(images))]  # (n, c, h, w)
        )
    else:
        plan, ens = load_ensemble(store)
        x = read_image(image, ens.image_shape)[None]
        y = label_tensor([None if labels == "all" else _labels(store, labels, 1)[0]], ens.num_classes)
        subsets, unit_subset = np.unique(~plan.codes, axis=0, return_inverse=True)
        tau = loss_influence(ens, subsets, x, y)[:, unit_subset.reshape(-1)]  # (1, U)
        top = np.argsort(-tau, axis=1, kind="stable")[:, : min(top_k, len(plan.units))]
        images, without_top = x, None
        result = {
            "plan": plan.hash,
            "members": plan.members,
            "unit": plan.unit,
            "units": len(plan.units),
            "image": str(image),
            "score": "loss change without the unit's members (positive: the image is less likely without it)",
            "images": [
                {
                    "index": 0,
                    "top": [
                        {
                            "unit": plan.units[j],
                            "loss_change": round(float(tau[0, j]), 6),
                            "n_samples": len(plan.unit_ids[j]),
                        }
                        for j in top[0]
                    ],
                }
            ],
        }
    # one row per image: the image, (its resample without the top unit,) the top-k units' first training images
    first = store.dataset([plan.unit_ids[j][0] for j in top.reshape(-1)]).x().view(*top.shape, *images.shape[1:])
    rows = [
        torch.cat([images[i : i + 1]] + ([without_top[i : i + 1]] if without_top is not None else []) + [first[i]])
        for i in range(len(images))
    ]
    ncol = rows[0].shape[0]
    title = (
        "image | without top unit | top units"
        if without_top is not None
        else f"image | top units by {'signed contrast' if image is None else 'loss change'}"
    )
    result["files"] = {"topk": str(save_grid(torch.cat(rows), out / "topk.png", nrow=ncol, title=title))}
    result["json"] = str(_write_json(out / "influence.json", result))
    return result


def _run_gradient(
    store: Store, out: Path, *, method, seed, labels, n, image, allowed, router, models, unit, groups, sampler, steps,
    top_k, timesteps, proj_dim, lam,
) -> dict[str, Any]:
    from ..viz import save_grid
    from .compartments import read_image
    from .gradient_units import attribute_by_gradient, attribution_models, top_unit_images

    if image is None:
        images, y = None, _labels(store, labels, n)
    else:
        model = attribution_models(store, models, allowed, router)[0]
        images = read_image(image, model.image_shape)[None]
        y = [None if labels == "all" else _labels(store, labels, 1)[0]]
    est, images, result = attribute_by_gradient(
        store, method=method, images=images, labels=y, seed=seed, allowed=allowed, router=router, models=models, unit=unit,
        groups=groups, sampler=sampler, steps=steps, timesteps=timesteps, proj_dim=proj_dim, lam=lam, top_k=top_k,
    )
    if image is not None:
        result["image"] = str(image)
    top = est.top_k(min(top_k, len(est.units_)))
    first = top_unit_images(store, est, top)
    rows = [torch.cat([images[i : i + 1], first[i]]) for i in range(len(images))]
    result["files"] = {
        "topk": str(save_grid(torch.cat(rows), out / "topk.png", nrow=rows[0].shape[0],
                              title=f"image | top units by {method}"))
    }
    result["json"] = str(_write_json(out / "influence.json", result))
    return result
