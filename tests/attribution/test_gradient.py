"""D-TRAK / TRAK features: finite differences, seeded projections, a planted duplicate, the store route."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from silodiff.attribution.gradient import GradientAttribution, make_projector
from silodiff.data import load_digits
from silodiff.errors import SilodiffError
from silodiff.nn.denoisers import MLPDenoiser
from silodiff.training import TrainConfig, new_state, train


def tiny(hidden: int = 8) -> MLPDenoiser:
    torch.manual_seed(0)
    return MLPDenoiser(hidden=hidden, depth=1)


@pytest.mark.parametrize("method", ["dtrak", "trak"])
def test_per_sample_gradients_match_finite_differences(method):
    model = tiny().double()
    est = GradientAttribution(method=method, timesteps=3, proj_dim=4, seed=1)
    est._setup(model)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 4, 10])  # 10 = the null label
    g = est.gradients(x, y)  # vmap(grad) over the batch, (3, P)
    assert est.vectorised_ and g.shape == (3, est.grad_dim_)
    v = {k: torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(3)) for k, p in est.params_.items()}
    direction = torch.cat([t.flatten() for t in v.values()])
    h = 1e-6
    for i in range(3):
        plus = est._f({k: p + h * v[k] for k, p in est.params_.items()}, x[i], y[i])
        minus = est._f({k: p - h * v[k] for k, p in est.params_.items()}, x[i], y[i])
        fd = float((plus - minus) / (2 * h))
        assert float(g[i] @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_the_loop_fallback_gives_the_vmap_numbers():
    model = tiny()
    est = GradientAttribution(proj_dim=4, timesteps=2)
    est._setup(model)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    vmapped = est.gradients(x, y)
    est.vectorised_ = False
    torch.testing.assert_close(est.gradients(x, y), vmapped, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["torch", "traker"])
def test_projection_is_seeded_and_reproducible(kind):
    if kind == "traker":
        pytest.importorskip("trak.projectors", reason="the traker package is not installed")
    g = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    a, name = make_projector(300, 40, seed=7, kind=kind)
    b, _ = make_projector(300, 40, seed=7, kind=kind)
    c, _ = make_projector(300, 40, seed=8, kind=kind)
    assert name == ("torch" if kind == "torch" else "traker.BasicProjector")
    pa = a.project(g, model_id=0)
    torch.testing.assert_close(pa, b.project(g, model_id=0))
    torch.testing.assert_close(pa[:2], a.project(g[:2], model_id=0))  # row-wise: chunking does not matter
    assert not torch.allclose(pa, c.project(g, model_id=0))
    # a Gaussian projection keeps inner products on average: E[PᵀPa·b]/d = a·b
    big, _ = make_projector(300, 4000, seed=1, kind=kind)
    p = big.project(g, model_id=0) / 4000**0.5
    assert float(p[0] @ p[0]) == pytest.approx(float(g[0] @ g[0]), rel=0.1)


def test_features_are_reproducible_across_estimators_and_batches():
    model, x = tiny(), torch.randn(6, 1, 8, 8)
    y = torch.arange(6)
    f1 = GradientAttribution(proj_dim=16, timesteps=2, seed=3, batch_size=4).fit(model, x, y).features(x, y)
    f2 = GradientAttribution(proj_dim=16, timesteps=2, seed=3, batch_size=2).fit(model, x, y).features(x, y)
    f3 = GradientAttribution(proj_dim=16, timesteps=2, seed=4).fit(model, x, y).features(x, y)
    torch.testing.assert_close(f1, f2, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(f1, f3)


def test_dtrak_ranks_a_planted_duplicate_first():
    data = load_digits("single", limit=40)
    torch.manual_seed(0)
    model = MLPDenoiser(hidden=32, depth=1)
    config = TrainConfig(epochs=20, batch_size=16)
    train(new_state(model, config), data, config, progress=False)
    x, y = data.x(), data.labels
    # units: pairs of samples, except the planted one on its own (unit 0 = sample 7)
    units = [[7]] + [[i, i + 1] for i in range(0, 40, 2) if i not in (6,)] + [[6]]
    for method in ("dtrak", "trak"):
        est = GradientAttribution(method=method, proj_dim=256, timesteps=5).fit(model, x, y, units=units)
        jitter = x[7:8].clone()
        jitter[0, 0, 0, 0] += 2 / 255  # a near-identical copy of training sample 7
        tau = est.score(jitter, y[7:8])
        assert tau.shape == (1, len(units)) and est.top_k(1)[0, 0] == 0, (method, tau[0].argsort()[::-1][:3])
        # unit scores are sums of sample scores
        np.testing.assert_allclose(tau[0, 1], est.sample_scores_[0, [0, 1]].sum().item(), rtol=1e-6)


def test_lambda_is_chosen_on_the_tuning_split_it_is_given():
    model, x = tiny(), torch.randn(12, 1, 8, 8)
    y = torch.arange(12) % 10
    est = GradientAttribution(proj_dim=8, timesteps=2).fit(model, x, y)
    tune_x, tune_y = torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4])
    masks = np.random.default_rng(0).random((10, 12)) < 0.5
    target = masks.astype(float) @ est.unit_scores(est.sample_scores(est.features(tune_x, tune_y), 1.0)).T
    assert est.select_lambda(tune_x, tune_y, masks, target, lambdas=(1e-4, 1.0, 1e3)) == 1.0
    assert est.lambda_scan_[1.0] == pytest.approx(1.0)


def test_bad_settings_are_refused():
    with pytest.raises(SilodiffError, match="unknown gradient method"):
        GradientAttribution(method="tracin")
    with pytest.raises(SilodiffError, match="projection dimension"):
        GradientAttribution(proj_dim=0)
    with pytest.raises(SilodiffError, match="call fit"):
        GradientAttribution().score(torch.zeros(1, 1, 8, 8))
    with pytest.raises(SilodiffError, match="unit"):
        GradientAttribution(proj_dim=4).fit(tiny(), torch.zeros(2, 1, 8, 8), units=[[0], [5]])
