"""Sampling: one loop over diffusers schedulers, with injectable noise."""

from .generate_api import balanced_labels, generate
from .samplers import SAMPLERS, NoiseTrajectory, make_scheduler, sample, sample_ddim, sample_ddpm, step_mean_std
from .weight_recorder import WeightRecorder

__all__ = ["balanced_labels", "generate", "SAMPLERS", "NoiseTrajectory", "make_scheduler", "sample", "sample_ddim", "sample_ddpm", "step_mean_std", "WeightRecorder"]
