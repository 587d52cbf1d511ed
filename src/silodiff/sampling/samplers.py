"""The one sampling loop, over diffusers' DDPM and DDIM schedulers.

``sample(model, x, scheduler, ...)`` runs any denoiser (single or composed):

  for each timestep t (from T down to 0):
    1. ε = model(x_t, t, labels)
    2. (μ, σ) = the scheduler's step mean and std for ε
    3. x_{t-1} = μ + σ z,   z from the injected trajectory or the generator
    4. callback({"i", "t", "x", "eps", "mean", "std", "x_prev", **model.step_info()})

Injecting the noise trajectory (``NoiseTrajectory``: x_T and every z) makes a
factual and a counterfactual run share their randomness exactly.  A model may
define ``observe_step(x, x_prev, step_fn)`` with ``step_fn(eps, x) -> (mean, std)``;
the trajectory-filter router uses it to score each member's step density
without the sampler knowing about compartments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from ..devices import autocast, device_of
from ..errors import SilodiffError

SAMPLERS = ("ddpm", "ddim")


def make_scheduler(sampler: str = "ddpm", num_train_timesteps: int = 1000):
    """The diffusers scheduler for a sampler name, on the training schedule of METHODS.md."""
    kwargs = dict(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    if sampler == "ddpm":
        return DDPMScheduler(**kwargs)
    if sampler == "ddim":
        return DDIMScheduler(**kwargs, set_alpha_to_one=True)
    raise SilodiffError(f"unknown sampler {sampler!r}: use one of {SAMPLERS}")


@dataclass
class NoiseTrajectory:
    """All randomness of one sampling run: the start ``x_T`` (b, c, h, w) and per-step noise (steps, b, c, h, w)."""

    x_T: torch.Tensor
    z: torch.Tensor

    @classmethod
    def draw(cls, shape: tuple[int, ...], steps: int, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> "NoiseTrajectory":
        """Draw on the generator's device (or ``device`` without a generator)."""
        device = generator.device if generator is not None else device
        x_T = torch.randn(shape, generator=generator, device=device)
        return cls(x_T, torch.randn((steps, *shape), generator=generator, device=device))

    def to(self, device: torch.device | str) -> "NoiseTrajectory":
        return NoiseTrajectory(self.x_T.to(device), self.z.to(device))

    def rows(self, index: torch.Tensor | slice) -> "NoiseTrajectory":
        return NoiseTrajectory(self.x_T[index], self.z[:, index])


def step_mean_std(scheduler, eps: torch.Tensor, t: int, x: torch.Tensor, eta: float = 0.0) -> tuple[torch.Tensor, float]:
    """Mean and std of the scheduler's step ``p(x_{t-1} | x_t)`` for prediction ``eps``.

    DDIM takes injected noise, so zero noise gives the mean.  diffusers' DDPM step
    draws its own noise; we give it a fixed generator and remove that draw again.
    """
    if isinstance(scheduler, DDIMScheduler):
        prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        std = eta * float(scheduler._get_variance(t, prev_t)) ** 0.5 if prev_t >= 0 else 0.0
        out = scheduler.step(eps, t, x, eta=eta, variance_noise=torch.zeros_like(x) if eta > 0 else None)
        return out.prev_sample, std
    if t == 0:
        return scheduler.step(eps, t, x).prev_sample, 0.0
    seed = 0x5EED
    prev = scheduler.step(eps, t, x, generator=torch.Generator(device=x.device).manual_seed(seed)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator(device=x.device).manual_seed(seed), dtype=x.dtype)
    std = float(scheduler._get_variance(t)) ** 0.5
    return prev - std * z, std


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    x: torch.Tensor | tuple[int, ...] | None,
    scheduler,
    *,
    steps: int = 100,
    labels: torch.Tensor | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise: NoiseTrajectory | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    precision: str = "fp32",
) -> torch.Tensor:
    """Sample images in [-1, 1] of shape ``x`` (a shape, or ``x_T`` itself) in ``steps`` steps.

    Runs on the model's device (the noise is moved there); ``precision`` bf16/fp16
    autocasts the model's forward pass only; the step arithmetic stays fp32.
    """
    if steps < 1 or steps > scheduler.config.num_train_timesteps:
        raise SilodiffError(f"steps must be in 1..{scheduler.config.num_train_timesteps}, got {steps}")
    scheduler.set_timesteps(steps)
    if noise is None:
        if x is None:
            raise SilodiffError("give a shape, x_T, or a noise trajectory")
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)
        noise = NoiseTrajectory.draw(shape, steps, generator, device=None if generator is not None else device_of(model))
        if isinstance(x, torch.Tensor):
            noise.x_T = x
    device = device_of(model, noise.x_T.device)
    noise = noise.to(device)
    x = noise.x_T.clone()
    if labels is not None and len(labels) != len(x):
        raise SilodiffError(f"{len(labels)} labels for {len(x)} images")
    if labels is not None:
        labels = labels.to(device)
    observe = getattr(model, "observe_step", None)
    step_info = getattr(model, "step_info", None)
    for i, t in enumerate(tqdm(scheduler.timesteps, desc="sample", disable=not progress, leave=False)):
        t = int(t)
        # 1. predict the noise
        with autocast(device, precision):
            eps = model(x, torch.full((len(x),), t, dtype=torch.long, device=device), labels)
        eps = eps.float()
        # 2. the scheduler's step mean and std
        mean, std = step_mean_std(scheduler, eps, t, x, eta)
        # 3. add this step's injected noise
        x_prev = mean + std * noise.z[i] if std > 0 else mean
        if observe is not None:
            observe(x, x_prev, lambda e, rows_x, t=t: step_mean_std(scheduler, e, t, rows_x, eta))
        # 4. report
        if callback is not None:
            info = {"i": i, "t": t, "x": x, "eps": eps, "mean": mean, "std": std, "x_prev": x_prev}
            if step_info is not None:
                info.update(step_info())
            callback(info)
        x = x_prev
    return x.clamp(-1, 1)


def sample_ddpm(model, x, scheduler=None, **kwargs) -> torch.Tensor:
    """Ancestral DDPM sampling (stochastic)."""
    return sample(model, x, scheduler or make_scheduler("ddpm"), **kwargs)


def sample_ddim(model, x, scheduler=None, *, eta: float = 0.0, **kwargs) -> torch.Tensor:
    """DDIM sampling; ``eta = 0`` is deterministic, ``eta = 1`` is DDPM-like."""
    return sample(model, x, scheduler or make_scheduler("ddim"), eta=eta, **kwargs)
