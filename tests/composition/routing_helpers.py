"""Shared by the router tests: the router's weights on noised training images."""

from __future__ import annotations

import torch

from silodiff.training import noise_scheduler


def router_weights(model, x0: torch.Tensor, labels: torch.Tensor | None = None, t: int = 20):
    """(x_t, t, weights) of a composition's router on ``x0`` noised to step ``t`` (fixed noise); ``labels`` None:
    the unconditional weights (the null label)."""
    t = torch.full((len(x0),), t)
    x_t = noise_scheduler().add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), t)
    model.router.reset(model._log_prior(labels, len(x0)))
    with torch.no_grad():
        return x_t, t, model.router.weights(x_t, t, labels)
