"""Fixtures of the unlearning tests: one tiny trained store built per session, copied per test.

``forget_base``: 150 digits from 3 sources, 3 compartments × 2 slices, a tiny
MLP trained 2 epochs, the paragon, the shard-classifier router and the FLD
network — every artifact kind a forget must handle.  ``fstore`` is a private
copy a test may change.
"""

from __future__ import annotations

import shutil

import pytest
import torch

TINY_MLP = {"image_shape": (1, 8, 8), "num_classes": 10, "hidden": 32, "depth": 1}


@pytest.fixture(scope="session")
def forget_base(tmp_path_factory):
    from silodiff.audit import feature_net
    from silodiff.composition import train_router
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_compartments, train_paragon
    from silodiff.nn import MLPDenoiser
    from silodiff.store import Store
    from silodiff.training import TrainConfig

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("forget-base") / "store"
    store = Store(root)
    store.ingest(load_digits("random:3", limit=150), "digits")
    plan_compartments(store, by="source", slices=2)
    config, model = TrainConfig(epochs=2, batch_size=32), MLPDenoiser(**TINY_MLP).config
    train_compartments(store, config=config, model=model, progress=False)
    train_paragon(store, config=config, model=model, slices=2, progress=False)
    train_router(store, config=TrainConfig(epochs=2, batch_size=32), progress=False)
    feature_net(store, epochs=1, progress=False)
    store.catalog.close()
    return root


@pytest.fixture
def fstore(forget_base, tmp_path):
    from silodiff.store import Store

    shutil.copytree(forget_base, tmp_path / "store")
    return Store(tmp_path / "store", create=False)

