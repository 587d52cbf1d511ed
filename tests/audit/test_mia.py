"""Membership inference: metric parity, an overfit model leaks, an untrained one does not,
and the attacks work unchanged on a composed model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from silodiff.audit.mia import ATTACKS, PIA, LossAttack, SecMI, evaluate_attack, make_attack, roc_points, run_attack
from silodiff.composition import ComposedDenoiser, UniformRouter
from silodiff.errors import SilodiffError


def _brute_force(s_in: np.ndarray, s_out: np.ndarray) -> dict[str, float]:
    """AUC as P(member score > non-member score) + ½ P(tie); accuracy and TPR by trying every threshold."""
    diff = s_in[:, None] - s_out[None, :]
    auc = float(((diff > 0) + 0.5 * (diff == 0)).mean())
    best_acc, tpr_low = 0.0, 0.0
    for tau in np.r_[np.inf, np.unique(np.r_[s_in, s_out])]:
        tpr, fpr = float((s_in >= tau).mean()), float((s_out >= tau).mean())
        best_acc = max(best_acc, (tpr * len(s_in) + (1 - fpr) * len(s_out)) / (len(s_in) + len(s_out)))
        if fpr <= 0.01:
            tpr_low = max(tpr_low, tpr)
    return {"auc": auc, "best_accuracy": best_acc, "tpr_at_1pct_fpr": tpr_low}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_attack_parity_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    s_in = np.round(rng.normal(0.8, 1, 150), 1)  # rounding makes ties
    s_out = np.round(rng.normal(0, 1, 230), 1)
    got, ref = evaluate_attack(s_in, s_out), _brute_force(s_in, s_out)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    fpr, tpr = roc_points(s_in, s_out)
    assert fpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)


def test_evaluate_attack_extremes():
    perfect = evaluate_attack([5, 6, 7], [1, 2, 3])
    assert perfect == {"auc": 1.0, "best_accuracy": 1.0, "tpr_at_1pct_fpr": 1.0, "n_members": 3, "n_nonmembers": 3}
    assert evaluate_attack([1, 2, 3], [5, 6, 7])["auc"] == 0.0
    with pytest.raises(SilodiffError):
        evaluate_attack([], [1.0])
    with pytest.raises(SilodiffError):
        evaluate_attack([np.nan], [1.0])


@pytest.mark.parametrize("name", list(ATTACKS))
def test_overfit_model_leaks_membership(name, overfit_model, digits_split):
    """16 memorised images vs 16 fresh ones: under no leak the AUC's std is ≈ 0.10, so > 0.9 is a 4σ signal."""
    members, nonmembers = digits_split
    result = run_attack(name, overfit_model, members, nonmembers.subset(nonmembers.sample_ids[:16]))
    assert result["auc"] > 0.9
    assert result["best_t"] in result["per_t"] and set(result["per_t"]) == set(result["timesteps"])
    assert result["tpr_at_1pct_fpr"] > 0.2


@pytest.mark.parametrize("name", list(ATTACKS))
def test_untrained_model_does_not_leak(name, untrained_model, digits_split):
    """An untrained model is independent of a random split, so member and non-member scores are exchangeable
    and the AUC follows the Mann-Whitney null: mean ½, std √((n₁+n₂+1)/(12 n₁ n₂)) = 0.029 for 200 + 200.
    Every t of the grid must stay within 4 std (0.115): a false alarm has probability < 1e-3 over the grid."""
    _, held_out = digits_split
    a, b = held_out.subset(held_out.sample_ids[:200]), held_out.subset(held_out.sample_ids[200:400])
    result = run_attack(name, untrained_model, a, b)
    for t, metrics in result["per_t"].items():
        assert abs(metrics["auc"] - 0.5) < 0.115, (t, metrics["auc"])


def test_composed_model_is_attacked_like_a_single_one(tiny_fit, digits_split):
    """Two compartments of 8 images each, composed: the served model still leaks its members."""
    members, nonmembers = digits_split
    ids = members.sample_ids
    halves = [members.subset(ids[:8]), members.subset(ids[8:])]
    models = {f"c{k}": tiny_fit(h, steps=300, seed=k) for k, h in enumerate(halves)}
    counts = torch.stack([torch.bincount(h.labels, minlength=10) for h in halves]).float()
    composed = ComposedDenoiser(models, UniformRouter(), counts)
    seen = set(members.labels.tolist())  # the composition refuses labels no compartment holds
    out = nonmembers.where([int(y) in seen for y in nonmembers.labels])
    out = out.subset(out.sample_ids[:16])
    result = run_attack("loss", composed, members, out)
    assert result["auc"] > 0.75
    # a composed model's score does not depend on how the rows are batched (each batch is a fresh query)
    attack = LossAttack(timesteps=(50,), batch_size=5).fit(composed)
    whole = LossAttack(timesteps=(50,), batch_size=64).fit(composed)
    x, y = members.x(), members.labels
    np.testing.assert_allclose(attack.score(x, y)[:5], whole.score(x[:5], y[:5]), rtol=1e-5)


def test_estimator_shape_and_calibration(overfit_model, digits_split):
    members, nonmembers = digits_split
    out = nonmembers.subset(nonmembers.sample_ids[:16])
    attack = PIA(timesteps=(10, 100, 500))
    assert attack.timesteps == (10, 100, 500) and not hasattr(attack, "model_")  # __init__ only stores
    attack.fit(overfit_model, members, out)
    assert attack.timestep_ == attack.calibration_["best_t"]
    scores = attack.score(members.x(), members.labels)
    assert scores.shape == (16,) and scores.dtype == np.float64
    assert attack.score_grid(members.x(), members.labels).shape == (16, 3)
    # deterministic: the same call gives the same scores
    np.testing.assert_array_equal(scores, attack.score(members.x(), members.labels))


def test_secmi_reconstructs_exactly_for_a_perfect_denoiser():
    """If ε_θ returns the ε that produced x_t from a fixed x_0 (an exact point-mass model), the DDIM
    inversion and the step back are exact, so SecMI's error is ≈ 0 at every t."""
    from silodiff.training import noise_scheduler

    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    abar = noise_scheduler().alphas_cumprod

    class PointMass(torch.nn.Module):
        def forward(self, x, t, labels=None):
            a = abar[t].view(-1, 1, 1, 1)
            return (x - a.sqrt() * x0[: len(x)]) / (1 - a).sqrt()

    scores = SecMI(timesteps=(20, 100)).fit(PointMass()).score_grid(x0, None)
    assert np.abs(scores).max() < 1e-8


def test_bad_input_is_loud(untrained_model):
    with pytest.raises(SilodiffError, match="unknown attack"):
        make_attack("nope")
    with pytest.raises(SilodiffError, match="multiples"):
        SecMI(timesteps=(15,)).fit(untrained_model)
    with pytest.raises(SilodiffError, match="timesteps"):
        LossAttack(timesteps=(0, 1000)).fit(untrained_model)
    with pytest.raises(SilodiffError, match="fit"):
        LossAttack().score(torch.zeros(2, 1, 8, 8))
