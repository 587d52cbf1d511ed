"""UNet configurations: named presets, JSON files, and the checks that make a bad one one clear line.

A UNet configuration is diffusers' ``UNet2DModel`` keyword arguments (block types
including attention blocks, ``block_out_channels``, ``layers_per_block``,
``dropout``, ``norm_num_groups``, ``attention_head_dim``, ``class_embed_type``, …)
without the four keys silodiff derives from the data: ``sample_size``,
``in_channels``, ``out_channels`` and ``num_class_embeds`` (classes + "no label").

Presets:

- ``tiny``: two levels (16, 32 channels), attention at the lower one; for tests.
- ``fashion-28``: three levels (32, 64, 128) for 28×28 (28 → 14 → 7), attention at 7×7.
- ``ddpm-cifar10``: the original DDPM CIFAR-10 model (Ho et al. 2020; diffusers'
  ``google/ddpm-cifar10-32``): 128-256-256-256 channels, two ResNet layers per level,
  attention at 16×16, dropout 0.1; 35.7M parameters (+ the class embedding).

``unet_model_config(spec, image_shape, num_classes)`` turns a preset name or a
JSON file into the denoiser's model config and proves it: diffusers must accept
it, the image size must halve cleanly at every downsampling level, and one
forward pass must run.  Anything else is a ``SilodiffError`` naming the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import SilodiffError

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 8,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    },
    "fashion-28": {
        "block_out_channels": [32, 64, 128], "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 32,
        "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    },
    "ddpm-cifar10": {
        "block_out_channels": [128, 256, 256, 256], "layers_per_block": 2, "norm_num_groups": 32, "norm_eps": 1e-6,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": None, "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1,
        "dropout": 0.1, "act_fn": "silu", "time_embedding_type": "positional", "mid_block_scale_factor": 1,
    },
}
DERIVED = ("sample_size", "in_channels", "out_channels", "num_class_embeds")
CLASS_EMBED_TYPES = (None, "timestep")  # integer labels: an embedding table, or labels through the time projection


def read_unet_config(spec: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A preset name, a JSON file path, or a dict → the UNet2DModel keyword arguments."""
    if isinstance(spec, dict):
        config = dict(spec)
    elif str(spec) in PRESETS:
        config = json.loads(json.dumps(PRESETS[str(spec)]))
    else:
        path = Path(spec)
        if path.suffix.lower() != ".json" and not path.exists():
            raise SilodiffError(f"unknown UNet preset {str(spec)!r}: use one of {', '.join(PRESETS)} or a .json file")
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            raise SilodiffError(f"UNet config file {path} does not exist") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SilodiffError(f"cannot read the UNet config {path}: {exc}") from None
        if not isinstance(config, dict):
            raise SilodiffError(f"{path} must hold a JSON object of UNet2DModel settings")
    config = {k: v for k, v in config.items() if not k.startswith("_")}  # diffusers' own "_class_name", "_diffusers_version"
    if config.get("class_embed_type") not in CLASS_EMBED_TYPES:
        raise SilodiffError(f"class_embed_type {config['class_embed_type']!r} is not supported: use null or 'timestep'")
    return config


def unet_model_config(spec: str | Path | dict[str, Any], image_shape: tuple[int, int, int], num_classes: int,
                      *, dry_run: bool = True) -> dict[str, Any]:
    """The checked ``unet-denoiser`` model config for data of ``image_shape`` with ``num_classes`` classes."""
    unet = read_unet_config(spec)
    c, h, w = (int(v) for v in image_shape)
    derived = {"sample_size": h, "in_channels": c, "out_channels": c, "num_class_embeds": num_classes + 1}
    for key in DERIVED:
        if key in unet:
            given = unet.pop(key)
            ok = given == derived[key] or (key == "sample_size" and list(given if isinstance(given, list) else [given] * 2) == [h, w])
            if not ok:
                raise SilodiffError(f"the UNet config sets {key}={given!r} but the data need {derived[key]!r} "
                                    f"(images of shape {c}×{h}×{w}, {num_classes} classes): drop the key")
    levels = len(unet.get("down_block_types") or ())
    if levels < 1:
        raise SilodiffError("the UNet config needs down_block_types and up_block_types (one per level)")
    factor = 2 ** (levels - 1)
    if h % factor or w % factor:
        raise SilodiffError(f"images of {h}×{w} cannot go through {levels} UNet levels: each side must be a multiple "
                            f"of {factor} (use fewer levels or resize the images)")
    config = {"kind": "unet-denoiser", "image_shape": [c, h, w], "num_classes": num_classes, "unet": unet}
    from ..config import build

    try:
        model = build(config)
    except (TypeError, ValueError, AttributeError, KeyError, AssertionError, RuntimeError) as exc:
        raise SilodiffError(f"diffusers rejects the UNet config: {_first_line(exc)}") from None
    if dry_run:
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, c, h, w), torch.zeros(1, dtype=torch.long), None)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise SilodiffError(f"the UNet config cannot take {c}×{h}×{w} images: {_first_line(exc)}") from None
    return model.config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
