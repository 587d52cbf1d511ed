"""Denoisers: every model the sampler sees is ``eps = model(x_t, t, labels)``.

A denoiser also has a per-sample ``loss`` (the DDPM ε-objective, unreduced), so
the training loop, membership attacks and attribution all share one formula:
``ℓ_j = mean((ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t, y) − ε)²)`` over pixels of sample j.

Labels are class indices; ``None`` (or the index ``num_classes``) means
"no label", so a class-conditional model can also sample unconditionally.

diffusers' ``UNet2DModel`` is imported when a UNet is built: its module pulls in
peft and transformers (seconds), which a job training the MLP never needs (a
fresh Ray or process-pool worker imports this module before its first job).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ..config import register


class Denoiser(nn.Module):
    """Base class: subclasses implement ``forward(x_t, t, labels) -> eps``."""

    num_classes: int = 0

    def null_labels(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Map ``None`` to the null class (index ``num_classes``)."""
        if labels is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return labels.to(device=device, dtype=torch.long)

    def loss(
        self, x0: torch.Tensor, labels: torch.Tensor | None, t: torch.Tensor, noise: torch.Tensor, scheduler
    ) -> torch.Tensor:
        """Per-sample ε-prediction loss, shape (b,)."""
        x_t = scheduler.add_noise(x0, noise, t)  # (b, c, h, w)
        return (self(x_t, t, labels) - noise).pow(2).flatten(1).mean(1)


def _as_timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    return t.expand(batch) if t.ndim == 0 else t


@register("mlp-denoiser")
class MLPDenoiser(Denoiser):
    """A residual MLP on flattened pixels; fast enough for 8×8 data on a CPU."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 10, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        dim = int(torch.tensor(self.image_shape).prod())
        self.time_proj = Timesteps(hidden, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(hidden, hidden)
        self.class_embed = nn.Embedding(num_classes + 1, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        t = _as_timesteps(t, b, x.device)
        emb = self.time_embed(self.time_proj(t).to(x.dtype)) + self.class_embed(self.null_labels(labels, b, x.device))
        h = self.inp(x.flatten(1))  # (b, hidden)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h).view(b, *self.image_shape)


@register("unet-denoiser")
class UNetDenoiser(Denoiser):
    """diffusers ``UNet2DModel``, class-conditional through ``num_class_embeds``.

    ``unet`` is diffusers' full ``UNet2DModel`` configuration (block types, with
    attention blocks, channels, layers per block, dropout, norm groups, attention
    head size, class embedding type, …; see ``silodiff.nn.presets``); without it the
    three short keys build a plain (attention-free) UNet.  ``sample_size``,
    ``in_channels``, ``out_channels`` and ``num_class_embeds`` always come from
    ``image_shape`` and ``num_classes`` (the extra class is "no label").
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        block_out_channels: tuple[int, ...] | None = None,
        layers_per_block: int | None = None,
        norm_num_groups: int | None = None,
        unet: dict | None = None,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        c, h, w = self.image_shape
        if unet is None:
            channels = tuple(block_out_channels or (32, 64, 64))
            n = len(channels)
            unet = {"block_out_channels": channels, "layers_per_block": layers_per_block or 1,
                    "down_block_types": ("DownBlock2D",) * n, "up_block_types": ("UpBlock2D",) * n,
                    "norm_num_groups": norm_num_groups or 8}
        elif block_out_channels is not None or layers_per_block is not None or norm_num_groups is not None:
            raise TypeError("give either unet= (the full UNet2DModel config) or the short keys, not both")
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in unet.items()}
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(sample_size=(h, w) if h != w else h, in_channels=c, out_channels=c,
                                num_class_embeds=num_classes + 1, **config)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        return self.unet(x, _as_timesteps(t, b, x.device), class_labels=self.null_labels(labels, b, x.device)).sample


def default_denoiser(image_shape: tuple[int, int, int], num_classes: int) -> Denoiser:
    """The default architecture for an image size: the MLP up to 16×16, the UNet above."""
    if image_shape[1] * image_shape[2] <= 256:
        return MLPDenoiser(image_shape=tuple(image_shape), num_classes=num_classes)
    return UNetDenoiser(image_shape=tuple(image_shape), num_classes=num_classes, block_out_channels=(32, 64, 64),
                        layers_per_block=1, norm_num_groups=8)
