"""D-TRAK / TRAK on a store: which model, which training samples, which units (``gradient.py`` has the maths).

The model is the composition over ``allowed`` compartments (default: all), or one
compartment's final checkpoint when ``allowed`` names exactly one, or, in a store
without compartments, its encoded ensemble (the mean of the members).  Its
training samples are the union of its artifacts' catalog lineage, so a unit
only ever gets a score from a model that was trained on it; units (sample,
source or column:NAME, as for encoded ensembles) are grouped over those samples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SilodiffError
from ..sampling import NoiseTrajectory, make_scheduler, sample
from ..store import Store
from ..store.lineage import final_checkpoint, seen_by, trained_compartments
from .gradient import GradientAttribution

MODELS = ("single", "ensemble", "compartments")


def _live_lineage(store: Store, hashes: Sequence[str]) -> list[str]:
    """Sorted live sample ids in the union of the artifacts' lineage (forgotten samples have no unit to credit)."""
    ids = seen_by(store, hashes)
    live = {r["sample_id"] for r in store.catalog.sample_rows()}
    ids = [s for s in ids if s in live]
    if not ids:
        raise SilodiffError("the model's lineage holds no live samples")
    return ids


def _allowed_compartments(store: Store, allowed: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Names and final-checkpoint hashes of the allowed trained compartments (default: all)."""
    trained = trained_compartments(store)
    names = list(trained if allowed is None else allowed)
    unknown = sorted(set(names) - set(trained))
    if unknown:
        raise SilodiffError(f"not a trained compartment: {', '.join(unknown)}")
    if not names:
        raise SilodiffError("the allowed set is empty")
    return names, [final_checkpoint(store, "compartment", n)["hash"] for n in names]


def attribution_models(
    store: Store, models: str = "single", allowed: Sequence[str] | None = None, router: str = "classifier"
) -> tuple[torch.nn.Module, list[torch.nn.Module], list[str], str]:
    """``(model that generates, members whose scores are averaged, training sample ids, description)``."""
    from ..composition import compose

    if models not in MODELS:
        raise SilodiffError(f"unknown models {models!r}: use one of {', '.join(MODELS)}")
    if models == "single":
        model, ids, what = attribution_model(store, allowed, router)
        return model, [model], ids, what
    if models == "ensemble":
        from .encoded import load_ensemble, member_checkpoints

        if allowed:
            raise SilodiffError("models ensemble uses the encoded ensemble: leave out the allowed compartments")
        plan, ens = load_ensemble(store)
        ids = _live_lineage(store, [r["hash"] for r in member_checkpoints(store, plan)])
        return ens, list(ens.members), ids, f"the {plan.members} members of the encoded ensemble (scores averaged)"
    if not trained_compartments(store):
        raise SilodiffError(f"models compartments needs trained compartments: {store.root} has none")
    names, hashes = _allowed_compartments(store, allowed)
    members = [store.load(h) for h in hashes]
    model = members[0] if len(names) == 1 else compose(store, names, router=router)
    return model, members, _live_lineage(store, hashes), f"compartments {', '.join(names)} (scores averaged)"


def attribution_model(
    store: Store, allowed: Sequence[str] | None = None, router: str = "classifier"
) -> tuple[torch.nn.Module, list[str], str]:
    """``(model, training sample ids, description)`` for gradient attribution."""
    from ..composition import compose

    if trained_compartments(store):
        names, hashes = _allowed_compartments(store, allowed)
        if len(names) == 1:
            model, what = store.load(hashes[0]), f"compartment {names[0]}"
        else:
            model, what = compose(store, names, router=router), f"composition of {', '.join(names)} ({router} router)"
    else:
        from .encoded import load_ensemble, member_checkpoints

        if allowed:
            raise SilodiffError("this store has no trained compartments to choose from")
        try:
            plan, model = load_ensemble(store)
        except SilodiffError:
            raise SilodiffError(
                f"nothing to attribute with in {store.root}: train compartments or an encoded ensemble first"
            ) from None
        hashes, what = [r["hash"] for r in member_checkpoints(store, plan)], f"encoded ensemble of {plan.members}"
    return model, _live_lineage(store, hashes), what


def unit_rows(
    store: Store, ids: Sequence[str], unit: str = "sample", groups: str | Path | None = None
) -> tuple[list[str], list[list[int]]]:
    """Unit names and each unit's rows in ``ids`` (units with no sample in ``ids`` are left out)."""
    from .encoded import plan_units

    row = {sid: i for i, sid in enumerate(ids)}
    names, rows = [], []
    for name, members in plan_units(store, unit, groups).items():
        r = [row[s] for s in members if s in row]
        if r:
            names.append(name)
            rows.append(r)
    return names, rows


def attribute_by_gradient(
    store: Store,
    *,
    method: str = "dtrak",
    images: torch.Tensor | None = None,
    labels: Sequence[int | None] | None = None,
    seed: int | None = None,
    allowed: Sequence[str] | None = None,
    router: str = "classifier",
    models: str = "single",
    unit: str = "sample",
    groups: str | Path | None = None,
    sampler: str = "ddpm",
    steps: int = 100,
    timesteps: int = 10,
    proj_dim: int = 512,
    lam: float = 1e-2,
    top_k: int = 5,
) -> tuple[GradientAttribution, torch.Tensor, dict[str, Any]]:
    """Score the store's training units for ``images`` (or the images ``seed`` generates with ``labels``).

    ``models``: single, ensemble or compartments (whose features; see the module docstring).
    Returns the fitted estimator, the images and a JSON-ready summary (top-k units per image).
    """
    from .compartments import label_tensor

    est = GradientAttribution(method=method, timesteps=timesteps, proj_dim=proj_dim, lam=lam)  # checks first
    if (seed is None) == (images is None):
        raise SilodiffError("give either a seed (generated images) or images, not both")
    model, members, ids, what = attribution_models(store, models, allowed, router)
    unit_names, rows = unit_rows(store, ids, unit, groups)
    if labels is None:
        raise SilodiffError("give one label per image (None for unconditional)")
    y = label_tensor(list(labels), model.num_classes)
    t0 = time.perf_counter()
    if images is None:
        noise = NoiseTrajectory.draw((len(y), *model.image_shape), steps, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            images = sample(model, None, make_scheduler(sampler), steps=steps, labels=y, noise=noise)
    elif len(images) != len(y):
        raise SilodiffError(f"{len(images)} images but {len(y)} labels")
    sample_s = time.perf_counter() - t0
    train = store.dataset(ids)
    row_of = {sid: i for i, sid in enumerate(train.sample_ids)}
    order = [row_of[s] for s in ids]
    est.fit(members, train.x()[order], train.labels[order], units=rows, unit_names=unit_names)
    tau = est.score(images, y)
    top = est.top_k(min(top_k, len(unit_names)))
    summary: dict[str, Any] = {
        "method": method,
        "model": what,
        "models": models,
        "members": len(members),
        "unit": unit,
        "units": len(unit_names),
        "training_samples": len(ids),
        "timesteps": timesteps,
        "proj_dim": proj_dim,
        "projector": est.projector_,
        "per_sample_gradients": "vmap" if est.vectorised_ else "loop",
        "lambda": est.lam,
        "score": "positive: including the unit lowers the model output on the image (D-TRAK: ‖ε‖², TRAK: loss)",
        "seconds": {"sampling": round(sample_s, 3), "fit": est.fit_seconds_["wall"], "score": est.seconds_["wall"]},
        "images": [],
    }
    if seed is not None:
        summary.update(seed=seed, sampler=sampler, steps=steps)
    for i in range(len(y)):
        label = int(y[i])
        summary["images"].append(
            {
                "index": i,
                "label": None if label == model.num_classes else label,
                "top": [
                    {"unit": unit_names[j], "score": round(float(tau[i, j]), 6), "n_samples": len(rows[j])}
                    for j in top[i]
                ],
            }
        )
    est.sample_ids_ = list(ids)
    return est, images, summary


def top_unit_images(store: Store, est: GradientAttribution, top: np.ndarray) -> torch.Tensor:
    """The first training image of each unit in ``top`` (n, k), (n, k, c, h, w)."""
    firsts = [est.sample_ids_[est.units_[j][0]] for j in top.reshape(-1)]
    data = store.dataset(sorted(set(firsts)))
    row = {sid: i for i, sid in enumerate(data.sample_ids)}
    x = data.x()[[row[s] for s in firsts]]
    return x.view(*top.shape, *x.shape[1:])
