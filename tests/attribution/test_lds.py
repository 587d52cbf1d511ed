"""The LDS code against rank correlations computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from silodiff.attribution.lds import bootstrap_interval, per_image_spearman
from silodiff.attribution.lds import linear_datamodeling_score as lds
from silodiff.errors import SilodiffError


def spearman_by_formula(a: np.ndarray, b: np.ndarray) -> float:
    """1 − 6 Σ d² / (n (n² − 1)) for tie-free data (independent of the code under test)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    n = len(a)
    return 1 - 6 * float(((ra - rb) ** 2).sum()) / (n * (n**2 - 1))


def test_lds_returns_the_known_rank_correlation():
    rng = np.random.default_rng(0)
    S, U, n = 40, 30, 5
    masks = rng.random((S, U)) < 0.5
    scores = rng.normal(size=(n, U))
    pred = masks.astype(float) @ scores.T  # (S, n): what the LDS correlates
    # image 0: a monotone transform (ρ = 1); image 1: reversed (ρ = −1); images 2..4: pairs of ranks swapped
    target = np.empty((S, n))
    target[:, 0] = np.exp(pred[:, 0])
    target[:, 1] = -3 * pred[:, 1]
    expected = [1.0, -1.0]
    for i, swaps in zip(range(2, n), (2, 5, 12)):
        order = np.argsort(pred[:, i])
        ranks = np.empty(S)
        ranks[order] = np.arange(S)
        for k in range(swaps):  # swap ranks 3k and 3k+2
            a, b = np.flatnonzero(ranks == 3 * k)[0], np.flatnonzero(ranks == 3 * k + 2)[0]
            ranks[a], ranks[b] = ranks[b], ranks[a]
        target[:, i] = ranks * 0.1 + 7
        expected.append(spearman_by_formula(pred[:, i], target[:, i]))
    assert expected[2] > expected[3] > expected[4] > 0.5  # the construction gives distinct, known values
    r = lds(scores, masks, target)
    np.testing.assert_allclose(r["per_image"], expected, atol=1e-12)
    assert r["mean"] == pytest.approx(np.mean(expected))
    lo, hi = r["ci95"]
    assert lo <= r["mean"] <= hi and r["images"] == n


def test_constant_columns_are_nan_and_dropped():
    rho = per_image_spearman(np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]), np.array([[1.0, 5.0], [2.0, 4.0], [4.0, 3.0]]))
    assert rho[0] == pytest.approx(1.0) and np.isnan(rho[1])


def test_bootstrap_interval_shrinks_with_more_images_and_is_seeded():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.3, 0.2, 20), rng.normal(0.3, 0.2, 2000)
    lo_s, hi_s = bootstrap_interval(small)
    lo_l, hi_l = bootstrap_interval(large)
    assert hi_l - lo_l < (hi_s - lo_s) / 4 and lo_l < 0.3 < hi_l
    assert bootstrap_interval(small) == (lo_s, hi_s)


def test_shapes_are_checked():
    with pytest.raises(SilodiffError, match="shapes disagree"):
        lds(np.zeros((3, 4)), np.zeros((5, 4), bool), np.zeros((5, 2)))
