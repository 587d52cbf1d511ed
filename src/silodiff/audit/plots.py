"""The audit report's pictures: memorised generations beside their nearest
training images, ROC curves per attack, the memorisation-ratio histogram.

matplotlib is imported lazily through ``silodiff.viz``; every function writes a
PNG atomically and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..viz import _plt, _save, image_grid


def save_pairs(
    generated: torch.Tensor, nearest: torch.Tensor, ratios: np.ndarray, path: str | Path, *, title: str = ""
) -> Path:
    """Row 1: generations; row 2: their nearest training images; NN ratio under each pair."""
    plt = _plt()
    n = len(generated)
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n + 0.6, 2.6), squeeze=False)
    for j in range(n):
        for row, images in enumerate((generated, nearest)):
            ax = axes[row][j]
            ax.imshow(image_grid(images[j : j + 1], 1, pad=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1][j].set_xlabel(f"{ratios[j]:.2f}", fontsize=8)
    axes[0][0].set_ylabel("generated", fontsize=8)
    axes[1][0].set_ylabel("nearest\ntraining", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def save_roc(curves: dict[str, dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """``curves[name] = {"fpr", "tpr", "auc", "best_t"}``: one ROC per attack, linear and log-log."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8))
    for name, c in curves.items():
        label = f"{name} (t={c['best_t']}, AUC {c['auc']:.3f})"
        for ax in axes:
            ax.plot(c["fpr"], c["tpr"], label=label)
    for ax in axes:
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlim(1e-3, 1)
    axes[1].set_ylim(1e-3, 1)
    axes[1].axvline(0.01, color="grey", lw=0.6, ls=":")
    axes[0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def save_ratio_hist(nn_ratio: np.ndarray, carlini: np.ndarray, path: str | Path, *, nn_threshold: float = 1 / 3,
                    title: str = "") -> Path:
    """Histograms of the NN ratio (threshold marked) and the IET-AGC ratio."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2))
    bins = np.linspace(0, 1, 41)
    axes[0].hist(np.clip(nn_ratio, 0, 1), bins=bins, color="tab:blue")
    axes[0].axvline(nn_threshold, color="tab:red", ls="--", label=f"memorised < {nn_threshold:.2f}")
    axes[0].set_xlabel("d(x̂, NN1) / d(x̂, NN2)")
    axes[0].legend(fontsize=7)
    axes[1].hist(np.clip(carlini, 0, 1), bins=bins, color="tab:orange")
    axes[1].set_xlabel("d²(x̂, NN1) / mean d²(x̂, NN1..50)")
    for ax in axes:
        ax.set_ylabel("generated images")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
