"""Training state as flat tensors (for safetensors) + JSON — never pickle.

``TrainState`` holds the raw model, its EMA copy, the AdamW optimizer, the step
count and the random generator, which is everything needed to resume training
bit for bit on the same device type.  Tensors are saved from the CPU in fp32
whatever device trained them; loading puts them back on the model's device.  A
generator state saved on another device type (CPU and CUDA generators are
different algorithms) cannot be restored: the generator is then re-seeded from
``(seed, step)``, so a resumed run stays reproducible but is not the continuation
of the stream it would have drawn on the original device.  ``to_tensors``/``from_tensors`` flatten it under the prefix
``train/`` so a checkpoint can live inside an artifact beside the EMA weights
that samplers load.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

PREFIX = "train/"


class EMA:
    """Exponential moving average of a model's trainable parameters, with the usual warm-up.

    At optimizer step k (``state.step``, 1 on the first): e ← d·e + (1 − d)·θ with d = min(decay, (1+k)/(10+k)).

    Frozen parameters (a LoRA adapter's base) never change, so their copy is left as it is: lerping them was
    about a sixth of an adapter's training time, for a bit-identical result.  The pairs are found once, on the
    first update of a model (which parameters train is fixed for a run).

    Why not diffusers' ``EMAModel``: with ``update_after_step=-1`` its schedule is this one and its weights
    agree to 1e-6 (``tests/training/test_ema.py``; its default ``update_after_step=0`` copies on the first update
    and lags one step behind), but ``diffusers.training_utils`` imports transformers, peft, torchvision and the
    pipelines, about 2.2 s of CPU in every fresh Ray or process-pool worker before its first job (more than
    the worker imported before ``UNet2DModel`` became lazy: the cold start that issue 39 cuts).  It also
    counts its own steps (a resumed run would have to set ``optimization_step``), keeps the averages apart from
    the module that samplers and checkpoints read (a copy per save), and its ``state_dict`` mixes floats into
    the tensors.  Here the step comes from ``TrainState.step`` and the averages are ``self.model``, saved as
    the checkpoint's unprefixed (sampling) weights, so resuming needs nothing more."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple[torch.nn.Module, list[torch.Tensor], list[torch.Tensor]] | None = None

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        if self._pairs is None or self._pairs[0] is not model:
            pairs = [(e, p) for e, p in zip(self.model.parameters(), model.parameters()) if p.requires_grad]
            self._pairs = (model, [e for e, _ in pairs], [p.detach() for _, p in pairs])
        _, ema, raw = self._pairs
        if ema:
            torch._foreach_lerp_(ema, raw, 1.0 - decay)


@dataclass
class TrainState:
    model: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    extra: dict = field(default_factory=dict)
    seed: int = 0
    stop: bool = False  # a hook (early stopping) asks the loop to end the run after this step

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"{PREFIX}raw.{k}": v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        params = {id(p): i for i, p in enumerate(self.model.parameters())}
        for p, s in self.optimizer.state.items():
            for k, v in s.items():
                out[f"{PREFIX}opt.{params[id(p)]}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous().clone()
        out[f"{PREFIX}rng"] = self.generator.get_state()
        if self.generator.device.type != "cpu":  # absent means CPU (and CPU checkpoints stay as they were)
            out[f"{PREFIX}rng_device"] = torch.tensor([_DEVICE_CODES.get(self.generator.device.type, -1)], dtype=torch.int64)
        out[f"{PREFIX}step"] = torch.tensor([self.step], dtype=torch.int64)
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from ``to_tensors`` output (EMA weights are the unprefixed keys)."""
        raw = {k[len(PREFIX) + 4 :]: v for k, v in tensors.items() if k.startswith(PREFIX + "raw.")}
        self.model.load_state_dict(raw)
        self.ema.model.load_state_dict(model_tensors(tensors))
        params = list(self.model.parameters())
        self.optimizer.state.clear()
        for k, v in tensors.items():
            if k.startswith(PREFIX + "opt."):
                _, idx, name = k[len(PREFIX) :].split(".", 2)
                p = params[int(idx)]
                # AdamW keeps its step count on the CPU (unless capturable/fused); moments live with the parameter
                self.optimizer.state[p][name] = v.clone() if name == "step" and v.ndim == 0 else v.to(p.device).clone()
        self.step = int(tensors[PREFIX + "step"][0])
        saved_on = int(tensors.get(PREFIX + "rng_device", torch.tensor([0]))[0])  # older checkpoints: CPU
        if saved_on == _DEVICE_CODES.get(self.generator.device.type, -1):
            self.generator.set_state(tensors[PREFIX + "rng"])
        else:
            self.generator.manual_seed(hash_seed(self.seed, self.step))


_DEVICE_CODES = {"cpu": 0, "cuda": 1, "mps": 2}


def hash_seed(seed: int, step: int) -> int:
    """A seed for resuming at ``step`` when the saved generator state belongs to another device type."""
    import hashlib

    return int(hashlib.sha256(f"{seed}:{step}".encode()).hexdigest()[:15], 16)


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The sampler-facing weights of a checkpoint: everything not under ``train/``."""
    return {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
