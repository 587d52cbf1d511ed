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

from ..devices import device_of, seeded
from ..errors import SilodiffError
from ..training import loss_grid as shared_loss_grid
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
    the same x_t (``training.loss_grid`` with a freshly seeded generator).  Ascending t:
    a stateful router restarts on each call.
    """
    return shared_loss_grid(model, x0, labels, timesteps.tolist(), draws=draws,
                            generator=seeded(seed, device_of(model)), copies=copies)


def nll_bound(losses: torch.Tensor, weights: torch.Tensor, pixels: int) -> torch.Tensor:
    """``Σ_g W_g · D · ℓ_g``: the bound on −log p(x_0) up to a model-independent constant, (n,)."""
    return (losses * weights).sum(-1) * pixels
