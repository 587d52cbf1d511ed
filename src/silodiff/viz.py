"""Pictures people would rather look at than read: sample grids and weight bars.

matplotlib is imported lazily (headless ``Agg`` backend) so the library core
never pays for it.  Every function writes a PNG atomically and returns its path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    os.replace(tmp, path)
    return path


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """(n, c, h, w) in [-1, 1] → one (H, W[, 3]) array in [0, 1] with ``pad`` pixel gaps."""
    x = images.detach().add(1).div(2).clamp(0, 1).cpu().numpy()
    n, c, h, w = x.shape
    ncol = nrow
    nrows = int(np.ceil(n / ncol))
    grid = np.ones((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad))
    for i in range(n):
        r, k = divmod(i, ncol)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = x[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 10, title: str | None = None) -> Path:
    plt = _plt()
    grid = image_grid(images, nrow)
    fig, ax = plt.subplots(figsize=(max(3, grid.shape[1] / 12), max(3, grid.shape[0] / 12)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def save_weight_bars(weights: np.ndarray, names: list[str], path: str | Path, *, title: str = "") -> Path:
    """One bar chart of compartment weights (or attributions) per row of ``weights`` (n, K)."""
    plt = _plt()
    weights = np.atleast_2d(weights)
    n = len(weights)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n + 1, 2.4), squeeze=False)
    for ax, w in zip(axes[0], weights):
        ax.bar(range(len(names)), w, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
