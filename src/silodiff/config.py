"""Config is the constructor: modules rebuild from the JSON they were created with.

A class decorated with ``@register("name")`` records its keyword arguments in
``self.config``; ``build({"kind": "name", ...})`` makes a fresh instance.  This
is the whole mechanism behind ``config.json`` next to ``model.safetensors``
(the idea of diffusers' ``register_to_config``, without the magic).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from .errors import SilodiffError

_REGISTRY: dict[str, type] = {}
# kinds whose module is not imported with the package (heavy dependencies, such as peft): imported on first build,
# so a fresh worker process can rebuild them from their config alone
_LAZY = {"lora-denoiser": "silodiff.nn.lora"}


def register(kind: str):
    """Class decorator: remember the class under ``kind`` and capture its init kwargs."""

    def wrap(cls: type) -> type:
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = {k: v for k, v in bound.arguments.items() if k != "self"}
            init(self, *args, **kwargs)
            self.config = {"kind": kind, **config}

        cls.__init__ = __init__
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return wrap


def build(config: dict[str, Any]):
    """Instantiate the registered class named by ``config["kind"]``."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in _REGISTRY and kind in _LAZY:
        import importlib

        importlib.import_module(_LAZY[kind])
    if kind not in _REGISTRY:
        raise SilodiffError(f"unknown model kind {kind!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[kind](**config)
