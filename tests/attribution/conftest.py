"""Tiny stores for the attribution tests: a few dozen digits, one-block MLPs, a couple of epochs."""

from __future__ import annotations

import pytest

from silodiff.composition import train_router
from silodiff.data import load_digits
from silodiff.jobs import plan_compartments, train_compartments
from silodiff.store import Store
from silodiff.training import TrainConfig


def tiny_model(classes: int = 10) -> dict:
    return {"kind": "mlp-denoiser", "image_shape": [1, 8, 8], "num_classes": classes, "hidden": 32, "depth": 1}


TINY = TrainConfig(epochs=3, batch_size=32)


@pytest.fixture(scope="session")
def comp_store(tmp_path_factory) -> Store:
    """90 digits from three owners, three trained compartments and a router."""
    store = Store(tmp_path_factory.mktemp("attr-comp") / "store")
    store.ingest(load_digits("random:3", limit=90), "digits")
    plan_compartments(store, by="source", slices=1)
    train_compartments(store, config=TINY, model=tiny_model(), progress=False)
    train_router(store, config=TrainConfig(epochs=2, batch_size=32), progress=False)
    return store


@pytest.fixture(scope="session")
def class_store(tmp_path_factory) -> Store:
    """Digits of classes 0, 1, 2 with one compartment per class (disjoint labels)."""
    data = load_digits("by-class", limit=120)
    data = data.where((data.labels < 3).tolist())
    store = Store(tmp_path_factory.mktemp("attr-class") / "store")
    store.ingest(data, "digits")
    plan_compartments(store, by="source", slices=1)
    train_compartments(store, config=TINY, model=tiny_model(3), progress=False)
    return store


@pytest.fixture(scope="session")
def enc_store(tmp_path_factory) -> Store:
    """30 digits, an encoded ensemble of 8 members over sample units."""
    from silodiff.attribution import train_encoded

    store = Store(tmp_path_factory.mktemp("attr-enc") / "store")
    store.ingest(load_digits("random:3", limit=30), "digits")
    train_encoded(store, members=8, unit="sample", config=TINY, model=tiny_model(), progress=False)
    return store


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the test box is shared)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
