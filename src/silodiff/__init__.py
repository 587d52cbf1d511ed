"""silodiff: training-data protection for image diffusion models.

Compartments trained in isolation and composed at sampling time, with lineage
kept in a catalog (Golatkar et al. 2023, arXiv 2308.01937).

The public API is exactly the names in ``__all__`` (listed on the docs site's
API page); anything else is private.  ``import silodiff`` is light: each name is
imported on first use (PEP 562 ``__getattr__``), so the catalog, key and
certificate commands never import torch or diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import SilodiffError

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # data and store
    "SampleSet": "silodiff.data", "load_dataset": "silodiff.data", "load_digits": "silodiff.data",
    "Store": "silodiff.store",
    # training
    "TrainConfig": "silodiff.training", "train": "silodiff.training",
    "plan_compartments": "silodiff.jobs", "train_compartments": "silodiff.jobs", "train_paragon": "silodiff.jobs",
    # composition and sampling
    "ComposedDenoiser": "silodiff.composition", "compose": "silodiff.composition",
    "load_denoiser": "silodiff.composition", "train_router": "silodiff.composition",
    "NoiseTrajectory": "silodiff.sampling", "generate": "silodiff.sampling", "make_scheduler": "silodiff.sampling",
    "sample": "silodiff.sampling", "sample_ddim": "silodiff.sampling", "sample_ddpm": "silodiff.sampling",
    # forgetting
    "forget": "silodiff.unlearning", "plan_forget": "silodiff.unlearning",
    "verify_certificate": "silodiff.unlearning", "add_source": "silodiff.unlearning",
    # diffusers and peft out
    "export": "silodiff.interop", "load_export": "silodiff.interop",
    # quality
    "class_accuracy": "silodiff.audit", "feature_net": "silodiff.audit", "fld": "silodiff.audit",
}

__all__ = sorted([*_EXPORTS, "SilodiffError"], key=str.lower)

# Subpackages reachable as attributes (``sd.jobs.JobsFailed``); importing one is what loads torch.
_SUBPACKAGES = {"attribution", "audit", "composition", "data", "defences", "interop", "jobs", "nn", "sampling",
                "service", "store", "training", "unlearning"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # cache: later look-ups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'silodiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from .audit import class_accuracy, feature_net, fld
    from .composition import ComposedDenoiser, compose, load_denoiser, train_router
    from .data import SampleSet, load_dataset, load_digits
    from .interop import export, load_export
    from .jobs import plan_compartments, train_compartments, train_paragon
    from .sampling import NoiseTrajectory, generate, make_scheduler, sample, sample_ddim, sample_ddpm
    from .store import Store
    from .training import TrainConfig, train
    from .unlearning.certificate import verify_certificate
    from .unlearning.continual import add_source
    from .unlearning.forgetting import forget
    from .unlearning.plan import plan_forget
