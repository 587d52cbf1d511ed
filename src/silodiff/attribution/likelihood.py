"""A likelihood proxy from the denoising loss over a timestep grid (Ho et al. 2020, eq. 12; METHODS.md §1, §3).

The DDPM bound with σ_t² = β_t and ε-prediction is, up to a constant that does
not depend on the model,

    −log p_θ(x_0) ≲ Σ_t w_t · D · ℓ_t(x_0),   w_t = β_t / (2 α_t (1 − ᾱ_t)),

with ``ℓ_t = mean over the D pixels of (ε_θ(x_t, t) − ε)²``.  We estimate it on G
timesteps (the midpoints of G equal bins of 0..T−1, each weighted by the sum
of w_t over its bin) and a few noise draws, the same draws for every model
compared (common random numbers), so differences between models are far less
noisy than either estimate.
"""

from __future__ import annotations

import torch

from ..errors import SilodiffError
from ..training import noise_scheduler


def timestep_grid(n: int = 20, num_train_timesteps: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t_g, W_g)``: G bin midpoints and the sum of the bound's weights w_t over each bin, (G,) each."""
    if not 1 <= n <= num_train_timesteps:
        raise SilodiffError(f"the timestep grid needs 1..{num_train_timesteps} points, got {n}")
    s = noise_scheduler(num_train_timesteps)
    w = s.betas / (2 * s.alphas * (1 - s.alphas_cumprod))  # (T,)
    edges = torch.linspace(0, num_train_timesteps, n + 1).round().long()
    mids = ((edges[:-1] + edges[1:] - 1) // 2).clamp(max=num_train_timesteps - 1)
    weights = torch.stack([w[a:b].sum() for a, b in zip(edges[:-1].tolist(), edges[1:].tolist())])
    return mids, weights.float()


@torch.no_grad()
def loss_grid(
    model: torch.nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    timesteps: torch.Tensor,
    *,
    draws: int = 2,
    seed: int = 0,
    copies: int = 1,
) -> torch.Tensor:
    """Per-image denoising loss at each grid timestep, averaged over ``draws`` noise draws, (copies·n, G).

    The noise depends only on ``seed`` and the shape of ``x0``, so two models see exactly
    the same x_t.  ``copies`` stacks the batch that many times (copy-major) with the
    same noise, for a model that takes per-row weights (one sub-ensemble per copy).
    """
    scheduler = noise_scheduler()
    gen = torch.Generator().manual_seed(seed)
    n = len(x0)
    x_rep = x0.repeat(copies, *([1] * (x0.ndim - 1)))  # (copies·n, c, h, w)
    y_rep = None if labels is None else labels.repeat(copies)
    out = torch.zeros(copies * n, len(timesteps))
    for g, t in enumerate(timesteps.tolist()):  # ascending t: a stateful router restarts on each call
        for _ in range(draws):
            noise = torch.randn(x0.shape, generator=gen).repeat(copies, *([1] * (x0.ndim - 1)))
            t_rows = torch.full((copies * n,), int(t), dtype=torch.long)
            out[:, g] += model.loss(x_rep, y_rep, t_rows, noise, scheduler) / draws
    return out


def nll_bound(losses: torch.Tensor, weights: torch.Tensor, pixels: int) -> torch.Tensor:
    """``Σ_g W_g · D · ℓ_g``: the bound on −log p(x_0) up to a model-independent constant, (n,)."""
    return (losses * weights).sum(-1) * pixels
