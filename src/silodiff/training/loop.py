"""The one training loop.  Everything that trains a denoiser goes through ``train``.

Per step (DDPM ε-objective, Ho et al. 2020):
  1. draw a batch, t ~ U{0..T-1}, ε ~ N(0, I) from the run's own generator;
  2. per-sample losses ``ℓ_j = mean((ε_θ(x_t, t_j, y_j) − ε_j)²)``, unreduced;
  3. hooks see the batch and may return a keep-mask (memorisation defences);
  4. loss = mean of ℓ over kept samples; backward; clip; AdamW; EMA.

The objective is pluggable (``loss_fn(model, batch, scheduler) -> (b,)``); the
default is the denoiser's own ``loss``; classifiers on noisy inputs pass
``classifier_loss(targets)`` (CPSample) or ``composition.routers.router_loss`` (the router).  Hooks are objects with any of
``on_batch(batch) -> mask | None`` and ``on_step(state)``; ``batch`` is a dict
with ``x0, labels, rows, ids, t, noise, loss``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from ..data import SampleSet
from ..errors import SilodiffError
from .state import EMA, TrainState


@dataclass
class TrainConfig:
    """Hyperparameters of the loop (the defaults suit 8×8 digits on a CPU)."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    label_dropout: float = 0.1
    num_train_timesteps: int = 1000
    max_timestep: int | None = None  # draw t from [0, max_timestep) only (a classifier for the low-noise steps); None: all
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> "TrainConfig":
        for name in ("epochs", "batch_size", "num_train_timesteps"):
            if getattr(self, name) < 1:
                raise SilodiffError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise SilodiffError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_dropout < 1:
            raise SilodiffError("label_dropout must be in [0, 1)")
        if self.max_timestep is not None and not 1 <= self.max_timestep <= self.num_train_timesteps:
            raise SilodiffError(f"max_timestep must be in 1..{self.num_train_timesteps}, got {self.max_timestep}")
        return self


def noise_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """The training schedule of METHODS.md: T = 1000, linear β from 1e-4 to 0.02, ε-prediction."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def denoising_loss(model: torch.nn.Module, batch: dict[str, Any], scheduler: DDPMScheduler) -> torch.Tensor:
    """The denoiser's own per-sample ε-loss, (b,)."""
    return model.loss(batch["x0"], batch["labels"], batch["t"], batch["noise"], scheduler)


@torch.no_grad()
def loss_grid(
    model: torch.nn.Module,
    x0: torch.Tensor,
    labels: torch.Tensor | None,
    timesteps: Sequence[int],
    *,
    draws: int = 1,
    generator: torch.Generator | None = None,
    scheduler: DDPMScheduler | None = None,
    copies: int = 1,
) -> torch.Tensor:
    """Per-sample ε-loss at each timestep of a grid, averaged over ``draws`` noise draws, (copies·n, G).

    Noise is drawn per (t, draw) in that order from ``generator``, so two models given
    equally seeded generators see exactly the same x_t.  ``copies`` stacks the batch
    that many times (copy-major) with the same noise.  Membership attacks and the
    likelihood proxy of attribution both read this grid.
    """
    if draws < 1:
        raise SilodiffError(f"draws must be ≥ 1, got {draws}")
    scheduler = scheduler or noise_scheduler()
    reps = (copies, *([1] * (x0.ndim - 1)))
    x_rep = x0.repeat(reps)  # (copies·n, c, h, w)
    y_rep = None if labels is None else labels.repeat(copies)
    out = torch.zeros(copies * len(x0), len(timesteps))
    for g, t in enumerate(timesteps):
        t_rows = torch.full((copies * len(x0),), int(t), dtype=torch.long)
        for _ in range(draws):
            noise = torch.randn(x0.shape, generator=generator).repeat(reps)
            out[:, g] += model.loss(x_rep, y_rep, t_rows, noise, scheduler) / draws
    return out


def classifier_loss(targets: torch.Tensor) -> Callable[..., torch.Tensor]:
    """Cross-entropy of ``f(x_t, t, y)`` against ``targets[row]`` (e.g. the CPSample bit), (b,)."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any], scheduler: DDPMScheduler) -> torch.Tensor:
        x_t = scheduler.add_noise(batch["x0"], batch["noise"], batch["t"])
        logits = model(x_t, batch["t"], batch["labels"])
        return torch.nn.functional.cross_entropy(logits, targets[batch["rows"]], reduction="none")

    return loss_fn


def new_state(model: torch.nn.Module, config: TrainConfig) -> TrainState:
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return TrainState(model=model, ema=EMA(model, config.ema_decay), optimizer=optimizer, generator=generator)


def steps_for(n: int, config: TrainConfig, epochs: float | None = None) -> int:
    return max(1, math.ceil((config.epochs if epochs is None else epochs) * n / config.batch_size))


def train(
    state: TrainState,
    data: SampleSet,
    config: TrainConfig,
    *,
    steps: int | None = None,
    hooks: Sequence[Any] = (),
    loss_fn: Callable[..., torch.Tensor] = denoising_loss,
    progress: bool | str = True,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 0,
) -> TrainState:
    """Train ``state.model`` on ``data`` for ``steps`` (default: ``config.epochs`` epochs)."""
    config.check()
    if len(data) == 0:
        raise SilodiffError("cannot train on an empty set of samples")
    model, opt, gen = state.model.train(), state.optimizer, state.generator
    scheduler = noise_scheduler(config.num_train_timesteps)
    x_all, y_all, ids = data.x(), data.labels, data.sample_ids  # (n, c, h, w), (n,)
    null = getattr(model, "num_classes", 0)  # index of the "no label" class
    steps = steps_for(len(data), config) if steps is None else steps
    on_batch = [h.on_batch for h in hooks if hasattr(h, "on_batch")]
    on_step = [h.on_step for h in hooks if hasattr(h, "on_step")]
    bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "train", disable=not progress, leave=False)
    order = iter(())
    done = 0
    while done < steps:
        rows = next(order, None)
        if rows is None:
            order = iter(torch.randperm(len(data), generator=gen).split(config.batch_size))
            continue
        # 1. batch, timesteps and noise, all from the run's generator
        x0, y = x_all[rows], y_all[rows]
        if config.label_dropout and null:
            y = torch.where(torch.rand(len(rows), generator=gen) < config.label_dropout, null, y)
        t = torch.randint(0, config.max_timestep or config.num_train_timesteps, (len(rows),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        # 2. per-sample losses, (b,)
        batch = {"x0": x0, "labels": y, "rows": rows, "t": t, "noise": noise}
        loss = batch["loss"] = loss_fn(model, batch, scheduler)
        # 3. hooks may drop samples
        keep = None
        if on_batch:
            batch["ids"] = [ids[i] for i in rows.tolist()]
            for hook in on_batch:
                mask = hook(batch)
                if mask is not None:
                    keep = mask if keep is None else keep & mask
        # 4. reduce, step, EMA
        if keep is None:
            total = loss.mean()
        else:
            total = (loss * keep).sum() / keep.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        total.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)
        opt.step()
        state.step += 1
        state.ema.update(model, state.step)
        for hook in on_step:
            hook(state)
        done += 1
        bar.update(1)
        if done % 50 == 0:
            bar.set_postfix(loss=f"{total.item():.4f}", refresh=False)
        if checkpoint_every and on_checkpoint and done % checkpoint_every == 0 and done < steps:
            on_checkpoint(state)
    bar.close()
    model.eval()
    return state
