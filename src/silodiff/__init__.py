"""silodiff: training-data protection for image diffusion models.

Compartments trained in isolation and composed at sampling time, with lineage
kept in a catalog (Golatkar et al. 2023, arXiv 2308.01937).
"""

from .audit import class_accuracy, feature_net, fld
from .compose import ComposedDenoiser, compose, load_denoiser, train_router
from .data import SampleSet, load_dataset, load_digits
from .errors import SilodiffError
from .jobs import plan_compartments, train_compartments, train_paragon
from .sampling import NoiseTrajectory, generate, make_scheduler, sample, sample_ddim, sample_ddpm
from .store import Store
from .training import TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "ComposedDenoiser", "NoiseTrajectory", "SampleSet", "SilodiffError", "Store", "TrainConfig", "class_accuracy",
    "compose", "feature_net", "fld", "generate", "load_dataset", "load_denoiser", "load_digits", "make_scheduler",
    "plan_compartments", "sample", "sample_ddim", "sample_ddpm", "train", "train_compartments", "train_paragon",
    "train_router",
]
