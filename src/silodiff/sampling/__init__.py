"""Sampling: one loop over diffusers schedulers, with injectable noise."""

from .generation import balanced_labels, generate
from .samplers import SAMPLERS, NoiseTrajectory, make_scheduler, sample, sample_ddim, sample_ddpm, step_mean_std

__all__ = ["balanced_labels", "generate", "SAMPLERS", "NoiseTrajectory", "make_scheduler", "sample", "sample_ddim", "sample_ddpm", "step_mean_std"]
