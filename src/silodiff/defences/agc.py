"""Anti-gradient control (AGC): a memorisation defence as a hook of the one training loop.

Liu, Guan, Wu, Miao, "Iterative Ensemble Training with Anti-Gradient Control for
Mitigating Memorization in Diffusion Models", ECCV 2024 (arXiv 2407.15328); METHODS.md §2.

Per step, with per-sample losses ``ℓ_j = mean((ε_θ(x_t, t_j) − ε)²)`` (b,) and a
bank ``M[t]`` (T values, starting at 0) holding an EMA of the loss at timestep t:

  1. keep sample j iff ``ℓ_j · λ ≥ M[t_j]`` (bank as it was before this batch):
     a sample whose loss is far below the usual loss at its timestep is being
     memorised, so its gradient is dropped (the loop averages over kept samples);
  2. update the bank with EVERY sample of the batch, in batch order:
     ``M[t_j] ← d · M[t_j] + (1 − d) · ℓ_j``.  When m samples share a timestep
     the updates are sequential, which in closed form is
     ``M[t] ← d^m M[t] + (1 − d) Σ_r d^{m−1−r} ℓ_(r)`` (r = rank in batch order).

How often each ``sample_id`` was skipped is a memorisation signal: ``report()``
keeps the counts (saved with the artifact's config), ``top_skipped`` ranks them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from ..config import register
from ..errors import SilodiffError


@register("agc")
class AntiGradientControl:
    """The AGC hook: ``on_batch(batch) -> keep-mask (b,) bool``."""

    def __init__(self, lam: float = 2.0, decay: float = 0.8, num_train_timesteps: int = 1000):
        if lam <= 0:
            raise SilodiffError(f"AGC lambda must be > 0, got {lam}")
        if not 0 <= decay < 1:
            raise SilodiffError(f"AGC decay must be in [0, 1), got {decay}")
        self.lam = lam
        self.decay = decay
        self.num_train_timesteps = num_train_timesteps
        self.bank_ = torch.zeros(num_train_timesteps, dtype=torch.float64)  # M[t]
        self.skips_: Counter[str] = Counter()
        self.seen_: Counter[str] = Counter()

    def on_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        t = batch["t"].long().cpu()  # (b,); the bank lives on the CPU whatever the training device
        loss = batch["loss"].detach().double().cpu()  # (b,)
        # 1. the mask, against the bank before this batch
        keep = loss * self.lam >= self.bank_[t]
        # 2. sequential EMA updates of every sample, in closed form per timestep
        self.update_bank(t, loss)
        ids = batch.get("ids")
        if ids is not None:
            self.seen_.update(ids)
            self.skips_.update(i for i, k in zip(ids, keep.tolist()) if not k)
        return keep.to(batch["loss"].device)

    @torch.no_grad()
    def update_bank(self, t: torch.Tensor, loss: torch.Tensor) -> None:
        """``M[t_j] ← d M[t_j] + (1 − d) ℓ_j`` for j = 1..b in order (vectorised)."""
        d = self.decay
        order = torch.sort(t, stable=True).indices  # groups of equal t, batch order kept inside
        ts, ls = t[order], loss[order]
        uniq, inverse, counts = torch.unique_consecutive(ts, return_inverse=True, return_counts=True)
        first = torch.cumsum(counts, 0) - counts  # index of each group's first sample
        rank = torch.arange(len(ts)) - first[inverse]  # 0..m−1 within a group
        m = counts[inverse]
        contrib = (1 - d) * d ** (m - 1 - rank).double() * ls  # (b,)
        added = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, contrib)
        self.bank_[uniq] = d ** counts.double() * self.bank_[uniq] + added

    # -- the memorisation signal ------------------------------------------------
    def top_skipped(self, k: int = 10) -> list[dict[str, Any]]:
        """The k most skipped samples: sample_id, skips, times seen, skip rate."""
        return _rank(self.skips_, self.seen_, k)

    def skipped_fraction(self) -> float:
        seen = sum(self.seen_.values())
        return sum(self.skips_.values()) / seen if seen else 0.0

    def report(self) -> dict[str, Any]:
        return {"lam": self.lam, "decay": self.decay, "skips": dict(sorted(self.skips_.items())),
                "seen": dict(sorted(self.seen_.items()))}

    def summary(self) -> dict[str, Any]:
        return {"skipped_fraction": round(self.skipped_fraction(), 5),
                "top_skipped": [[r["sample_id"][:12], r["skips"]] for r in self.top_skipped(5)]}

    def merge(self, other: "AntiGradientControl") -> "AntiGradientControl":
        """Add another hook's counts (IET: one hook per shard, one report for the artifact)."""
        self.skips_.update(other.skips_)
        self.seen_.update(other.seen_)
        return self


def skip_counts(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per sample_id ``{"skips", "seen"}`` from a saved AGC report (artifact config ``info``)."""
    seen = report.get("seen", {})
    return {s: {"skips": report.get("skips", {}).get(s, 0), "seen": n} for s, n in seen.items()}


def top_skips(report: dict[str, Any], k: int = 10) -> list[dict[str, Any]]:
    """The k most skipped samples of a saved AGC report (artifact config ``info["hooks"]["agc"]``)."""
    return _rank(report.get("skips", {}), report.get("seen", {}), k)


def _rank(skips: dict[str, int], seen: dict[str, int], k: int) -> list[dict[str, Any]]:
    ranked = sorted(skips.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [{"sample_id": s, "skips": n, "seen": seen[s], "skip_rate": round(n / seen[s], 4)} for s, n in ranked]


def agc_hooks(lam: float = 2.0, decay: float = 0.8, num_train_timesteps: int = 1000) -> list[dict[str, Any]]:
    """AGC as plain-data hook specs for ``train_compartments(..., hooks=)`` / ``train_paragon``."""
    from ..training.hooks import hook_spec

    return [hook_spec(AntiGradientControl(lam, decay, num_train_timesteps))]
