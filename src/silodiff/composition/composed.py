"""The composed denoiser: ``ε̂(x_t, t, y) = Σ_{i∈S} w_i(x_t, t, y) ε_i(x_t, t, y)``.

It has exactly the single-denoiser contract, so samplers, auditors and the
service never know about compartments.  Only the allowed members are held
(nothing else is ever loaded or evaluated).  Sparse gating drops members whose
weight on a row is below ``gate`` (a row's largest weight is always kept) and
renormalises, and each member is then run only on the rows that still need it.

Everything runs on the device of ``x``: ``.to(device)`` moves the members, the
router's classifier (a submodule here) and the label prior (a buffer) together.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import SilodiffError
from ..nn.denoisers import Denoiser
from ..nn.lora import BankMember
from .routers import log_label_prior


class ComposedDenoiser(Denoiser):
    def __init__(
        self,
        members: Mapping[str, Denoiser],
        router,
        label_counts: torch.Tensor,
        *,
        gate: float = 0.0,
    ):
        """``label_counts[k, y]``: samples of label y in member k, (K, num_classes)."""
        super().__init__()
        if not members:
            raise SilodiffError("a composition needs at least one compartment")
        if not 0 <= gate < 1:
            raise SilodiffError(f"gate must be in [0, 1), got {gate}")
        self.names = list(members)
        self.members = torch.nn.ModuleList(members.values())
        self.router = router
        classifier = getattr(router, "classifier", None)
        if isinstance(classifier, torch.nn.Module):
            self.router_net = classifier  # a submodule, so .to(device) moves it with the members
        self.gate = gate
        first = self.members[0]
        self.num_classes = first.num_classes
        self.image_shape = first.image_shape
        self.register_buffer("log_prior", log_label_prior(label_counts), persistent=False)  # log λ_i(y), (K, C + 1); null = totals
        self.last_weights: torch.Tensor | None = None
        self._batch_key, self._t_last = None, None
        self._evals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.calls = torch.zeros(len(self.members), dtype=torch.long)  # member forward passes (rows)

    @property
    def priors(self) -> torch.Tensor:
        """λ_i(y), (K, C + 1)."""
        return self.log_prior.exp()

    def held_labels(self) -> list[int]:
        """The labels at least one member was trained on (the ones this composition can be asked for)."""
        return [y for y in range(self.num_classes) if torch.isfinite(self.log_prior[:, y]).any()]

    def _log_prior(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        y = self.null_labels(labels, batch, self.log_prior.device)
        log_prior = self.log_prior[:, y].T  # (b, K)
        empty = torch.isinf(log_prior).all(1)
        if empty.any():
            raise SilodiffError(f"no allowed compartment holds label {int(y[empty][0])}")
        return log_prior

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        key = (b, None if labels is None else labels.data_ptr())
        t_now = int(t.max())
        if self._batch_key != key or self._t_last is None or t_now >= self._t_last:
            self.router.reset(self._log_prior(labels, b))  # a new sampling run
            self._batch_key = key
        self._t_last = t_now
        # 1. weights over the allowed members, (b, K)
        w = self.router.weights(x, t, labels)
        # 2. sparse gating: drop weights below the gate (never a row's largest), renormalise
        if self.gate > 0:
            top = w == w.max(1, keepdim=True).values
            w = torch.where((w >= self.gate) | top, w, torch.zeros_like(w))
            w = w / w.sum(1, keepdim=True)
        # 3. ε̂ = Σ_i w_i ε_i, each member only on its rows; LoRA members of one base in one mixed-adapter pass
        eps = torch.zeros_like(x)
        self._evals = {}
        banked: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for k, member in enumerate(self.members):
            rows = (w[:, k] > 0).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            if isinstance(member, BankMember):
                banked.setdefault(id(member.bank), []).append((k, rows))
                continue
            self._add(k, rows, member(x[rows], t[rows], None if labels is None else labels[rows]), w, eps)
        for group in banked.values():
            bank, rows = self.members[group[0][0]].bank, torch.cat([r for _, r in group])  # (Σ rows,)
            names = [self.members[k].name for k, r in group for _ in range(len(r))]
            e = bank(x[rows], t[rows], None if labels is None else labels[rows], names)
            for (k, r), e_k in zip(group, e.split([len(r) for _, r in group])):
                self._add(k, r, e_k, w, eps)
        self.last_weights = w
        return eps

    def _add(self, k: int, rows: torch.Tensor, e: torch.Tensor, w: torch.Tensor, eps: torch.Tensor) -> None:
        """eps[rows] += w[rows, k] · ε_k(rows), and remember ε_k for the trajectory filter."""
        eps[rows] += w[rows, k].view(-1, *([1] * (eps.ndim - 1))) * e
        self._evals[k] = (rows, e)
        self.calls[k] += len(rows)

    def reset(self) -> None:
        """End the current run: the next forward starts a new one (the router restarts from the prior).
        Callers that query single steps out of order (membership attacks) call this per batch."""
        self._batch_key, self._t_last = None, None

    def observe_step(self, x: torch.Tensor, x_prev: torch.Tensor, step_fn) -> None:
        """Trajectory-filter update: score x_{t-1} under each evaluated member's own step.

        ``step_fn(eps, x) -> (mean, std)`` is the sampler's step; all members' rows go
        through it in one batched call (the step is row-wise).
        """
        observe = getattr(self.router, "observe", None)
        if observe is None or not self._evals:
            return
        rows = [r for r, _ in self._evals.values()]
        mean, std = step_fn(torch.cat([e for _, e in self._evals.values()]), x[torch.cat(rows)])  # (Σ rows, c, h, w)
        means, start = {}, 0
        for k, (r, _) in self._evals.items():
            means[k] = (r, mean[start : start + len(r)])
            start += len(r)
        observe(x_prev, means, std)

    def step_info(self) -> dict:
        return {"weights": self.last_weights, "compartments": self.names}

