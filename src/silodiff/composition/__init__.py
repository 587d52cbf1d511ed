"""Composition: routers, the composed denoiser, and building it from a store."""

from .build import COMBINES, ROUTER_NAME, compose, final_checkpoint, load_denoiser, train_router, trained_compartments
from .composed import ComposedDenoiser
from .routers import ROUTERS, ClassifierRouter, TrajectoryFilter, UniformRouter
from .soup import AdapterSoup

__all__ = [
    "COMBINES", "ROUTER_NAME", "compose", "final_checkpoint", "load_denoiser", "train_router", "trained_compartments",
    "AdapterSoup", "ComposedDenoiser", "ROUTERS", "ClassifierRouter", "TrajectoryFilter", "UniformRouter",
]
