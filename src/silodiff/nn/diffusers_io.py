"""Denoisers to and from diffusers' ``UNet2DModel``: the weights are the same, only the wrapping differs.

A silodiff ``UNetDenoiser`` *is* a ``UNet2DModel`` (its ``unet`` attribute) with
``num_class_embeds = classes + 1``, the last class meaning "no label".  So:

- ``conditional_unet(denoiser)``: a copy of that ``UNet2DModel``; its ε with
  ``class_labels=y`` is the denoiser's ε for labels ``y`` (``y = classes``: no label).
- ``unconditional_unet(denoiser)``: a ``UNet2DModel`` without class embedding, whose
  ε is the denoiser's unconditional ε (labels ``None``).  diffusers adds the class
  embedding to the time embedding (``emb = time_embedding(t) + class_emb``), so the
  null class's embedding vector is folded into the bias of the time embedding's
  last linear layer: exact, and what ``DDPMPipeline`` (which passes no labels) needs.
- ``read_unet(path)``: a local diffusers ``UNet2DModel`` folder (or a pipeline folder
  holding ``unet/``), loaded with ``from_pretrained(local_files_only=True)``; anything
  else is one ``SilodiffError`` line.
- ``denoiser_from_unet(unet, image_shape, num_classes)``: the ``UNetDenoiser`` that
  starts from those weights for a store's data.  A conditional UNet must have the
  store's ``classes + 1`` class embeddings; an unconditional one gets a zero class
  embedding table, so the imported model's ε is unchanged until training teaches
  it the labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

from ..errors import SilodiffError
from .denoisers import UNetDenoiser

DERIVED = ("sample_size", "in_channels", "out_channels", "num_class_embeds")
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def _unet_of(denoiser: torch.nn.Module) -> UNet2DModel:
    unet = getattr(denoiser, "unet", None)
    if not isinstance(unet, UNet2DModel):
        kind = getattr(denoiser, "config", {}).get("kind", type(denoiser).__name__)
        raise SilodiffError(f"a {kind} model has no diffusers equivalent: only UNet denoisers export to diffusers "
                            "(train with --unet-config)")
    return unet


def _plain_config(unet: UNet2DModel) -> dict[str, Any]:
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


@torch.no_grad()
def conditional_unet(denoiser: torch.nn.Module) -> UNet2DModel:
    """A standalone copy of the denoiser's class-conditional ``UNet2DModel``."""
    unet = _unet_of(denoiser)
    copy = UNet2DModel(**_plain_config(unet))
    copy.load_state_dict(unet.state_dict())
    return copy.eval()


@torch.no_grad()
def null_class_embedding(unet: UNet2DModel, null: int) -> torch.Tensor:
    """The vector diffusers adds to the time embedding for class ``null``, (time_embed_dim,)."""
    label = torch.tensor([null])
    if unet.config.class_embed_type == "timestep":
        return unet.class_embedding(unet.time_proj(label).to(unet.dtype))[0]
    return unet.class_embedding(label)[0]


@torch.no_grad()
def unconditional_unet(denoiser: torch.nn.Module) -> UNet2DModel:
    """A ``UNet2DModel`` without class input whose ε is the denoiser's for labels ``None`` (exactly)."""
    unet = _unet_of(denoiser)
    config = {**_plain_config(unet), "num_class_embeds": None, "class_embed_type": None}
    plain = UNet2DModel(**config)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("class_embedding.")}
    if unet.class_embedding is not None:
        null = int(getattr(denoiser, "num_classes", int(unet.config.num_class_embeds or 1) - 1))  # "no label"
        state["time_embedding.linear_2.bias"] = state["time_embedding.linear_2.bias"] + null_class_embedding(unet, null)
    plain.load_state_dict(state)
    return plain.eval()


def weights_sha256(folder: str | Path) -> str:
    """sha256 of a diffusers folder's weight file (streamed)."""
    h = hashlib.sha256()
    with open(Path(folder) / UNET_WEIGHTS, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unet_folder(path: str | Path) -> Path:
    """The ``UNet2DModel`` folder at ``path``: the folder itself, or the ``unet/`` of a pipeline folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SilodiffError(f"--init-from {path}: no such folder")
    if not path.is_dir():
        raise SilodiffError(f"--init-from {path}: not a folder (give the diffusers model folder)")
    for folder in (path, path / "unet"):
        config = folder / "config.json"
        if config.is_file():
            try:
                name = json.loads(config.read_text()).get("_class_name")
            except (OSError, ValueError, AttributeError):
                raise SilodiffError(f"--init-from {path}: {config} is not a JSON object") from None
            if name == "UNet2DModel":
                return folder
            raise SilodiffError(f"--init-from {path}: not a diffusers UNet2DModel ({config} names "
                                f"{name or 'no diffusers class'})")
    raise SilodiffError(f"--init-from {path}: not a diffusers model folder (no config.json of a UNet2DModel, "
                        "there or in unet/)")


def read_unet(path: str | Path) -> tuple[UNet2DModel, Path]:
    """Load a local diffusers ``UNet2DModel`` (never downloads); returns it and the folder it came from."""
    folder = unet_folder(path)
    if not (folder / UNET_WEIGHTS).is_file():
        raise SilodiffError(f"--init-from {folder}: no {UNET_WEIGHTS} (save the model with safe_serialization=True)")
    try:
        unet = UNet2DModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SilodiffError(f"--init-from {folder}: diffusers cannot load it: {first}") from None
    return unet.eval(), folder


def check_fits(unet: UNet2DModel, image_shape: tuple[int, int, int], num_classes: int, where: str = "--init-from") -> None:
    """The pretrained UNet's shape settings must match the store's images and classes."""
    c, h, w = (int(v) for v in image_shape)
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else [cfg.sample_size] * 2
    problems = []
    if cfg.in_channels != c or cfg.out_channels != c:
        problems.append(f"in/out channels {cfg.in_channels}/{cfg.out_channels}, the store's images have {c}")
    if [int(v) for v in size] != [h, w]:
        problems.append(f"sample_size {cfg.sample_size}, the store's images are {h}×{w}")
    if cfg.class_embed_type not in (None, "timestep"):
        problems.append(f"class_embed_type {cfg.class_embed_type!r} (silodiff uses integer labels)")
    elif cfg.num_class_embeds is not None and cfg.num_class_embeds != num_classes + 1:
        problems.append(f"num_class_embeds {cfg.num_class_embeds}, the store needs {num_classes + 1} "
                        f"({num_classes} classes + 'no label'); an unconditional UNet also fits")
    elif cfg.class_embed_type == "timestep" and cfg.num_class_embeds is None:
        problems.append("class_embed_type 'timestep' without num_class_embeds")
    if problems:
        raise SilodiffError(f"{where}: the pretrained UNet does not fit the store: {'; '.join(problems)}")


@torch.no_grad()
def denoiser_from_unet(unet: UNet2DModel, image_shape: tuple[int, int, int], num_classes: int) -> UNetDenoiser:
    """The ``UNetDenoiser`` for the store's data that starts from ``unet``'s weights."""
    check_fits(unet, image_shape, num_classes)
    config = {k: v for k, v in _plain_config(unet).items() if k not in DERIVED}
    if config.get("class_embed_type") is None:
        config.pop("class_embed_type", None)
    model = UNetDenoiser(image_shape=tuple(int(v) for v in image_shape), num_classes=num_classes, unet=config)
    state = unet.state_dict()
    if unet.class_embedding is None:  # unconditional: zero class embeddings keep its ε for every label
        for key, value in model.unet.state_dict().items():
            if key.startswith("class_embedding."):
                state[key] = torch.zeros_like(value)
    model.unet.load_state_dict(state)
    return model.eval()
