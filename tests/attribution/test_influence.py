import numpy as np
import torch

from silodiff.attribution import UnitInfluence, attribute_units, first_order_influence, load_ensemble, rank_agreement
from silodiff.sampling import NoiseTrajectory, generate


def _noise(ens, n=3, steps=10, seed=0):
    return NoiseTrajectory.draw((n, *ens.image_shape), steps, torch.Generator().manual_seed(seed))


def test_influence_is_exact_ablation_with_the_same_noise(enc_store):
    plan, ens = load_ensemble(enc_store)
    labels = torch.tensor([1, 4, 7])
    est = UnitInfluence(steps=10, loss_change=True, contrast="full").fit(ens, plan)
    tau = est.score(_noise(ens), labels)
    assert tau.shape == (3, len(plan.units)) and (tau >= 0).all()
    # the factual run is what `generate` gives for the same seed
    ref, _ = generate(ens, 3, labels=labels, steps=10, seed=0)
    assert torch.allclose(est.images_, ref, atol=1e-5)
    # unit j's counterfactual is a plain resample with only the members that never saw j
    j = 5
    sub = ens.subset(plan.never_saw(j))
    x_j, _ = generate(sub, 3, labels=labels, steps=10, seed=0)
    expected = ((est.images_ - x_j) / 2).flatten(1).norm(dim=1).numpy()
    assert np.allclose(tau[:, j], expected, atol=1e-4)
    # deterministic, radius and top-k
    again = (
        UnitInfluence(steps=10, batch_rows=7, contrast="full").fit(ens, plan).score(_noise(ens), labels)
    )  # other batching, same numbers
    assert np.allclose(again, tau, atol=1e-4)
    assert np.allclose(est.radius(), tau.max(1))
    top = est.top_k(4)
    assert (np.diff(np.take_along_axis(tau, top, 1), axis=1) <= 0).all() and (top[:, 0] == tau.argmax(1)).all()
    assert est.loss_change_.shape == tau.shape and np.isfinite(est.loss_change_).all()


def test_units_sharing_a_complement_share_one_resample(enc_store):
    plan, ens = load_ensemble(enc_store)
    plan.codes = np.concatenate([plan.codes, plan.codes[:2]])  # two more units with known codes
    plan.units = plan.units + ["dup-a", "dup-b"]
    plan.unit_ids = plan.unit_ids + [plan.unit_ids[0], plan.unit_ids[1]]
    est = UnitInfluence(steps=5, contrast="full").fit(ens, plan)
    assert len(est.subsets_) == len(plan.units) - 2
    tau = est.score(_noise(ens, n=2, steps=5), None)
    assert np.array_equal(tau[:, -2:], tau[:, :2])
    assert est.seconds_["resamples"] == len(plan.units) - 2


def test_first_order_shortcut_tracks_the_ablation(enc_store):
    plan, ens = load_ensemble(enc_store)
    noise, labels = _noise(ens, n=2, steps=8), torch.tensor([2, 3])
    true = UnitInfluence(steps=8).fit(ens, plan).score(noise, labels)
    predicted = first_order_influence(ens, plan, noise, labels, steps=8)
    assert predicted.shape == true.shape and np.isfinite(predicted).all()
    assert -1 <= rank_agreement(predicted, true) <= 1
    assert rank_agreement(true, true) == 1.0
    # Σ_m ∂x̂/∂w_m = 0 (weights are normalised), so the matched prediction is twice the full one
    full = first_order_influence(ens, plan, noise, labels, steps=8, contrast="full")
    assert np.allclose(predicted, 2 * full, rtol=1e-5)


def test_attribute_units_summary(enc_store):
    est, summary = attribute_units(enc_store, labels=[0, None], seed=2, steps=6, top_k=3)
    assert [im["label"] for im in summary["images"]] == [0, None]
    for i, im in enumerate(summary["images"]):
        assert len(im["top"]) == 3 and im["radius"] == im["top"][0]["influence"]
        assert im["radius"] == round(float(est.influence_[i].max()), 6)


def test_matched_contrast_is_the_seen_half_against_the_unseen_half(enc_store):
    plan, ens = load_ensemble(enc_store)
    labels = torch.tensor([1, 4, 7])
    est = UnitInfluence(steps=10, contrast="matched").fit(ens, plan)
    tau = est.score(_noise(ens), labels)
    full = UnitInfluence(steps=10, contrast="full").fit(ens, plan).score(_noise(ens), labels)
    assert tau.shape == full.shape and not np.allclose(tau, full)
    j = 3
    saw = np.flatnonzero(plan.codes[j])
    assert len(saw) == plan.codes.shape[1] // 2 and not set(saw) & set(plan.never_saw(j))
    x_seen, _ = generate(ens.subset(saw), 3, labels=labels, steps=10, seed=0)
    x_unseen, _ = generate(ens.subset(plan.never_saw(j)), 3, labels=labels, steps=10, seed=0)
    assert np.allclose(tau[:, j], ((x_seen - x_unseen) / 2).flatten(1).norm(dim=1).numpy(), atol=1e-4)


def test_unknown_contrast_is_an_error():
    import pytest

    from silodiff.errors import SilodiffError

    with pytest.raises(SilodiffError, match="unknown contrast"):
        UnitInfluence(contrast="half")
