"""Training: one loop (``train``), its state, compartment plans and backends."""

from .loop import TrainConfig, classifier_loss, denoising_loss, loss_grid, new_state, steps_for, train
from .schedule import noise_scheduler
from .state import EMA, TrainState, model_tensors

__all__ = ["TrainConfig", "classifier_loss", "denoising_loss", "loss_grid", "new_state", "noise_scheduler", "steps_for", "train", "EMA", "TrainState", "model_tensors"]
