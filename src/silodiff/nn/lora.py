"""LoRA adapters on a frozen base denoiser (Hu et al. 2021), through peft.

A compartment fine-tuned from a shared base stores only its adapter.  Each
adapted layer computes ``W x + (α/r) · B A x`` with ``A ∈ R^{r×d_in}``,
``B ∈ R^{d_out×r}`` (B starts at zero, so an untrained adapter is the base
exactly) and ``W`` frozen.  peft injects the low-rank layers into the base's
``nn.Linear`` / ``nn.Conv2d`` / ``nn.Embedding`` modules; this file only
decides which modules, keeps the state dict adapter-only, and writes a folder
that ``peft.PeftModel.from_pretrained`` loads.

The contract is the denoiser's: ``eps = model(x_t, t, labels)`` and
``model.loss(...)``, so the training loop, samplers and composer see an
ordinary denoiser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..config import build, register
from ..errors import SilodiffError
from .denoisers import Denoiser

ADAPTABLE = (nn.Linear, nn.Conv2d, nn.Embedding)
ADAPTER_NAME = "default"


def adaptable_modules(model: nn.Module) -> list[str]:
    """Names of the leaf layers LoRA can adapt (linear, conv, embedding), in module order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, ADAPTABLE)]


def resolve_targets(model: nn.Module, patterns: Iterable[str] | None) -> list[str]:
    """The adaptable module names matching any of ``patterns`` (regexes, full match); ``None``: every one.

    Raises ``SilodiffError`` when nothing matches, so a typo never trains an adapter on zero layers.
    """
    names = adaptable_modules(model)
    if patterns is None:
        return names
    patterns = list(patterns)
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as e:
        raise SilodiffError(f"target module pattern is not a valid regex: {e}") from None
    hits = [n for n in names if any(c.fullmatch(n) or c.fullmatch(n.rsplit(".", 1)[-1]) for c in compiled)]
    if not hits:
        raise SilodiffError(f"target modules {patterns} match no linear, conv or embedding layer of the model "
                            f"(examples: {', '.join(names[:4])})")
    return hits


def lora_config(rank: int, alpha: float | None, targets: list[str], dropout: float = 0.0):
    """The peft ``LoraConfig`` for exact target names (peft matches a list by name suffix)."""
    from peft import LoraConfig

    if rank < 1:
        raise SilodiffError(f"LoRA rank must be ≥ 1, got {rank}")
    if alpha is not None and alpha <= 0:
        raise SilodiffError(f"LoRA alpha must be > 0, got {alpha}")
    if not 0 <= dropout < 1:
        raise SilodiffError(f"LoRA dropout must be in [0, 1), got {dropout}")
    # Anchored regex: a plain list would also match any module whose name ends with a target's name.
    pattern = "^(" + "|".join(re.escape(t) for t in targets) + ")$"
    return LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), target_modules=pattern,
                      lora_dropout=dropout, bias="none", init_lora_weights=True)


@register("lora-denoiser")
class LoraDenoiser(Denoiser):
    """A frozen base denoiser with LoRA adapters; its state dict holds the adapter only.

    ``base`` is the base model's config (``{"kind": ..., ...}``) and ``base_hash`` the
    artifact whose weights it carries; the store loads those weights with
    :meth:`load_base` before the adapter.  ``targets`` are regexes over module names
    (``None``: every linear, conv and embedding layer).
    """

    def __init__(self, base: Mapping, base_hash: str | None = None, rank: int = 4, alpha: float | None = None,
                 targets: list[str] | None = None, dropout: float = 0.0):
        super().__init__()
        from peft import inject_adapter_in_model

        self.base_hash = base_hash
        self.base = build(dict(base))
        self.num_classes = getattr(self.base, "num_classes", 0)
        self.image_shape = getattr(self.base, "image_shape", None)
        self.target_names = resolve_targets(self.base, targets)
        self.lora = lora_config(rank, alpha, self.target_names, dropout)
        self._base_keys = set(self.base.state_dict())
        inject_adapter_in_model(self.lora, self.base, adapter_name=ADAPTER_NAME)
        for name, p in self.named_parameters():
            p.requires_grad_("lora_" in name)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.base(x, t, labels)

    # -- the state dict is the adapter only ------------------------------------------------------------------
    def adapter_keys(self) -> list[str]:
        return [k for k in super().state_dict() if "lora_" in k]

    def state_dict(self, *args, **kwargs):  # noqa: D102 — adapter tensors only, keyed as in the full module
        full = super().state_dict(*args, **kwargs)
        return type(full)((k, v) for k, v in full.items() if "lora_" in k)

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        extra = [k for k in state_dict if "lora_" not in k]
        missing = sorted(set(self.adapter_keys()) - set(state_dict))
        if strict and (extra or missing):
            raise SilodiffError(f"adapter state mismatch: {len(missing)} missing, {len(extra)} unexpected keys "
                                f"(e.g. {(missing + extra)[:2]})")
        return super().load_state_dict({k: v for k, v in state_dict.items() if "lora_" in k}, strict=False, assign=assign)

    def load_base(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy the base artifact's sampler weights into the frozen layers (peft renamed them ``base_layer``)."""
        own = super().state_dict()
        mapped = {}
        for key, value in tensors.items():
            if not key.startswith("base.") and key in self._base_keys:
                key = "base." + key
            if key.startswith("base."):
                inner = key[len("base."):]
                head, _, leaf = inner.rpartition(".")
                renamed = f"base.{head}.base_layer.{leaf}" if head else key
                mapped[renamed if renamed in own else key] = value
        unknown = sorted(set(mapped) - set(own))
        absent = sorted(k for k in own if "lora_" not in k and k not in mapped)
        if unknown or absent:
            raise SilodiffError(f"base weights do not fit this adapter's base model "
                                f"({len(absent)} missing, {len(unknown)} unexpected, e.g. {(absent + unknown)[:2]})")
        super().load_state_dict(mapped, strict=False)

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen base's weights under the base model's own names (what ``load_base`` reads)."""
        out = {}
        for key, value in super().state_dict().items():
            if "lora_" in key:
                continue
            out[key[len("base."):].replace(".base_layer.", ".")] = value
        return out

    def adapter_bytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.state_dict().values())

    # -- peft interop ---------------------------------------------------------------------------------------------
    def export_peft(self, out: str | Path) -> Path:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` that ``PeftModel.from_pretrained`` loads.

        The adapter targets the base denoiser (``build(config["base"])`` with the base weights), so
        ``PeftModel.from_pretrained(base, out)`` reproduces this model's ε.
        """
        from peft import get_peft_model

        base = build(dict(self.config["base"]))
        base.load_state_dict(self.base_state_dict())
        peft_model = get_peft_model(base, self.lora)
        adapter = {k[len("base."):]: v for k, v in self.state_dict().items()}  # the same module tree, unprefixed
        result = peft_model.base_model.model.load_state_dict(adapter, strict=False)
        if result.unexpected_keys:
            raise SilodiffError(f"peft's model has no layer for adapter keys {result.unexpected_keys[:2]}")
        out = Path(out)
        peft_model.save_pretrained(str(out), safe_serialization=True)
        return out
