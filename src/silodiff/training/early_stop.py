"""Early stopping on held-out samples: stop a run when its EMA model stops improving, keep the best.

A job with ``TrainConfig.val_fraction > 0`` holds out that share of its samples
(``split_validation``: each sample's side is decided by a hash of the run's seed
and its id alone, so forgetting one sample never moves another across the
split).  It trains on the rest, and every ``val_every`` steps (by default
``auto_every``: 40 evaluations over the run, fewer where they would cost over
10% of its training) the ``EarlyStopping`` hook scores the EMA model on the
held-out samples:

    L_val = mean over held-out x0 and R fixed draws (t, ε) of ‖ε_θ(x_t, t, y) − ε‖²

The draws are fixed once per run, so successive evaluations are paired and
their differences are not noise.  After ``patience`` evaluations without a new
best, the loop stops (``state.stop``) and the best EMA weights are put back.
The held-out samples decided when the run stopped, so they stay in the model's
lineage: forgetting one retrains the model like any other sample.
"""

from __future__ import annotations

import copy
import hashlib
import math
from typing import Any

import torch

from ..data import SampleSet
from ..devices import device_of
from .schedule import noise_scheduler
from .state import TrainState

EVALUATIONS = 40  # evaluations over the step budget when val_every is 0 (auto), where they are cheap ...
EVAL_SHARE = 0.1  # ... fewer where 40 would cost more than this share of the run's training compute ...
MIN_EVALUATIONS = 10  # ... but never fewer than this (patience 8 needs a few evaluations to judge)
DRAWS = 1024  # (sample, t, ε) draws per evaluation, at least one per held-out sample
MAX_HELD_OUT = 4096  # a large job holds out at most about this many samples (loaded in memory for the evaluations)


def draws(n_val: int) -> int:
    """Forward passes of one evaluation: every held-out sample, repeated to at least ``DRAWS``."""
    return n_val * max(1, math.ceil(DRAWS / n_val))


def auto_every(budget: int, samples_per_step: int, n_val: int) -> int:
    """Steps between held-out evaluations when ``val_every`` is 0: ``EVALUATIONS`` over the budget, or as many
    as cost at most ``EVAL_SHARE`` of the training compute (a step's forward and backward pass ≈ 3 forward
    passes per sample; an evaluation is ``draws(n_val)`` forward passes), never fewer than ``MIN_EVALUATIONS``.

    A 562-step fine-tune of batch 64 with 14 held-out digits gets 10 evaluations (40 would cost 38% of its
    training); a 30-step fine-tune of batch 32 gets 10 instead of 30 (40 would cost 14× its training)."""
    affordable = int(EVAL_SHARE * 3 * samples_per_step * budget / draws(n_val))
    evaluations = min(EVALUATIONS, max(MIN_EVALUATIONS, affordable))
    return max(1, budget // evaluations)


def split_validation(ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids): a sample is held out when the hash of (seed, id) falls below ``fraction``.

    At least one sample stays on each side when there are two or more.
    """
    if fraction <= 0 or len(ids) < 2:
        return list(ids), []
    score = {sid: int.from_bytes(hashlib.sha256(f"{seed}:{sid}".encode()).digest()[:8], "big") / 2**64 for sid in ids}
    held = [sid for sid in ids if score[sid] < fraction]
    if not held:
        held = [min(ids, key=score.__getitem__)]
    if len(held) == len(ids):
        held.remove(max(held, key=score.__getitem__))
    kept = set(held)
    return [sid for sid in ids if sid not in kept], held


class EarlyStopping:
    """A training hook: score the EMA model on held-out samples every ``every`` steps; stop after ``patience``
    evaluations without improvement, restoring the best EMA weights (``finish``)."""

    kind = "early_stop"

    def __init__(self, val: SampleSet, *, every: int, patience: int, seed: int, num_train_timesteps: int = 1000):
        self.every, self.patience = max(1, int(every)), int(patience)
        self.scheduler = noise_scheduler(num_train_timesteps)
        gen = torch.Generator().manual_seed(seed)
        repeats = draws(len(val)) // len(val)
        self.x0 = val.x().repeat(repeats, 1, 1, 1)
        self.labels = val.labels.repeat(repeats)
        self.t = torch.randint(0, num_train_timesteps, (len(self.x0),), generator=gen)
        self.noise = torch.randn(self.x0.shape, generator=gen)
        self.n = len(val)
        self.best, self.best_step, self.best_weights = math.inf, 0, None
        self.since_best, self.evaluations, self.stop_step = 0, 0, None
        self.history: list[tuple[int, float]] = []

    @torch.no_grad()
    def loss(self, model: torch.nn.Module) -> float:
        device, total = device_of(model), 0.0
        for rows in torch.arange(len(self.x0)).split(512):
            x0, y = self.x0[rows].to(device), self.labels[rows].to(device)
            t, noise = self.t[rows].to(device), self.noise[rows].to(device)
            total += float(model.loss(x0, y, t, noise, self.scheduler).sum())
        return total / len(self.x0)

    def on_step(self, state: TrainState) -> None:
        if state.step % self.every:
            return
        value = self.loss(state.ema.model)
        self.evaluations += 1
        self.history.append((state.step, round(value, 6)))
        if value < self.best:
            self.best, self.best_step, self.since_best = value, state.step, 0
            self.best_weights = copy.deepcopy(state.ema.model.state_dict())
        else:
            self.since_best += 1
            if self.since_best >= self.patience:
                self.stop_step, state.stop = state.step, True

    def finish(self, state: TrainState) -> None:
        """Score the final EMA once more, then keep whichever EMA weights scored best."""
        if not self.history or self.history[-1][0] != state.step:
            self.evaluations += 1
            value = self.loss(state.ema.model)
            self.history.append((state.step, round(value, 6)))
            if value < self.best:
                self.best, self.best_step, self.best_weights = value, state.step, None
        if self.best_weights is not None and self.best_step != state.step:
            state.ema.model.load_state_dict(self.best_weights)

    def report(self) -> dict[str, Any]:
        return {"val_n": self.n, "best_step": self.best_step, "stop_step": self.stop_step,
                "stopped_early": self.stop_step is not None, "val_loss": round(self.best, 6),
                "every": self.every, "patience": self.patience, "history": self.history}
