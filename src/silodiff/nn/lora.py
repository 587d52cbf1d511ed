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
import warnings
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

    def base_model(self) -> Denoiser:
        """A fresh copy of the frozen base denoiser, without the adapter."""
        base = build(dict(self.config["base"]))
        base.load_state_dict(self.base_state_dict())
        return base.eval()

    # -- peft interop ---------------------------------------------------------------------------------------------
    def _peft_model(self, unet_only: bool = False):
        """A fresh peft ``PeftModel`` over a copy of the base (``unet_only``: over its diffusers ``UNet2DModel``),
        holding this adapter; silodiff's own modules are left untouched."""
        from peft import get_peft_model

        base = self.base_model()
        prefix, target, config = "base.", base, self.lora
        if unet_only:
            if not hasattr(base, "unet"):
                raise SilodiffError("this adapter's base is not a UNet: its peft adapter targets the silodiff denoiser")
            prefix, target = "base.unet.", base.unet
            names = [t.removeprefix("unet.") for t in self.target_names if t.startswith("unet.")]
            config = lora_config(self.config["rank"], self.config["alpha"], names, self.config["dropout"])
        peft_model = get_peft_model(target, config)
        adapter = {k[len(prefix):]: v for k, v in self.state_dict().items()}  # the same module tree, unprefixed
        result = peft_model.base_model.model.load_state_dict(adapter, strict=False)
        if result.unexpected_keys:
            raise SilodiffError(f"peft's model has no layer for adapter keys {result.unexpected_keys[:2]}")
        return peft_model, base

    def export_peft(self, out: str | Path, *, unet_only: bool = False) -> Path:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` that ``PeftModel.from_pretrained`` loads.

        The adapter targets the base denoiser (``build(config["base"])`` with the base weights), so
        ``PeftModel.from_pretrained(base, out)`` reproduces this model's ε; ``unet_only``: it targets the base's
        diffusers ``UNet2DModel`` instead (module names without the ``unet.`` prefix), for use without silodiff.
        """
        peft_model, _ = self._peft_model(unet_only)
        out = Path(out)
        peft_model.save_pretrained(str(out), safe_serialization=True)
        return out

    def merged(self) -> Denoiser:
        """The base denoiser with this adapter merged into its weights (``W + (α/r) B A``): a plain model, same ε."""
        peft_model, _ = self._peft_model()
        return peft_model.merge_and_unload().eval()


BASE_ROWS = "__base__"  # peft's name for "no adapter on these rows"


class AdapterBank(nn.Module):
    """One frozen base in memory with K named LoRA adapters, evaluated in one mixed-adapter batch.

    ``AdapterBank(adapters)`` takes LoRA denoisers that share a base (same ``base_hash``) and copies each
    one's adapter into a single copy of the base under its own peft adapter name.  ``forward(x, t, labels,
    adapters)`` runs row i through adapter ``adapters[i]`` (``None``: the base alone): peft computes every
    frozen layer once over the whole batch and adds each adapter's ``(α/r) B A x`` on its own rows, so K
    members cost one pass over K·b rows and one base's memory instead of K models.
    """

    def __init__(self, adapters: Mapping[str, LoraDenoiser]):
        super().__init__()
        from peft import inject_adapter_in_model

        if not adapters:
            raise SilodiffError("an adapter bank needs at least one adapter")
        first = next(iter(adapters.values()))
        if len({a.base_hash for a in adapters.values()}) != 1:
            raise SilodiffError("adapters in one bank must share one base")
        self.base = build(dict(first.config["base"]))
        self.base.load_state_dict(first.base_state_dict())
        self.base.requires_grad_(False)
        self.num_classes, self.image_shape = first.num_classes, first.image_shape
        self.keys = {name: f"a{k}" for k, name in enumerate(adapters)}  # peft adapter names must be identifiers
        for name, model in adapters.items():
            key = self.keys[name]
            with warnings.catch_warnings():  # "multiple adapters in the model": that is the point of a bank
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                inject_adapter_in_model(model.lora, self.base, adapter_name=key)
            rename = re.compile(rf"\.{ADAPTER_NAME}(\.|$)")  # lora_A.default.weight; lora_embedding_A.default
            own = {rename.sub(rf".{key}\1", k[len("base."):]): v for k, v in model.state_dict().items()}
            result = self.base.load_state_dict(own, strict=False)
            if result.unexpected_keys:
                raise SilodiffError(f"adapter {name!r} does not fit the bank's base: {result.unexpected_keys[:2]}")
        self.eval()

    def _layers(self):
        from peft.tuners.lora import LoraLayer

        return [m for m in self.base.modules() if isinstance(m, LoraLayer)]

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None, adapters: list[str | None]
                ) -> torch.Tensor:
        names = [BASE_ROWS if a is None else self.keys[a] for a in adapters]
        hooks = [m.register_forward_pre_hook(lambda mod, args, kwargs: (args, {**kwargs, "adapter_names": names}),
                                             with_kwargs=True) for m in self._layers()]
        try:
            return self.base(x, t, labels)
        finally:
            for h in hooks:
                h.remove()

    def forward_one_by_one(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, adapters: list[str | None]
                           ) -> torch.Tensor:
        """The same ε, switching the active adapter per member (the baseline the mixed batch is measured against)."""
        out = torch.empty_like(x)
        layers = self._layers()
        for a in dict.fromkeys(adapters):
            rows = torch.tensor([i for i, b in enumerate(adapters) if b == a])
            for m in layers:
                if a is None:
                    m.set_adapter([])
                else:
                    m.set_adapter(self.keys[a])
            out[rows] = self.base(x[rows], t[rows], None if labels is None else labels[rows])
        for m in layers:
            m.set_adapter(list(self.keys.values())[0])
        return out

    def member(self, name: str | None) -> "BankMember":
        return BankMember(self, name)


class BankMember(Denoiser):
    """One adapter of a bank (``None``: the bank's base) as an ordinary denoiser; a composition that holds several
    members of one bank evaluates them together (``bank.forward`` over their rows)."""

    def __init__(self, bank: AdapterBank, name: str | None):
        super().__init__()
        self.bank, self.name = bank, name
        self.num_classes, self.image_shape = bank.num_classes, bank.image_shape

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.bank(x, t, labels, [self.name] * len(x))


def share_bases(members: Mapping[str, nn.Module], base: nn.Module | None = None, base_name: str | None = None
                ) -> dict[str, nn.Module]:
    """Replace LoRA members that share a base by members of one :class:`AdapterBank` each (other members pass).

    ``base``/``base_name``: the base model itself is a member too (it then rides in its adapters' bank).
    """
    groups: dict[str, list[str]] = {}
    for name, m in members.items():
        if isinstance(m, LoraDenoiser) and m.base_hash:
            groups.setdefault(m.base_hash, []).append(name)
    out = dict(members)
    for base_hash, names in groups.items():
        if len(names) < 2 and not (base_name and getattr(base, "artifact_hash", None) == base_hash):
            continue
        bank = AdapterBank({n: members[n] for n in names})
        for n in names:
            out[n] = bank.member(n)
        if base_name is not None and getattr(base, "artifact_hash", None) == base_hash:
            out[base_name] = bank.member(None)
    return out


def adapter_soup(adapters: Mapping[str, LoraDenoiser], weights: Mapping[str, float]) -> Denoiser:
    """One plain denoiser: the shared base with the adapters' updates averaged into its weights.

    Each adapted layer gets ``W = W_base + Σ_i w_i · (α_i / r_i) B_i A_i`` (peft's ``get_delta_weight``, so
    linear, conv and embedding layers merge as peft merges them), exactly, whatever the ranks: a weight-space
    average of models fine-tuned from one base (a "model soup", Wortsman et al. 2022).  ``weights`` (adapter
    name → w_i ≥ 0) are used as given; they need not sum to 1 (a base member of weight w_0 is ``1 - Σ w_i``).
    Sampling it costs one base model's pass, whatever the number of adapters.
    """
    from peft.tuners.lora import LoraLayer

    if set(weights) != set(adapters):
        raise SilodiffError("adapter_soup needs one weight per adapter")
    if any(w < 0 for w in weights.values()):
        raise SilodiffError("adapter soup weights must be ≥ 0")
    if len({a.base_hash for a in adapters.values()}) != 1:
        raise SilodiffError("a soup needs LoRA compartments of one base; these were trained from several bases")
    first = next(iter(adapters.values()))
    soup = build(dict(first.config["base"]))
    soup.load_state_dict(first.base_state_dict())
    with torch.no_grad():  # each adapter's own peft layers give its ΔW; the soup's layer has the base's name
        for adapter, model in adapters.items():
            for name, layer in model.base.named_modules():
                if isinstance(layer, LoraLayer):
                    target = soup.get_submodule(name).weight
                    target += weights[adapter] * layer.get_delta_weight(ADAPTER_NAME).to(target.dtype)
    return soup.eval()
