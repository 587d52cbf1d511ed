"""The linear datamodeling score (LDS; Park et al. 2023, Zheng et al. 2024).

For S retrained subsets (``masks[s, u]`` = subset s kept unit u) and a target per
subset and test image (``target[s, i]``, e.g. −denoising loss of image i under
the model trained on subset s), the attribution scores τ (n, U) predict

    ĝ_s(i) = Σ_{u ∈ S_s} τ_iu,

and the LDS of image i is Spearman's ρ over the S subsets between ĝ(i) and
target(i).  We report the mean over images, with a percentile bootstrap 95 %
interval over images (images resampled with replacement, a fixed seed).
"""

from __future__ import annotations

import numpy as np

from ..errors import SilodiffError


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks along axis 0 (ties share their mean rank), as Spearman's ρ needs."""
    from scipy.stats import rankdata

    return rankdata(a, axis=0)


def per_image_spearman(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman's ρ per column of two (S, n) arrays, (n,); NaN where a column is constant."""
    if pred.shape != target.shape:
        raise SilodiffError(f"predictions {pred.shape} and targets {target.shape} differ in shape")
    a, b = _ranks(pred), _ranks(target)
    a, b = a - a.mean(0), b - b.mean(0)
    den = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1), np.nan)


def bootstrap_interval(values: np.ndarray, *, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of ``values`` (NaNs dropped)."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (reps, len(v)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def linear_datamodeling_score(scores: np.ndarray, masks: np.ndarray, target: np.ndarray, *, reps: int = 2000, seed: int = 0) -> dict:
    """LDS of ``scores`` (n, U) against ``target`` (S, n) over ``masks`` (S, U): mean, 95 % interval, per image."""
    scores, masks, target = np.asarray(scores, float), np.asarray(masks, bool), np.asarray(target, float)
    if scores.ndim != 2 or masks.ndim != 2 or target.ndim != 2:
        raise SilodiffError("scores (n, U), masks (S, U) and target (S, n) must be 2-d")
    if masks.shape[1] != scores.shape[1] or target.shape != (masks.shape[0], scores.shape[0]):
        raise SilodiffError(
            f"shapes disagree: scores {scores.shape}, masks {masks.shape}, target {target.shape}"
        )
    rho = per_image_spearman(masks.astype(float) @ scores.T, target)  # (n,)
    lo, hi = bootstrap_interval(rho, reps=reps, seed=seed)
    return {"mean": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"), "ci95": [lo, hi],
            "images": int(np.isfinite(rho).sum()), "per_image": rho}
