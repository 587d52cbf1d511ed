"""``WeightRecorder``: a sampler callback that keeps a composed model's weights w_i(x_t, t) per image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class WeightRecorder:
    """A sampler callback that accumulates a composed model's per-image weights."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | None = None
        self.last: torch.Tensor | None = None
        self.steps = 0
        self.chunks: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, info: dict[str, Any]) -> None:
        w = info.get("weights")
        if w is None:
            return
        if info["i"] == 0 and self.sum is not None:
            self.flush()
        w = w.detach().float().cpu()
        self.sum = w.clone() if self.sum is None else self.sum + w
        self.last = w.clone()
        self.steps += 1

    def flush(self) -> None:
        if self.sum is not None:
            self.chunks.append((self.sum / self.steps, self.last))
        self.sum, self.last, self.steps = None, None, 0

    def result(self) -> tuple[np.ndarray, np.ndarray] | None:
        self.flush()
        if not self.chunks:
            return None
        return torch.cat([m for m, _ in self.chunks]).numpy(), torch.cat([l for _, l in self.chunks]).numpy()
