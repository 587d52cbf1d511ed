"""Composition: routers, the composed denoiser, and building it from a store."""

from .build import ROUTER_NAME, compose, final_checkpoint, load_denoiser, train_router, trained_compartments
from .composed import ComposedDenoiser
from .routers import ROUTERS, ClassifierRouter, TrajectoryFilter, UniformRouter

__all__ = [
    "ROUTER_NAME", "compose", "final_checkpoint", "load_denoiser", "train_router", "trained_compartments",
    "ComposedDenoiser", "ROUTERS", "ClassifierRouter", "TrajectoryFilter", "UniformRouter",
]
