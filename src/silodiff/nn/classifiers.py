"""Classifiers: on noisy inputs (router, CPSample) and on clean images (FLD features).

``NoisyClassifier`` is ``f(x_t, t[, y]) → logits``; the shard-classifier router
trains it on compartment indices, CPSample on random bits; ``RouterHeads`` holds
one binary ``NoisyClassifier`` per compartment (the heads router).
``FeatureCNN`` classifies clean images and exposes its penultimate features,
the embedding FLD is computed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn
from torch.nn import functional as F

from ..config import register


def _trunk(channels: int, width: int) -> nn.ModuleList:
    return nn.ModuleList(
        [
            nn.Conv2d(channels, width, 3, padding=1),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
        ]
    )


@register("noisy-classifier")
class NoisyClassifier(nn.Module):
    """A small CNN conditioned on the timestep (and optionally the class label)."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 8, 8), num_outputs: int = 2, num_classes: int = 0, width: int = 32):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_outputs = num_outputs
        self.num_classes = num_classes
        self.convs = _trunk(image_shape[0], width)
        widths = [width, 2 * width, 2 * width]
        emb = 4 * width
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, emb)
        self.class_embed = nn.Embedding(num_classes + 1, emb) if num_classes else None
        self.film = nn.ModuleList(nn.Linear(emb, w) for w in widths)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(2 * width, 2 * width), nn.SiLU(), nn.Linear(2 * width, num_outputs))

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        emb = self.time_embed(self.time_proj(t).to(x.dtype))  # (b, emb)
        if self.class_embed is not None:
            y = torch.full((b,), self.num_classes, device=x.device) if labels is None else labels.long()
            emb = emb + self.class_embed(y)
        h = x
        for conv, film in zip(self.convs, self.film):
            h = F.silu(conv(h) + film(emb)[:, :, None, None])  # (b, w, h', w')
        return self.head(h.mean(dim=(2, 3)))


@register("router-heads")
class RouterHeads(nn.Module):
    """The heads router's network (``composition.heads``): (b, K) logits g_i(x_t, t, y), a ``NoisyClassifier``
    head per learned column and zero in the reference columns."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 8, 8), columns: int = 2, reference: Sequence[int] = (),
                 num_classes: int = 0, width: int = 32):
        super().__init__()
        self.columns, self.reference = columns, sorted(int(k) for k in reference)
        self.learned = [k for k in range(columns) if k not in self.reference]
        self.heads = nn.ModuleList(NoisyClassifier(image_shape, 1, num_classes, width) for _ in self.learned)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], self.columns, dtype=torch.float32)
        if self.learned:
            out[:, self.learned] = torch.cat([head(x, t, labels).float() for head in self.heads], dim=1)
        return out


@register("feature-cnn")
class FeatureCNN(nn.Module):
    """A clean-image classifier whose penultimate layer is the FLD feature space."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 10, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.convs = _trunk(image_shape[0], width)
        self.proj = nn.Linear(2 * width, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = F.silu(conv(h))
        return F.silu(self.proj(h.mean(dim=(2, 3))))  # (b, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
