"""Training state as flat tensors (for safetensors) + JSON — never pickle.

``TrainState`` holds the raw model, its EMA copy, the AdamW optimizer, the step
count and the random generator, which is everything needed to resume training
bit for bit.  ``to_tensors``/``from_tensors`` flatten it under the prefix
``train/`` so a checkpoint can live inside an artifact beside the EMA weights
that samplers load.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

PREFIX = "train/"


class EMA:
    """Exponential moving average of a model's parameters, with the usual warm-up."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema = [p for p in self.model.parameters()]
        raw = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, raw, 1.0 - decay)


@dataclass
class TrainState:
    model: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    extra: dict = field(default_factory=dict)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"{PREFIX}raw.{k}": v.detach().contiguous().clone() for k, v in self.model.state_dict().items()}
        params = {id(p): i for i, p in enumerate(self.model.parameters())}
        for p, s in self.optimizer.state.items():
            for k, v in s.items():
                out[f"{PREFIX}opt.{params[id(p)]}.{k}"] = torch.as_tensor(v).detach().contiguous().clone()
        out[f"{PREFIX}rng"] = self.generator.get_state()
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
                self.optimizer.state[params[int(idx)]][name] = v.clone()
        self.generator.set_state(tensors[PREFIX + "rng"])
        self.step = int(tensors[PREFIX + "step"][0])


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The sampler-facing weights of a checkpoint: everything not under ``train/``."""
    return {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
