"""Routers estimate the composition weights ``w_i(x_t, t) = P(i | x_t[, y])``
(Golatkar et al. 2023, arXiv 2308.01937; METHODS.md §1).

All three share one interface, over the allowed compartments only:
  ``reset(log_prior)``         log λ_i(y) per sample, (b, K), −inf where i has no example of y
  ``weights(x_t, t, labels)``  (b, K), rows sum to one
  ``observe(...)``             optional: the trajectory filter's Bayes update

- ``UniformRouter``: w = λ(y) (the baseline the paper warns against).
- ``ClassifierRouter``: a shard classifier trained on noised samples labelled by
  compartment.  Its logits ``g_i(x_t, t, y)`` are the log-likelihood part only:
  ``w_i ∝ λ_i(y) · exp g_i`` (Bayes, with the label prior λ_i(y) applied exactly;
  ``router_loss`` trains it that way), restricted to the allowed set by a softmax
  over the allowed columns (= P(i | x_t, y, i ∈ S)).
- ``TrajectoryFilter``: log w_i ← log w_i + log N(x_{t−1}; μ_i(x_t, t), σ_t² I),
  exact for exact models and needing no extra network.
"""

from __future__ import annotations

import torch

from ..errors import SilodiffError


def log_label_prior(label_counts: torch.Tensor) -> torch.Tensor:
    """log λ_i(y) = log(|D_i ∩ y| / |y|) from ``label_counts`` (K, C); column C is the null label
    (λ_i = |D_i| / Σ|D_j|), −inf where compartment i has no example of y, (K, C + 1)."""
    counts = label_counts.double()
    counts = torch.cat([counts, counts.sum(1, keepdim=True)], dim=1)
    return (counts / counts.sum(0, keepdim=True).clamp(min=1)).log().float()


def router_loss(targets: torch.Tensor, log_prior: torch.Tensor, null_label: int):
    """The shard classifier's objective, per sample (b,): cross-entropy of ``log λ(y) + g(x_t, t, y)``
    against the compartment, for the sample's label and for the null label alike.

    The prior offset leaves the network only what the label does not already say
    (with class-disjoint compartments the label says everything, and a network fed
    it learns that shortcut and nothing from the image); training both labels on
    every sample keeps the unconditional router as good as the conditional one.
    """
    floor = log_prior.clamp(min=-30.0)  # finite, so log-softmax stays finite where λ_i(y) = 0

    def loss_fn(model: torch.nn.Module, batch: dict, scheduler) -> torch.Tensor:
        x_t = scheduler.add_noise(batch["x0"], batch["noise"], batch["t"])
        b = len(x_t)
        y = torch.cat([batch["labels"], torch.full_like(batch["labels"], null_label)])  # (2b,): label, then null
        logits = model(x_t.repeat(2, 1, 1, 1), batch["t"].repeat(2), y).float() + floor.to(x_t.device)[:, y].T  # (2b, K)
        ce = torch.nn.functional.cross_entropy(logits, targets[batch["rows"]].to(x_t.device).repeat(2), reduction="none")
        return ce[:b] + ce[b:]

    return loss_fn


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
        self.log_prior = log_prior  # (b, K); −inf (weight exactly zero) where i has no example of y

    def weights(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logits = self.classifier(x, t, labels)[:, self.columns.to(x.device)].float()  # (b, K)
        return (logits + self.log_prior).softmax(-1)


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
