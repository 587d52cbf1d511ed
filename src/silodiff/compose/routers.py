"""Routers estimate the composition weights ``w_i(x_t, t) = P(i | x_t[, y])``
(Golatkar et al. 2023, arXiv 2308.01937; METHODS.md §1).

All three share one interface, over the allowed compartments only:
  ``reset(log_prior)``         log λ_i(y) per sample, (b, K), −inf where i has no example of y
  ``weights(x_t, t, labels)``  (b, K), rows sum to one
  ``observe(...)``             optional: the trajectory filter's Bayes update

- ``UniformRouter``: w = λ(y) (the baseline the paper warns against).
- ``ClassifierRouter``: a shard classifier f(x_t, t, y) trained on noised samples
  labelled by compartment, restricted to the allowed set by a softmax over the
  allowed logits (= P(i | x_t, i ∈ S)).
- ``TrajectoryFilter``: log w_i ← log w_i + log N(x_{t−1}; μ_i(x_t, t), σ_t² I),
  exact for exact models and needing no extra network.
"""

from __future__ import annotations

import torch

from ..errors import SilodiffError


class UniformRouter:
    name = "uniform"

    def reset(self, log_prior: torch.Tensor) -> None:
        self.log_prior = log_prior

    def weights(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.log_prior.softmax(-1)


class ClassifierRouter:
    """Shard-classifier weights; ``columns`` picks the allowed compartments' logits."""

    name = "classifier"

    def __init__(self, classifier: torch.nn.Module, columns: list[int]):
        self.classifier = classifier
        self.columns = torch.as_tensor(columns, dtype=torch.long)

    def reset(self, log_prior: torch.Tensor) -> None:
        self.support = torch.isfinite(log_prior)  # compartments with no example of y stay at zero

    def weights(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logits = self.classifier(x, t, labels)[:, self.columns]  # (b, K)
        return logits.masked_fill(~self.support, float("-inf")).softmax(-1)


class TrajectoryFilter:
    """Posterior over compartments from the sampling trajectory itself."""

    name = "trajectory"

    def reset(self, log_prior: torch.Tensor) -> None:
        self.log_w = log_prior.clone()

    def weights(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.log_w.softmax(-1)

    def observe(self, x_prev: torch.Tensor, means: dict[int, tuple[torch.Tensor, torch.Tensor]], std: float) -> None:
        """``means[k] = (rows, μ_k)``: member k's step mean on the rows it was evaluated on."""
        if std <= 0:
            return  # the last step (t = 0) is deterministic and carries no evidence
        log_lik = torch.full_like(self.log_w, float("-inf"))  # members not evaluated on a row are dropped there
        for k, (rows, mu) in means.items():
            log_lik[rows, k] = -(x_prev[rows] - mu).pow(2).flatten(1).sum(1) / (2 * std**2)
        log_w = self.log_w + log_lik
        self.log_w = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)


ROUTERS = ("classifier", "trajectory", "uniform")


def check_router(name: str) -> str:
    if name not in ROUTERS:
        raise SilodiffError(f"unknown router {name!r}: use one of {ROUTERS}")
    return name
