"""Unit influence in an encoded ensemble (Dai & Gifford 2023, arXiv 2306.02174; METHODS.md §3).

With one fixed ``NoiseTrajectory`` (x_T and every step's z):

    x̂       = sample(mean of all M members' ε)                      the factual image
    x̂_{−j}  = sample(mean of the M/2 members with c_jm = 0)         never saw unit j
    τ_j(x̂)  = ‖x̂ − x̂_{−j}‖₂ (in [0, 1] pixel units)                influence of unit j
    r(x̂)    = max_j τ_j(x̂)                                          counterfactual radius

``contrast="matched"`` (our choice, the default) compares equal-sized sub-ensembles instead:
``τ_j = ‖x̂_{+j} − x̂_{−j}‖₂`` with x̂_{+j} sampled from the M/2 members with
c_jm = 1.  Against the full ensemble every ablation halves the ensemble, which
moves the image for every unit alike; between the two halves split by unit j,
only the units coded like j (none: codes are unique) are split the same way, so
the unit's own effect stands out more.  It costs up to twice the resamples.
On planted duplicates it ranks the planted unit first in 14/14 copies against
11/14 for ``full``, and its LDS is higher (bench/results/attribution.md).

``contrast="signed"`` is ``ℓ_{−j}(x̂) − ℓ_{+j}(x̂)``: the denoising loss of the image
under the half that never saw j minus the half that did (``contrasts.py``: exact,
from one pass of each member over a timestep grid, no resampling).  Unlike the
distances it has a sign, so sums over units (the LDS) add signed effects.

Resamples are cached by member subset (units sharing a complementary set
share one run) and many subsets run in one batch: the ensemble takes per-row
member weights, so each member is evaluated once per step on every row of
every subset that contains it.  Optionally the change of the image's
denoising loss ``ℓ_{−j}(x̂) − ℓ(x̂)`` (the likelihood route) on a timestep grid.

First-order shortcut: with member weights w (all ones at the factual run),
``x̂_{−j} − x̂ ≈ −Σ_m c_jm ∂x̂/∂w_m``; all M derivatives come from ONE forward-mode
pass (``torch.func.jvp``) over M copies of the batch, tangent e_m on copy m.
The ensemble normalises its weights, so ``Σ_m ∂x̂/∂w_m = 0`` and the matched
contrast is, to first order, twice the full one: ``x̂_{+j} − x̂_{−j} ≈ 2 Σ_m c_jm ∂x̂/∂w_m``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import SilodiffError
from ..sampling import NoiseTrajectory, make_scheduler, sample
from .compartments import pixel_distance
from .encoded import EncodedPlan
from .ensemble import EnsembleDenoiser
from .likelihood import loss_grid, timestep_grid


def repeat_noise(noise: NoiseTrajectory, copies: int) -> NoiseTrajectory:
    """The same trajectory for ``copies`` stacked copies of the batch (copy-major rows)."""
    return NoiseTrajectory(
        noise.x_T.repeat(copies, *([1] * (noise.x_T.ndim - 1))), noise.z.repeat(1, copies, *([1] * (noise.z.ndim - 2)))
    )


CONTRASTS = ("full", "matched", "signed")


def check_contrast(contrast: str) -> str:
    if contrast not in CONTRASTS:
        raise SilodiffError(f"unknown contrast {contrast!r}: use one of {CONTRASTS}")
    return contrast


class UnitInfluence:
    """Influence of every unit on generated images, by exact ablation of its complementary sub-ensemble.

    ``fit(ensemble, plan)`` groups units by complementary member set;
    ``score(noise, labels)`` returns τ, (n, U), and keeps ``images_`` (the factual
    run), ``counterfactuals_`` (n_subsets, n, c, h, w), ``loss_change_`` (n, U) when
    ``loss_change``, and ``seconds_``.
    """

    def __init__(
        self,
        *,
        sampler: str = "ddpm",
        steps: int = 50,
        eta: float = 0.0,
        batch_rows: int = 2048,
        loss_change: bool = False,
        grid: int = 10,
        draws: int = 2,
        contrast: str = "matched",
    ):
        self.contrast = check_contrast(contrast)
        self.sampler = sampler
        self.steps = steps
        self.eta = eta
        self.batch_rows = batch_rows
        self.loss_change = loss_change
        self.grid = grid
        self.draws = draws

    def fit(self, ensemble: EnsembleDenoiser, plan: EncodedPlan) -> UnitInfluence:
        if len(ensemble.members) != plan.codes.shape[1]:
            raise SilodiffError(f"the ensemble has {len(ensemble.members)} members, the plan {plan.codes.shape[1]}")
        self.ensemble_, self.plan_ = ensemble, plan
        # complementary member sets (1 − c_j), deduplicated: unit j → subset index
        complements = ~plan.codes  # (U, M)
        if not complements.any(1).all():
            raise SilodiffError("a unit was seen by every member: it has no complementary sub-ensemble")
        wanted = np.concatenate([complements, plan.codes]) if self.contrast == "matched" else complements
        self.subsets_, index = np.unique(wanted, axis=0, return_inverse=True)
        index = index.reshape(-1)
        self.unit_subset_ = index[: len(complements)]  # unit j → its complementary subset (never saw j)
        self.unit_seen_ = index[len(complements) :] if self.contrast == "matched" else None  # → the members that saw j
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "subsets_"):
            raise SilodiffError("call fit(ensemble, plan) first")

    def _run(
        self, weights: torch.Tensor, noise: NoiseTrajectory, labels: torch.Tensor | None, scheduler
    ) -> torch.Tensor:
        """Sample ``len(weights)`` sub-ensembles (rows of 0/1 member weights) on the same noise, (S, n, c, h, w)."""
        n = len(noise.x_T)
        out = []
        per_batch = max(1, self.batch_rows // n)
        for start in range(0, len(weights), per_batch):
            w = weights[start : start + per_batch]  # (s, M)
            s = len(w)
            rows_w = w.repeat_interleave(n, dim=0)  # (s·n, M), copy-major
            y = None if labels is None else labels.repeat(s)
            x = sample(
                self.ensemble_.with_weights(rows_w),
                None,
                scheduler,
                steps=self.steps,
                labels=y,
                eta=self.eta,
                noise=repeat_noise(noise, s),
            )
            out.append(x.view(s, n, *x.shape[1:]))
        return torch.cat(out)

    def score(self, noise: NoiseTrajectory, labels: torch.Tensor | None = None) -> np.ndarray:
        """τ_j(x̂_i) for every generated image i and unit j, (n, U)."""
        self._check_fitted()
        scheduler = make_scheduler(self.sampler)
        t0 = time.perf_counter()
        # 1. the factual run: all members, equal weights
        self.images_ = sample(
            self.ensemble_.with_weights(None),
            None,
            scheduler,
            steps=self.steps,
            labels=labels,
            eta=self.eta,
            noise=noise,
        )
        t_sample = time.perf_counter() - t0
        # 2. one resample per distinct complementary subset, batched (signed: loss contrasts, no resampling)
        if self.contrast == "signed":
            from .contrasts import loss_contrasts, member_gram

            timesteps, _ = timestep_grid(self.grid)
            gram = member_gram(self.ensemble_.members, self.images_, labels, timesteps, draws=self.draws)
            self.counterfactuals_ = None
            self.influence_ = loss_contrasts(gram, self.plan_.codes)["signed"]
        else:
            self.counterfactuals_ = self._run(
                torch.from_numpy(self.subsets_.astype(np.float32)), noise, labels, scheduler
            )
        if self.contrast == "full":
            distance = torch.stack([pixel_distance(self.images_, c) for c in self.counterfactuals_], dim=1)  # (n, S)
            self.influence_ = distance.numpy()[:, self.unit_subset_]  # (n, U)
        elif self.contrast == "matched":
            without, seen = self.counterfactuals_[self.unit_subset_], self.counterfactuals_[self.unit_seen_]  # (U, n, ...)
            self.influence_ = torch.stack([pixel_distance(a, b) for a, b in zip(seen, without)], dim=1).numpy()
        # 3. optional: the change of the image's denoising loss under each sub-ensemble
        if self.loss_change:
            change = loss_influence(
                self.ensemble_,
                self.subsets_,
                self.images_,
                labels,
                grid=self.grid,
                draws=self.draws,
                batch_rows=self.batch_rows,
            )  # (n, S)
            self.loss_change_ = change[:, self.unit_subset_]
        total = time.perf_counter() - t0
        self.seconds_ = {
            "sampling": round(t_sample, 3),
            "total": round(total, 3),
            "ratio_to_sampling": round(total / max(t_sample, 1e-9), 2),
            "resamples": 0 if self.counterfactuals_ is None else len(self.subsets_),
        }
        return self.influence_

    def radius(self) -> np.ndarray:
        """Counterfactual radius per image: the largest influence over units, (n,)."""
        return self.influence_.max(1)

    def top_k(self, k: int = 5) -> np.ndarray:
        """Indices of the k most influential units per image, most influential first, (n, k)."""
        return np.argsort(-self.influence_, axis=1, kind="stable")[:, :k]


def loss_influence(
    ensemble: EnsembleDenoiser,
    subsets: np.ndarray,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    grid: int = 10,
    draws: int = 2,
    batch_rows: int = 2048,
) -> np.ndarray:
    """``ℓ_S(x) − ℓ(x)``: change of each image's denoising loss when only the member subset S is kept, (n, n_subsets).

    Positive = the image is less likely without the members outside S (the likelihood route of METHODS.md §3).
    """
    timesteps, _ = timestep_grid(grid)
    base = loss_grid(ensemble.with_weights(None), images, labels, timesteps, draws=draws).mean(1)  # (n,)
    n, per_batch = len(images), max(1, batch_rows // len(images))
    change = []
    for start in range(0, len(subsets), per_batch):
        w = torch.from_numpy(subsets[start : start + per_batch].astype(np.float32))  # (s, M)
        sub = ensemble.with_weights(w.repeat_interleave(n, dim=0))
        ell = loss_grid(sub, images, labels, timesteps, draws=draws, copies=len(w)).mean(1)  # (s·n,)
        change.append(ell.view(len(w), n) - base)
    return torch.cat(change).T.numpy()


def first_order_influence(
    ensemble: EnsembleDenoiser,
    plan: EncodedPlan,
    noise: NoiseTrajectory,
    labels: torch.Tensor | None = None,
    *,
    sampler: str = "ddpm",
    steps: int = 50,
    eta: float = 0.0,
    contrast: str = "matched",
) -> np.ndarray:
    """Predicted τ_j from the derivatives ∂x̂/∂w_m (one forward-mode pass over M copies of the batch), (n, U)."""
    if check_contrast(contrast) == "signed":
        raise SilodiffError("the signed contrast is linear in the codes, so it is its own first-order shortcut")
    M, n = len(ensemble.members), len(noise.x_T)
    scheduler = make_scheduler(sampler)
    primal = torch.ones(M * n, M)  # all members, weight 1 (normalised inside the ensemble)
    tangent = torch.eye(M).repeat_interleave(n, dim=0)  # copy m moves w_m only

    def run(w: torch.Tensor) -> torch.Tensor:
        y = None if labels is None else labels.repeat(M)
        return sample(
            ensemble.with_weights(w), None, scheduler, steps=steps, labels=y, eta=eta, noise=repeat_noise(noise, M)
        )

    _, dx = torch.func.jvp(run, (primal,), (tangent,))
    J = dx.view(M, n, -1)  # ∂x̂_i/∂w_m, (M, n, D)
    # x̂_{−j} − x̂ ≈ −Σ_m c_jm J_m; influence = ‖·‖₂ / 2 in [0, 1] units
    delta = -torch.einsum("um,mnd->nud", torch.from_numpy(plan.codes.astype(np.float32)), J)  # (n, U, D)
    scale = 2.0 if contrast == "matched" else 1.0  # Σ_m ∂x̂/∂w_m = 0, so x̂_{+j} − x̂_{−j} ≈ −2 (x̂_{−j} − x̂)
    return (scale * delta.norm(dim=-1) / 2).numpy()


def rank_agreement(predicted: np.ndarray, true: np.ndarray) -> float:
    """Mean over images of Spearman's ρ between two (n, U) influence matrices."""
    from scipy.stats import spearmanr

    rhos = [spearmanr(p, t).statistic for p, t in zip(predicted, true)]
    return float(np.nanmean(rhos))


def attribute_units(
    store,
    *,
    labels: Sequence[int | None] | None,
    seed: int,
    n: int | None = None,
    sampler: str = "ddpm",
    steps: int = 100,
    eta: float = 0.0,
    top_k: int = 5,
    loss_change: bool = True,
    first_order: bool = False,
    contrast: str = "matched",
) -> tuple[UnitInfluence, dict[str, Any]]:
    """Generate images from the store's encoded ensemble with ``seed`` and attribute them to units.

    ``labels`` as in ``attribute_generation`` (None entries = unconditional), or
    ``None`` with ``n`` for n unconditional images.
    """
    from .compartments import label_tensor
    from .encoded import load_ensemble

    plan, ensemble = load_ensemble(store)
    if labels is None:
        if not n:
            raise SilodiffError("give labels or n")
        labels = [None] * n
    y = label_tensor(labels, ensemble.num_classes)
    noise = NoiseTrajectory.draw((len(y), *ensemble.image_shape), steps, torch.Generator().manual_seed(seed))
    est = UnitInfluence(sampler=sampler, steps=steps, eta=eta, loss_change=loss_change, contrast=contrast)
    est.fit(ensemble, plan)
    tau = est.score(noise, y)
    top = est.top_k(min(top_k, len(plan.units)))
    summary: dict[str, Any] = {
        "plan": plan.hash,
        "members": plan.members,
        "unit": plan.unit,
        "units": len(plan.units),
        "seed": seed,
        "sampler": sampler,
        "steps": steps,
        "contrast": contrast,
        "seconds": est.seconds_,
        "images": [],
    }
    if first_order:
        t0 = time.perf_counter()
        predicted = first_order_influence(ensemble, plan, noise, y, sampler=sampler, steps=steps, eta=eta, contrast=contrast)
        summary["first_order"] = {
            "rank_agreement": round(rank_agreement(predicted, tau), 4),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    for i in range(len(y)):
        label = int(y[i])
        summary["images"].append(
            {
                "index": i,
                "label": None if label == ensemble.num_classes else label,
                "radius": round(float(tau[i].max()), 6),
                "top": [
                    {
                        "unit": plan.units[j],
                        "influence": round(float(tau[i, j]), 6),
                        "n_samples": len(plan.unit_ids[j]),
                        **({"loss_change": round(float(est.loss_change_[i, j]), 6)} if loss_change else {}),
                    }
                    for j in top[i]
                ],
            }
        )
    return est, summary
