"""The noise schedule every silodiff model trains with (METHODS.md): diffusers' ``DDPMScheduler``, T = 1000,
linear β from 1e-4 to 0.02, ε-prediction.  Its own module, so the loop's hooks (early stopping) can use it
without importing the loop."""

from __future__ import annotations

from diffusers import DDPMScheduler


def noise_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """The training schedule of METHODS.md: T = 1000, linear β from 1e-4 to 0.02, ε-prediction."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
