"""Loss contrasts of an encoded ensemble from the members' Gram matrix."""

from __future__ import annotations

import numpy as np
import torch

from silodiff.attribution import UnitInfluence, load_ensemble
from silodiff.attribution.contrasts import loss_contrasts, member_gram, subset_losses
from silodiff.attribution.ensemble import EnsembleDenoiser
from silodiff.nn.denoisers import MLPDenoiser
from silodiff.sampling import NoiseTrajectory
from silodiff.training import loss_grid


def members(k: int = 4):
    torch.manual_seed(0)
    return [MLPDenoiser(hidden=16, depth=1).eval() for _ in range(k)]


def test_subset_losses_are_the_losses_of_the_weighted_ensembles():
    ms = members()
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 10])
    gram = member_gram(ms, x, y, [20, 400, 900], draws=2, seed=5)
    weights = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1], [2, 0, 1, 0]], dtype=float)
    got = subset_losses(gram, weights)  # (n, S)
    ens = EnsembleDenoiser(ms)
    for s, w in enumerate(weights):
        want = loss_grid(ens.with_weights(torch.tensor(w, dtype=torch.float32)), x, y, [20, 400, 900], draws=2,
                         generator=torch.Generator().manual_seed(5)).mean(1)
        np.testing.assert_allclose(got[:, s], want.numpy(), rtol=1e-5)


def test_signed_contrast_is_linear_in_the_code():
    ms = members(6)
    x = torch.randn(2, 1, 8, 8)
    gram = member_gram(ms, x, None, [100, 700], draws=1)
    codes = np.array([[1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 1, 0], [1, 0, 0, 0, 1, 1]], dtype=bool)
    c = loss_contrasts(gram, codes)
    seen = subset_losses(gram, codes)
    without = subset_losses(gram, ~codes)
    np.testing.assert_allclose(c["signed"], without - seen)
    np.testing.assert_allclose(c["matched"], np.abs(c["signed"]))
    g1 = gram.sum(2).numpy()
    M = codes.shape[1]
    linear = 4 / M**2 * (g1.sum(1, keepdims=True) - 2 * g1 @ codes.T.astype(float))
    np.testing.assert_allclose(c["signed"], linear, rtol=1e-9, atol=1e-12)


def test_unit_influence_signed_contrast_on_an_encoded_ensemble(enc_store):
    plan, ens = load_ensemble(enc_store)
    noise = NoiseTrajectory.draw((2, *ens.image_shape), 4, torch.Generator().manual_seed(0))
    est = UnitInfluence(steps=4, contrast="signed", grid=3, draws=1).fit(ens, plan)
    tau = est.score(noise, torch.tensor([0, 1]))
    assert tau.shape == (2, len(plan.units)) and est.counterfactuals_ is None
    assert (tau > 0).any() and (tau < 0).any()  # signed, unlike the distances
    assert est.seconds_["resamples"] == 0
