"""Training curves to TensorBoard: the hook ``train`` adds when ``TrainConfig.log_dir`` is set.

Scalars against the run's step (``state.step``, which goes on across a job's SISA
stages), written with ``torch.utils.tensorboard.SummaryWriter`` into
``log_dir/<run name>`` (a job's name; ``tensorboard --logdir log_dir`` shows every job):

- ``train/loss``: mean per-sample ε-loss ℓ_j over the step's micro-batches (before hooks drop samples);
- ``train/lr``: the optimizer's learning rate at the step;
- ``train/images_per_s``: images in the step / wall seconds since the previous step ended;
- ``val/loss``: the held-out loss L_val at each early-stopping evaluation (``early_stop.EarlyStopping``).

The hook only reads: a run with ``log_dir`` learns the same weights as one without.
TensorBoard is an optional extra (``silodiff[tb]``).
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import SilodiffError
from .early_stop import EarlyStopping
from .state import TrainState

INSTALL_HINT = "pip install 'silodiff[tb]'"


def require_tensorboard() -> None:
    """Say how to install TensorBoard when it is missing (without importing it)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise SilodiffError(f"log_dir needs TensorBoard, which is not installed: {INSTALL_HINT}")


def run_dir(log_dir: str | Path, name: str) -> Path:
    """``log_dir/<name>``, the name made safe as one folder name."""
    return Path(log_dir) / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "train")


class TensorBoardCurves:
    """A training hook: ``on_batch`` sums the per-sample losses, ``on_step`` writes one point per curve."""

    def __init__(self, log_dir: str | Path, name: str, hooks: Sequence[Any] = ()):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir(log_dir, name)
        self.writer = SummaryWriter(str(self.path), flush_secs=10)
        self.held_out = [h for h in hooks if isinstance(h, EarlyStopping)]
        self._written = [len(h.history) for h in self.held_out]  # evaluations already logged
        self._loss, self._images, self._since = torch.zeros(()), 0, time.perf_counter()

    def on_batch(self, batch: dict[str, Any]) -> None:
        loss = batch["loss"].detach()  # (b,)
        self._loss = self._loss.to(loss.device) + loss.sum()
        self._images += len(loss)

    def on_step(self, state: TrainState) -> None:
        now = time.perf_counter()
        step = state.step
        self.writer.add_scalar("train/loss", float(self._loss) / max(1, self._images), step)
        self.writer.add_scalar("train/lr", state.optimizer.param_groups[0]["lr"], step)
        self.writer.add_scalar("train/images_per_s", self._images / max(now - self._since, 1e-9), step)
        for i, stopper in enumerate(self.held_out):
            for at, value in stopper.history[self._written[i]:]:
                self.writer.add_scalar("val/loss", value, at)
            self._written[i] = len(stopper.history)
        self._loss, self._images, self._since = torch.zeros(()), 0, now

    def close(self) -> None:
        self.writer.close()
