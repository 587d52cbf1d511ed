"""The adapter soup: LoRA compartments of one base composed in weight space instead of output space.

``compose(store, combine="soup")`` returns an :class:`AdapterSoup`: the base with the allowed compartments'
adapter updates averaged into its weights, ``W = W_base + Σ_i w_i ΔW_i`` with ``w_i`` each compartment's share
of the samples (``nn.lora.adapter_soup``).  It is one denoiser, so it samples at the cost of one model and needs
no router.  It is built when loaded, from the active adapters of exactly the allowed compartments, so forgetting
stays exact: a forget retrains one adapter, and the next soup is averaged from the new one; a key's soup holds only
the adapters its rights allow.  How well it does where owners differ (by class, say) depends on how far their
adapters moved from the base: adapters trained with replay stay close and average well; adapters that each learned
a few classes alone blur in a soup, and the routed mixture keeps them apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import SilodiffError
from ..nn.denoisers import Denoiser
from ..nn.lora import LoraDenoiser, adapter_soup


class AdapterSoup(Denoiser):
    """A soup of ``members`` (name → LoRA denoiser on one base; ``base`` names the base itself, if a member),
    weighted by their sample counts ``label_counts[name] = {label: n}``."""

    def __init__(self, members: Mapping[str, torch.nn.Module], label_counts: Mapping[str, Mapping[int, int]],
                 base: str | None = None):
        super().__init__()
        adapters = {n: m for n, m in members.items() if n != base}
        plain = sorted(n for n, m in adapters.items() if not isinstance(m, LoraDenoiser))
        if plain:
            raise SilodiffError(f"a soup needs LoRA compartments of one base; not LoRA: {', '.join(plain)}")
        if base is not None and getattr(members[base], "artifact_hash", None) != next(iter(adapters.values())).base_hash:
            raise SilodiffError("the base member is not the base these adapters were trained from")
        totals = {n: sum(label_counts[n].values()) for n in members}
        total = sum(totals.values())
        self.names = list(members)
        self.weights = {n: totals[n] / total for n in members}  # the base's share, if a member, is its Δ = 0
        self.model = adapter_soup(adapters, {n: self.weights[n] for n in adapters})
        self.num_classes, self.image_shape = self.model.num_classes, self.model.image_shape
        self._held = sorted({int(y) for n in members for y, c in label_counts[n].items() if c > 0})

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, t, labels)

    def held_labels(self) -> list[int]:
        """The labels at least one member was trained on (the ones this soup can be asked for)."""
        return list(self._held)
