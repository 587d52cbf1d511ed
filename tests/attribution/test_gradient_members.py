"""D-TRAK / TRAK over several models: one member is the single model, shapes, a bad mix, the rights filter."""

from __future__ import annotations

import pytest
import torch

from silodiff.attribution.gradient import GradientAttribution, _Kernel
from silodiff.attribution.gradient_units import attribution_models
from silodiff.data import load_digits
from silodiff.errors import SilodiffError
from silodiff.nn.denoisers import MLPDenoiser
from silodiff.training import TrainConfig, new_state, train


def trained(data, seed: int) -> MLPDenoiser:
    torch.manual_seed(seed)
    model = MLPDenoiser(hidden=16, depth=1)
    config = TrainConfig(epochs=2, batch_size=16, seed=seed)
    train(new_state(model, config), data, config, progress=False)
    return model


@pytest.fixture(scope="module")
def halves():
    """24 digits, two members trained on disjoint halves of them."""
    data = load_digits("single", limit=24)
    ids = list(data.sample_ids)
    return data, [trained(data.subset(ids[:12]), 0), trained(data.subset(ids[12:]), 1)]


def test_averaging_over_one_member_gives_the_single_model_scores_exactly(halves):
    data, (model, _) = halves
    x, y = data.x(), data.labels
    test_x, test_y = x[:5] + 0.05, y[:5]
    units = [[i, i + 1] for i in range(0, 24, 2)]
    one = GradientAttribution(proj_dim=64, timesteps=3, lam=0.1).fit(model, x, y, units=units)
    listed = GradientAttribution(proj_dim=64, timesteps=3, lam=0.1).fit([model], x, y, units=units)
    a, b = one.score(test_x, test_y), listed.score(test_x, test_y)
    assert (a == b).all() and torch.equal(one.sample_scores_, listed.sample_scores_)
    # the single-model formula: τ = φ (ΦᵀΦ + λ s I)⁻¹ Φᵀ, s = mean eigenvalue (d > N: the trace / N)
    phi, z = one.kernels_[0].features.double(), one.test_features_[0].double()
    s = float(phi.pow(2).sum()) / len(phi)
    ref = z @ torch.linalg.solve(phi.T @ phi + 0.1 * s * torch.eye(64, dtype=torch.float64), phi.T)
    torch.testing.assert_close(one.sample_scores_, ref, rtol=1e-6, atol=1e-9)


def test_members_on_disjoint_halves_score_every_unit_and_average_their_normalised_kernels(halves):
    data, members = halves
    x, y = data.x(), data.labels
    test_x, test_y = x[:4].flip(-1), y[:4]
    est = GradientAttribution(proj_dim=32, timesteps=2, lam=0.05).fit(members, x, y)
    tau = est.score(test_x, test_y)
    # every member gives features for all 24 training images, seen or not, and for every test image
    assert [tuple(k.features.shape) for k in est.kernels_] == [(24, 32), (24, 32)]
    assert [tuple(f.shape) for f in est.test_features_] == [(4, 32), (4, 32)]
    assert tau.shape == (4, 24) and est.stored_bytes() == 2 * est.kernels_[0].nbytes()
    assert not torch.allclose(est.kernels_[0].features, est.kernels_[1].features)
    # the mean of each member's own kernel-normalised scores (λ relative to that member's mean eigenvalue)
    singles = [GradientAttribution(proj_dim=32, timesteps=2, lam=0.05).fit(m, x, y) for m in members]
    mean = sum(e.score(test_x, test_y) for e in singles) / 2
    assert singles[0].kernels_[0].scale != pytest.approx(singles[1].kernels_[0].scale, rel=1e-3)
    torch.testing.assert_close(torch.as_tensor(tau), torch.as_tensor(mean), rtol=1e-6, atol=1e-9)
    # the normalisation: a member whose features are 1000× larger gets the same scores, so it cannot dominate
    k = est.kernels_[1]
    big = _Kernel(k.features.double() * 1000)
    torch.testing.assert_close(
        big.scores(est.test_features_[1] * 1000, 0.05), k.scores(est.test_features_[1], 0.05), rtol=1e-5, atol=1e-6
    )


def test_a_bad_mix_of_members_is_refused(halves):
    data, (model, _) = halves
    x, y = data.x(), data.labels
    cases = [
        ([], "at least one model"),
        ([model, MLPDenoiser(hidden=8, depth=1)], "share one projection"),
        ([model, MLPDenoiser(image_shape=(1, 4, 4), hidden=16, depth=1)], "data shape"),
        ([model, MLPDenoiser(num_classes=3, hidden=16, depth=1)], "data shape"),
    ]
    for members, message in cases:
        with pytest.raises(SilodiffError, match=message) as err:
            GradientAttribution(proj_dim=8, timesteps=2).fit(members, x, y)
        assert "\n" not in str(err.value)
    est = GradientAttribution(proj_dim=8, timesteps=2).fit([model, model], x, y)
    with pytest.raises(SilodiffError, match="2 members"):
        est.sample_scores(torch.zeros(1, 8))


def test_the_compartments_rights_filter_drops_the_units_of_other_compartments(comp_store):
    rows = comp_store.catalog.sample_rows()
    sources = sorted({r["source"] for r in rows})
    of = {s: {r["sample_id"] for r in rows if r["source"] == s} for s in sources}
    model, members, ids, what = attribution_models(comp_store, "compartments", allowed=sources[:2])
    assert len(members) == 2 and set(ids) == of[sources[0]] | of[sources[1]] and not set(ids) & of[sources[2]]
    assert "scores averaged" in what
    _, members, ids, _ = attribution_models(comp_store, "compartments", allowed=sources[2:])
    assert len(members) == 1 and set(ids) == of[sources[2]]
    with pytest.raises(SilodiffError, match="encoded ensemble"):
        attribution_models(comp_store, "ensemble")
    with pytest.raises(SilodiffError, match="unknown models"):
        attribution_models(comp_store, "some")
