"""The ensemble denoiser of encoded-ensemble attribution (Dai & Gifford 2023, arXiv 2306.02174; METHODS.md §3).

``ε̂(x_t, t, y) = Σ_m w_m ε_m(x_t, t, y) / Σ_m w_m``, the (weighted) mean of the
members' predictions, with the single-denoiser contract, so the one sampling
loop runs it unchanged.  Weights are either one vector (M,) for every row or
one vector per row (b, M): a batch can then hold the factual run and many
sub-ensembles at once (row weights 0/1 = "only these members"), and each
member is evaluated only on the rows that give it a non-zero weight.
Weights may carry forward-mode tangents (``torch.func.jvp``): the output is
then differentiable with respect to every member's weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import SilodiffError
from ..nn.denoisers import Denoiser


class EnsembleDenoiser(Denoiser):
    def __init__(
        self, members: Sequence[Denoiser], weights: torch.Tensor | None = None, *, names: Sequence[str] | None = None
    ):
        super().__init__()
        if not members:
            raise SilodiffError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)
        self.names = list(names) if names is not None else [f"member-{m}" for m in range(len(members))]
        if len(self.names) != len(self.members):
            raise SilodiffError(f"{len(self.names)} names for {len(self.members)} members")
        first = self.members[0]
        self.num_classes = first.num_classes
        self.image_shape = tuple(first.image_shape)
        shapes = {tuple(m.image_shape) for m in self.members}
        if len(shapes) != 1:
            raise SilodiffError(f"ensemble members disagree on the image shape: {sorted(shapes)}")
        self.weights = self._check(weights)
        self.calls = [0] * len(self.members)  # member forward passes (rows), shared by every weighted view

    def _check(self, weights: torch.Tensor | None) -> torch.Tensor | None:
        if weights is None:
            return None
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape[-1] != len(self.members) or weights.ndim not in (1, 2):
            raise SilodiffError(
                f"member weights must have shape (M,) or (b, M) with M = {len(self.members)}, got {tuple(weights.shape)}"
            )
        if bool((weights < 0).any()) or bool((weights.sum(-1) <= 0).any()):
            raise SilodiffError("member weights must be ≥ 0 with a positive sum on every row")
        return weights

    def with_weights(self, weights: torch.Tensor | None) -> EnsembleDenoiser:
        """The same members (shared, not copied) under new weights (M,) or (b, M)."""
        view = EnsembleDenoiser(list(self.members), None, names=self.names)
        view.weights = view._check(weights)
        view.calls = self.calls
        return view

    def subset(self, members: Sequence[int]) -> EnsembleDenoiser:
        """The sub-ensemble of the given member indices (equal weights)."""
        w = torch.zeros(len(self.members))
        w[list(members)] = 1.0
        return self.with_weights(w)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        # 1. row weights (b, M), normalised to sum one
        w = torch.ones(len(self.members), device=x.device) if self.weights is None else self.weights.to(x.device)
        w = w.expand(b, -1) if w.ndim == 1 else w
        if w.shape[0] != b:
            raise SilodiffError(f"row weights for {w.shape[0]} rows, batch of {b}")
        w = w / w.sum(1, keepdim=True)
        # 2. ε̂ = Σ_m w_m ε_m, each member only on the rows where its weight is non-zero
        live = w != 0
        eps = torch.zeros_like(x)
        for m, member in enumerate(self.members):
            rows = live[:, m].nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            e = member(x[rows], t[rows], None if labels is None else labels[rows])
            eps = eps.index_add(0, rows, w[rows, m].view(-1, *([1] * (x.ndim - 1))) * e)
            self.calls[m] += len(rows)
        return eps

    def step_info(self) -> dict:
        return {"members": self.names}
