"""The one sampling loop: shapes, determinism, injected noise, and parity of
``step_mean_std`` with diffusers' own DDPM and DDIM steps."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.sampling import NoiseTrajectory, generate, make_scheduler, sample, sample_ddim, sample_ddpm, step_mean_std


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("arch", ["tiny_mlp", "tiny_unet"])
def test_shapes_and_range(request, arch, sampler):
    model = request.getfixturevalue(arch).eval()
    images, labels = generate(model, 5, labels=[0, 1, 2, 3, 9], sampler=sampler, steps=3, seed=0)
    assert images.shape == (5, 1, 8, 8) and labels.tolist() == [0, 1, 2, 3, 9]
    assert images.min() >= -1 and images.max() <= 1 and torch.isfinite(images).all()
    uncond, none = generate(model, 2, labels=None, sampler=sampler, steps=2, seed=0)
    assert uncond.shape == (2, 1, 8, 8) and none is None


def test_generate_is_deterministic_and_batch_invariant(tiny_mlp):
    model = tiny_mlp.eval()
    a, _ = generate(model, 6, labels=[1] * 6, steps=4, seed=3)
    b, _ = generate(model, 6, labels=[1] * 6, steps=4, seed=3)
    c, _ = generate(model, 6, labels=[1] * 6, steps=4, seed=4)
    d, _ = generate(model, 6, labels=[1] * 6, steps=4, seed=3, batch_size=4)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    torch.testing.assert_close(a, d, rtol=0, atol=1e-5)


def test_same_noise_trajectory_same_images(tiny_mlp):
    model = tiny_mlp.eval()
    noise = NoiseTrajectory.draw((4, 1, 8, 8), 5, torch.Generator().manual_seed(0))
    steps = []
    a = sample(model, None, make_scheduler("ddpm"), steps=5, noise=noise, callback=steps.append)
    b = sample_ddpm(model, None, steps=5, noise=noise)
    assert torch.equal(a, b)
    assert [s["i"] for s in steps] == list(range(5)) and steps[-1]["t"] == 0
    assert {"x", "eps", "mean", "std", "x_prev"} <= set(steps[0])
    assert torch.equal(steps[0]["x"], noise.x_T)
    # the step really uses the injected z: x_{t-1} = mean + std · z_i
    torch.testing.assert_close(steps[1]["x_prev"], steps[1]["mean"] + steps[1]["std"] * noise.z[1])
    other = NoiseTrajectory(noise.x_T, noise.z.flip(0))
    assert not torch.equal(a, sample_ddpm(model, None, steps=5, noise=other))
    # deterministic DDIM ignores the per-step noise but not x_T
    assert torch.equal(sample_ddim(model, None, steps=5, noise=noise), sample_ddim(model, None, steps=5, noise=other))
    assert torch.equal(sample_ddim(model, noise.x_T.clone(), steps=5), sample_ddim(model, None, steps=5, noise=noise))


def _alphas(scheduler, t: int, prev: int) -> tuple[float, float]:
    abar = scheduler.alphas_cumprod
    return float(abar[t]), float(abar[prev]) if prev >= 0 else 1.0


@pytest.mark.parametrize("index", [0, 7, 19])
def test_ddpm_step_mean_std_matches_diffusers(index):
    scheduler = make_scheduler("ddpm")
    scheduler.set_timesteps(20)
    t = int(scheduler.timesteps[index])
    g = torch.Generator().manual_seed(index)
    x, eps = torch.randn(3, 1, 4, 4, generator=g), 0.5 * torch.randn(3, 1, 4, 4, generator=g)
    mean, std = step_mean_std(scheduler, eps, t, x)
    # 1. against diffusers' full stochastic step with the same z
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(42))
    ref = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(42)).prev_sample
    torch.testing.assert_close(mean + std * z, ref, rtol=1e-5, atol=1e-5)
    # 2. against the closed form (Ho et al. eq. 7, clipped x̂_0, σ² = β̃_t)
    a_t, a_prev = _alphas(scheduler, t, t - 50)
    beta = 1 - a_t / a_prev
    x0 = ((x - (1 - a_t) ** 0.5 * eps) / a_t**0.5).clamp(-1, 1)
    expected = a_prev**0.5 * beta / (1 - a_t) * x0 + (1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t) * x
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-5)
    expected_std = ((1 - a_prev) / (1 - a_t) * beta) ** 0.5 if t > 0 else 0.0
    assert std == pytest.approx(expected_std, rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("index", [0, 10, 19])
def test_ddim_step_mean_std_matches_diffusers(eta, index):
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(20)
    t = int(scheduler.timesteps[index])
    g = torch.Generator().manual_seed(index)
    x, eps = torch.randn(3, 1, 4, 4, generator=g), 0.5 * torch.randn(3, 1, 4, 4, generator=g)
    z = torch.randn(x.shape, generator=g)
    mean, std = step_mean_std(scheduler, eps, t, x, eta)
    if eta > 0:
        ref = scheduler.step(eps, t, x, eta=eta, variance_noise=z).prev_sample
    else:
        ref = scheduler.step(eps, t, x).prev_sample
    torch.testing.assert_close(mean + std * z, ref, rtol=1e-5, atol=1e-5)
    a_t, a_prev = _alphas(scheduler, t, t - 50)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    assert std == pytest.approx(sigma, rel=1e-5, abs=1e-12)


def test_steps_out_of_range(tiny_mlp):
    for steps in (0, 1001):
        with pytest.raises(SilodiffError, match="steps must be in 1..1000"):
            sample(tiny_mlp, (1, 1, 8, 8), make_scheduler("ddpm"), steps=steps)
        with pytest.raises(SilodiffError, match="steps"):
            generate(tiny_mlp, 1, steps=steps)


def test_bad_generate_arguments(tiny_mlp):
    with pytest.raises(SilodiffError, match="unknown sampler"):
        generate(tiny_mlp, 1, sampler="euler")
    with pytest.raises(SilodiffError, match="unknown sampler"):
        make_scheduler("euler")
    with pytest.raises(SilodiffError, match="n must be"):
        generate(tiny_mlp, 0)
    with pytest.raises(SilodiffError, match="label 10 is outside 0..9"):
        generate(tiny_mlp, 2, labels=[0, 10])
    with pytest.raises(SilodiffError, match="2 labels for n = 3"):
        generate(tiny_mlp, 3, labels=[0, 1])
    with pytest.raises(SilodiffError, match="2 labels for 3 images"):
        sample(tiny_mlp, (3, 1, 8, 8), make_scheduler("ddpm"), steps=2, labels=torch.tensor([0, 1]))
    with pytest.raises(SilodiffError, match="shape"):
        sample(tiny_mlp, None, make_scheduler("ddpm"), steps=2)
