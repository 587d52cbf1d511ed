"""The demo's quality step: FLD (and class accuracy) of each model on the same labels and noise, and its samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..audit import class_accuracy, fld
from ..sampling import balanced_labels, generate


class QualityTable:
    """Rows of FLD / class accuracy / sampling seconds, one per model, and a grid of each model's samples.

    Every row samples ``n`` images with the same ``seed``, ``steps`` ancestral DDPM steps and class-balanced
    labels (or none: an unconditional row), scored against ``real`` in the features of ``net``.
    """

    def __init__(self, net: torch.nn.Module, real: torch.Tensor, out: Path, *, n: int, steps: int, seed: int = 1):
        self.net, self.real, self.out = net, real, Path(out)
        self.n, self.steps, self.seed = n, steps, seed
        self.labels = balanced_labels(n, 10)
        self.rows: list[dict[str, Any]] = []
        self.grids: dict[str, Path] = {}

    def add(self, name: str, model: torch.nn.Module, conditional: bool = True) -> None:
        """FLD (and class accuracy, for class-conditional samples) of one model; its grid of samples."""
        from ..viz import save_grid

        name = name if conditional else f"{name} (unconditional)"
        t0 = time.perf_counter()
        labels = self.labels if conditional else None
        images, _ = generate(model, self.n, labels=labels, steps=self.steps, seed=self.seed)
        accuracy = round(class_accuracy(self.net, images, self.labels), 3) if conditional else None
        self.rows.append({"model": name, "fld": round(fld(self.net, images, self.real), 3), "class_accuracy": accuracy,
                          "sampling_s": round(time.perf_counter() - t0, 2)})
        slug = name.replace("/", "-").replace(" (unconditional)", "-unconditional")
        self.grids[name] = save_grid(images[:100], self.out / f"samples-{slug}.png", nrow=10, title=name)
        print(f"[demo] {name}: FLD {self.rows[-1]['fld']}, accuracy {self.rows[-1]['class_accuracy']}", flush=True)
