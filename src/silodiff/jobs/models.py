"""The model config a job trains: the default denoiser for a store's data, a UNet preset, or one built on the base.

A config is plain data (``silodiff.config``): jobs carry it to any backend and rebuild the architecture from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import SilodiffError
from ..nn import default_denoiser
from ..store import Store
from ..store.lineage import num_classes, store_image_shape

ADAPTERS = ("none", "lora")


def default_model_config(store: Store) -> dict[str, Any]:
    """The default denoiser for the store's image size and number of classes."""
    return default_denoiser(store_image_shape(store), num_classes(store)).config


def model_config(store: Store, unet: str | dict | None = None) -> dict[str, Any]:
    """The denoiser config for the store's data: the default one, or a UNet from a preset name, a JSON
    file or a dict of ``UNet2DModel`` settings (checked: see ``silodiff.nn.presets``)."""
    if unet is None:
        return default_model_config(store)
    from ..nn.presets import unet_model_config

    return unet_model_config(unet, store_image_shape(store), num_classes(store))


def from_base_model(base: dict[str, Any], adapter: str = "none", *, rank: int = 4, alpha: float | None = None,
                    targets: Sequence[str] | None = None) -> dict[str, Any]:
    """The model config of a compartment that starts from ``base`` (checked before anything is registered)."""
    if adapter not in ADAPTERS:
        raise SilodiffError(f"unknown adapter {adapter!r}; choose one of {', '.join(ADAPTERS)}")
    if adapter == "none":
        return dict(base["model"])
    from ..nn.lora import LoraDenoiser

    return LoraDenoiser(base=base["model"], base_hash=base["hash"], rank=rank, alpha=alpha,
                        targets=None if targets is None else list(targets)).config
