"""Composition: routers, the composed denoiser, and building it from a store."""

from .build import COMBINES, ROUTER_NAME, compose, load_denoiser, train_router
from .composed import ComposedDenoiser
from .routers import ROUTERS, ClassifierRouter, TrajectoryFilter, UniformRouter
from .soup import AdapterSoup

__all__ = [
    "COMBINES", "ROUTER_NAME", "compose", "load_denoiser", "train_router",
    "AdapterSoup", "ComposedDenoiser", "ROUTERS", "ClassifierRouter", "TrajectoryFilter", "UniformRouter",
]
