"""Helpers shared by the defence tests (imported by name: the tests folders are not packages)."""

from __future__ import annotations

from silodiff.data import load_digits
from silodiff.jobs import plan_compartments, train_compartments, train_paragon
from silodiff.nn import MLPDenoiser
from silodiff.store import Store
from silodiff.training import TrainConfig

TINY = {"hidden": 32, "depth": 1}
CONFIG = TrainConfig(epochs=2, batch_size=16)


def tiny_model() -> dict:
    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, **TINY).config


def build_store(root) -> Store:
    """40 digits from 2 sources, 2 compartments (1 slice) and the paragon, 2 epochs of a tiny MLP."""
    store = Store(root)
    store.ingest(load_digits("random:2", limit=40), "digits")
    plan_compartments(store, by="source", slices=1)
    train_compartments(store, config=CONFIG, model=tiny_model(), progress=False)
    train_paragon(store, config=CONFIG, model=tiny_model(), progress=False)
    return store
