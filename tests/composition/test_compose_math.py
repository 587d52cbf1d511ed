"""Composition math against a closed form (METHODS.md §1, Golatkar et al. 2023).

Two toy compartments hold Gaussians on 1×2×2 "images", p_i = N(m_i, s² I), with
prior λ = (0.3, 0.7).  Under DDPM noising x_t | i ~ N(√ᾱ_t m_i, v_t I) with
v_t = ᾱ_t s² + 1 − ᾱ_t, so each compartment's exact noise predictor is

    ε_i(x_t, t) = √(1−ᾱ_t) (x_t − √ᾱ_t m_i) / v_t

and the exact composition weight is the posterior

    P(i | x_t) = λ_i N(x_t; √ᾱ_t m_i, v_t I) / Σ_j λ_j N(x_t; √ᾱ_t m_j, v_t I).

The routers are checked against that posterior along DDPM trajectories.
"""

from __future__ import annotations

import pytest
import torch

from silodiff.composition import ClassifierRouter, ComposedDenoiser, TrajectoryFilter, UniformRouter
from silodiff.composition.routers import log_label_prior, router_loss
from silodiff.data import SampleSet, to_uint8
from silodiff.errors import SilodiffError
from silodiff.nn import NoisyClassifier
from silodiff.nn.denoisers import Denoiser
from silodiff.sampling import make_scheduler, sample
from silodiff.training import TrainConfig, new_state, train

MEANS = [torch.tensor([[[0.4, -0.4], [0.4, -0.4]]]), torch.tensor([[[-0.4, 0.4], [-0.4, -0.4]]])]  # (1, 2, 2) each
S = 0.15
PRIOR = torch.tensor([0.3, 0.7])
COUNTS = torch.tensor([[30.0], [70.0]])  # (K, C = 1): the prior λ as label counts
STEPS, N = 50, 256


class GaussianDenoiser(Denoiser):
    """The exact ε-predictor of N(mean, s² I) under the DDPM schedule."""

    def __init__(self, mean: torch.Tensor, s: float):
        super().__init__()
        self.register_buffer("mean", mean)
        self.s = s
        self.abar = make_scheduler("ddpm").alphas_cumprod
        self.num_classes, self.image_shape = 0, tuple(mean.shape)

    def forward(self, x, t, labels=None):
        a = self.abar[torch.as_tensor(t).expand(len(x))].view(-1, 1, 1, 1)  # (b, 1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mean) / (a * self.s**2 + 1 - a)


def true_posterior(x: torch.Tensor, t: int) -> torch.Tensor:
    """P(i | x_t), (b, K)."""
    a = float(make_scheduler("ddpm").alphas_cumprod[t])
    v = a * S**2 + 1 - a
    log_lik = torch.stack([-(x - a**0.5 * m).flatten(1).pow(2).sum(1) / (2 * v) for m in MEANS], 1)
    return (log_lik + PRIOR.log()).softmax(1)


def run(router, seed: int = 0):
    """Sample N images with the composition; record (t, x_t, weights) at every step."""
    model = ComposedDenoiser({"a": GaussianDenoiser(MEANS[0], S), "b": GaussianDenoiser(MEANS[1], S)}, router, COUNTS)
    steps = []
    out = sample(model, (N, 1, 2, 2), make_scheduler("ddpm"), steps=STEPS,
                 generator=torch.Generator().manual_seed(seed),
                 callback=lambda info: steps.append((info["t"], info["x"].clone(), info["weights"].clone())))
    return out, steps


def mean_error(w: torch.Tensor, x: torch.Tensor, t: int) -> float:
    """Mean over images of the largest absolute weight error."""
    return float((w - true_posterior(x, t)).abs().max(1).values.mean())


def nearest_mean(images: torch.Tensor):
    """Distance of each image to the nearest compartment mean, and which one."""
    return torch.stack([(images - m).flatten(1).norm(dim=1) for m in MEANS], 1).min(1)


@pytest.fixture(scope="module")
def trajectory_run():
    return run(TrajectoryFilter())


def test_gaussian_denoiser_is_exact():
    """Sanity of the toy: ε_i equals −√(1−ᾱ) ∇log p_{i,t}, checked by autograd."""
    member = GaussianDenoiser(MEANS[0], S)
    x = torch.randn(4, 1, 2, 2, requires_grad=True)
    t = 300
    a = float(member.abar[t])
    log_p = -(x - a**0.5 * MEANS[0]).pow(2).sum() / (2 * (a * S**2 + 1 - a))
    (score,) = torch.autograd.grad(log_p, x)
    torch.testing.assert_close(member(x.detach(), t), -((1 - a) ** 0.5) * score)


def test_trajectory_filter_matches_the_true_posterior(trajectory_run):
    """Tolerances: per step, mean error < 0.01; over all (image, step) pairs the 99th
    percentile < 0.02 and the worst < 0.25.

    The filter is exact for exact models up to two effects: (1) it starts at λ
    although P(i | x_T) ≠ λ because ᾱ_T > 0 (≈ 0.002 at the first step); (2) DDPM's
    Gaussian reverse kernel with σ² = β̃_t is not the true reverse kernel, whose
    variance adds the spread of x_0 | x_t.  Measured over seeds 0–2: mean ≤ 0.002,
    99th percentile ≤ 0.008, worst 0.07–0.11 — a handful of images near the
    decision boundary at t ≈ 40–80, where the posterior commits fastest and the
    kernel mismatch is magnified.  Uniform weights miss by ≈ 0.3 at small t.
    """
    out, steps = trajectory_run
    assert len(steps) == STEPS
    per_image = torch.stack([(w - true_posterior(x, t)).abs().max(1).values for t, x, w in steps])  # (steps, N)
    assert per_image.mean(1).max() < 0.01, per_image.mean(1)
    assert per_image.flatten().quantile(0.99) < 0.02
    assert per_image.max() < 0.25
    # weights start at the prior and become nearly one-hot as t → 0
    torch.testing.assert_close(steps[0][2], PRIOR.expand(N, 2))
    assert steps[-1][2].max(1).values.mean() > 0.98
    # the images are pure members, in prior proportions (binomial sd ≈ 0.03 at N = 256)
    dist = nearest_mean(out)
    assert (dist.values < 0.5).float().mean() > 0.95 and dist.values.median() < 2 * S
    assert abs((dist.indices == 0).float().mean().item() - PRIOR[0].item()) < 0.1


def test_uniform_weights_do_not_match(trajectory_run):
    """λ is the posterior only at large t; at small t uniform weights are off by ≈ min(λ) per image."""
    out, steps = run(UniformRouter())
    dist = nearest_mean(out)  # uniform blends the compartments: images fall between the means
    assert (dist.values < 0.5).float().mean() < 0.8 and dist.values.median() > 2.5 * S
    small_t = [(t, x, w) for t, x, w in steps if t <= 100]
    assert all(mean_error(w, x, t) > 0.2 for t, x, w in small_t)
    assert mean_error(steps[0][2], steps[0][1], steps[0][0]) < 0.01  # at t ≈ T it is right
    # on the same states the trajectory filter is right
    assert all(mean_error(w, x, t) < 0.01 for t, x, w in trajectory_run[1] if t <= 100)


def test_shard_classifier_matches_within_a_looser_tolerance(trajectory_run):
    """A NoisyClassifier trained with the one loop and ``router_loss`` on samples of the
    two compartments estimates P(i | x_t) (its logits plus log λ).  Tolerance 0.08 mean: it is a learned estimate
    (2,000 samples, 20 epochs, measured ≈ 0.01–0.04), still far from uniform's ≈ 0.3."""
    g = torch.Generator().manual_seed(1)
    n = [600, 1400]  # the same 30 / 70 prior
    x0 = torch.cat([MEANS[i] + S * torch.randn((n[i], 1, 2, 2), generator=g) for i in range(2)])
    data = SampleSet.from_arrays(to_uint8(x0).numpy(), [0] * len(x0), ["a"] * n[0] + ["b"] * n[1])
    targets = torch.as_tensor([int(src == "b") for src in data.sources])  # compartment index of each row
    config = TrainConfig(epochs=20, batch_size=256, lr=3e-3, label_dropout=0.0, seed=0)
    torch.manual_seed(0)
    state = new_state(NoisyClassifier(image_shape=(1, 2, 2), num_outputs=2, width=16), config)
    train(state, data, config, loss_fn=router_loss(targets, log_label_prior(COUNTS), null_label=1), progress=False)
    router = ClassifierRouter(state.ema.model, [0, 1])
    router.reset(PRIOR.log().expand(N, 2))
    errors = []
    with torch.no_grad():
        for t, x, _ in trajectory_run[1]:
            errors.append(mean_error(router.weights(x, torch.full((N,), t), None), x, t))
    assert max(errors) < 0.08, errors
    # restricted to one allowed compartment the classifier router gives it all the weight
    solo = ClassifierRouter(state.ema.model, [1])
    solo.reset(torch.zeros(N, 1))
    t, x, _ = trajectory_run[1][-5]
    assert torch.equal(solo.weights(x, torch.full((N,), t), None), torch.ones(N, 1))


def test_label_with_no_compartment_is_an_error():
    counts = torch.tensor([[5.0, 0.0], [3.0, 0.0]])  # nobody holds label 1
    model = ComposedDenoiser({"a": GaussianDenoiser(MEANS[0], S), "b": GaussianDenoiser(MEANS[1], S)},
                             UniformRouter(), counts)
    x = torch.randn(2, 1, 2, 2)
    assert model(x, 10, torch.tensor([0, 0])).shape == x.shape
    with pytest.raises(SilodiffError, match="no allowed compartment holds label 1"):
        model(x, 10, torch.tensor([0, 1]))


def test_label_conditional_prior_zeroes_compartments_without_the_label():
    counts = torch.tensor([[5.0, 0.0], [3.0, 4.0]])  # only b holds label 1
    model = ComposedDenoiser({"a": GaussianDenoiser(MEANS[0], S), "b": GaussianDenoiser(MEANS[1], S)},
                             TrajectoryFilter(), counts)
    model(torch.randn(2, 1, 2, 2), 500, torch.tensor([0, 1]))
    w = model.last_weights
    torch.testing.assert_close(w[0], torch.tensor([5 / 8, 3 / 8]))
    torch.testing.assert_close(w[1], torch.tensor([0.0, 1.0]))
    assert model.calls.tolist() == [1, 2]  # a is not evaluated on the row it has no weight on


def test_bad_composition_arguments():
    with pytest.raises(SilodiffError, match="at least one"):
        ComposedDenoiser({}, UniformRouter(), torch.zeros(0, 1))
    with pytest.raises(SilodiffError, match="gate"):
        ComposedDenoiser({"a": GaussianDenoiser(MEANS[0], S)}, UniformRouter(), torch.ones(1, 1), gate=1.0)
