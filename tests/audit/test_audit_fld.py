"""Quality metric: Fréchet distance parity with closed forms and an independent
route to the matrix square root; FLD of a set with itself; class accuracy; the
cached FLD network."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy import linalg

from silodiff.audit import FEATURE_NET, class_accuracy, feature_net, features, fld, frechet_distance
from silodiff.audit.quality import evaluate_quality
from silodiff.errors import SilodiffError


def _exact_diagonal(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """8 points whose sample mean is ``mean`` and sample covariance exactly diag(std²).

    Columns 1..d of a Hadamard matrix are ±1, zero-mean and orthogonal, so their
    sample covariance (ddof = 1) is (8/7)·I."""
    h = linalg.hadamard(8)[:, 1 : len(mean) + 1].astype(float)  # (8, d)
    return mean + h * np.sqrt(7 / 8) * std


def test_frechet_distance_of_diagonal_gaussians_in_closed_form():
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 1.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    a, b = _exact_diagonal(mu_a, sd_a), _exact_diagonal(mu_b, sd_b)
    np.testing.assert_allclose(np.cov(a, rowvar=False), np.diag(sd_a**2), atol=1e-12)
    # diagonal case: FD = ‖μ_a − μ_b‖² + Σ_k (σ_a,k − σ_b,k)²
    expected = ((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_the_symmetric_square_root_on_random_covariances():
    """Tr((Σ_a Σ_b)^{1/2}) = Tr((Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}), computed by eigendecomposition."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    b = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = vecs @ np.diag(np.sqrt(vals)) @ vecs.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(inner.clip(0)).sum()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    # and scipy's sqrtm of the product, the route pytorch-fid takes
    root = linalg.sqrtm(cov_a @ cov_b).real
    assert np.trace(root) == pytest.approx(np.sqrt(inner.clip(0)).sum(), rel=1e-7)


def test_frechet_distance_of_a_set_with_itself_is_zero_even_when_rank_deficient():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 3))
    assert abs(frechet_distance(a, a)) < 1e-8
    flat = np.hstack([a, np.zeros((10, 2))])  # singular covariances take the regularised path
    assert abs(frechet_distance(flat, flat)) < 1e-4
    with pytest.raises(SilodiffError, match="at least two"):
        frechet_distance(a[:1], a)


class FixedPredictions(torch.nn.Module):
    """Predicts class round(x[0, 0, 0]) with one-hot logits, features = the flattened image."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].round().long(), 10).float()

    def features(self, x):
        return x.flatten(1)


def test_class_accuracy_on_known_predictions():
    predicted = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    images = torch.zeros(8, 1, 2, 2)
    images[:, 0, 0, 0] = predicted.float()
    labels = torch.tensor([0, 1, 2, 3, 9, 9, 9, 9])
    assert class_accuracy(FixedPredictions(), images, labels) == pytest.approx(0.5)
    assert class_accuracy(FixedPredictions(), images, predicted) == 1.0


def test_fld_of_a_set_with_itself_and_a_shift(trained_store):
    net = feature_net(trained_store, progress=False)
    real = trained_store.dataset().x()
    halves = fld(net, real[:100], real[100:])  # two samples of one distribution: small but > 0
    assert abs(fld(net, real, real)) < 1e-6 * halves
    blank = -torch.ones_like(real) + 0.01 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    assert fld(net, blank, real) > 10 * halves  # near-empty images are far from digits
    f = features(net, real)
    assert f.shape == (len(real), net.features(real[:1]).shape[1]) and f.dtype == np.float64
    # FLD in the features of an exact feature map equals the Fréchet distance of the pixels
    a, b = real[:100], real[100:]
    assert fld(FixedPredictions(), a, b) == pytest.approx(frechet_distance(a.flatten(1).double().numpy(),
                                                                            b.flatten(1).double().numpy()))


def test_feature_net_is_cached(trained_store, monkeypatch):
    (row,) = trained_store.active("feature-net", FEATURE_NET)
    everything = {r["sample_id"] for r in trained_store.catalog.sample_rows()}
    assert set(trained_store.catalog.lineage(row["hash"])) == everything
    fld_module = sys.modules["silodiff.audit.frechet"]  # the package attribute ``fld`` is the function
    monkeypatch.setattr(fld_module, "train", lambda *a, **k: pytest.fail("the cached FLD network was retrained"))
    assert feature_net(trained_store, progress=False).artifact_hash == row["hash"]


def test_evaluate_quality(trained_store):
    result = evaluate_quality(trained_store, "paragon", n=20, steps=3, progress=False)
    assert result["model"] == "paragon" and result["n"] == 20
    assert result["fld"] > 0 and 0 <= result["class_accuracy"] <= 1
    again = evaluate_quality(trained_store, "paragon", n=20, steps=3, progress=False)
    assert again["fld"] == result["fld"]  # seeded
    composed = evaluate_quality(trained_store, "composed", router="uniform", n=20, steps=3, progress=False)
    assert composed["router"] == "uniform" and np.isfinite(composed["fld"])
