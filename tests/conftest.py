"""Shared fixtures for the whole suite: tiny data, tiny models, temporary stores.

- ``digits32``: a 32-image 8×8 ``SampleSet`` (scikit-learn digits, 2 sources).
- ``tiny_mlp`` / ``tiny_unet``: the two denoiser architectures at toy size;
  ``tiny_model_config``: the tiny MLP as a config for the job functions.
- ``tmp_store``: a fresh store in ``tmp_path`` holding ``digits32``.
- ``trained_store``: built ONCE per session and shared read-only: 200 digits
  from 3 sources, 3 compartments × 2 slices, the paragon, the shard-classifier
  router and the FLD network, all with a couple of epochs of a tiny MLP.
  Tests that write to a store must build their own.

``--runslow`` runs the tests marked ``@pytest.mark.slow`` (skipped by default).
Torch runs single-threaded: the suite shares two cores with other work, and
oversubscribed intra-op threads make tiny models many times slower.
"""

from __future__ import annotations

import pytest
import torch

TINY_MLP = {"hidden": 32, "depth": 1}
TINY_UNET = {"block_out_channels": (4, 8), "norm_num_groups": 4}

torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits32():
    """32 digits, 8×8, labels 0..9, sources source-0 / source-1."""
    from silodiff.data import load_digits

    return load_digits("random:2", limit=32)


@pytest.fixture
def tiny_mlp():
    from silodiff.nn import MLPDenoiser

    torch.manual_seed(0)
    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, **TINY_MLP)


@pytest.fixture
def tiny_unet():
    from silodiff.nn import UNetDenoiser

    torch.manual_seed(0)
    return UNetDenoiser(image_shape=(1, 8, 8), num_classes=10, **TINY_UNET)


@pytest.fixture
def tmp_store(tmp_path, digits32):
    """A fresh store holding ``digits32``."""
    from silodiff.store import Store

    store = Store(tmp_path / "store")
    store.ingest(digits32, "digits")
    return store


def _tiny_model_config() -> dict:
    from silodiff.nn import MLPDenoiser

    return MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, **TINY_MLP).config


@pytest.fixture
def tiny_model_config() -> dict:
    """The tiny MLP's config: pass as ``model=`` to the job functions."""
    return _tiny_model_config()


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory):
    """A fully trained tiny store (read-only: never modify it in a test)."""
    from silodiff.audit import feature_net
    from silodiff.composition import train_router
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_compartments, train_paragon
    from silodiff.store import Store
    from silodiff.training import TrainConfig

    store = Store(tmp_path_factory.mktemp("trained") / "store")
    store.ingest(load_digits("random:3", limit=200), "digits")
    plan_compartments(store, by="source", slices=2)
    config = TrainConfig(epochs=2, batch_size=32)
    train_compartments(store, config=config, model=_tiny_model_config(), progress=False)
    train_paragon(store, config=config, model=_tiny_model_config(), slices=2, progress=False)
    train_router(store, config=TrainConfig(epochs=2, batch_size=32), progress=False)
    feature_net(store, epochs=2, progress=False)
    return store


def _device_params() -> list:
    """CPU always; CUDA and MPS where present, skipped elsewhere with the reason."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return [
        pytest.param("cpu", id="cpu"),
        pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not cuda, reason="no CUDA GPU on this machine")),
        pytest.param("mps", id="mps", marks=pytest.mark.skipif(not mps, reason="no MPS (Apple GPU) backend on this machine")),
    ]


@pytest.fixture(params=_device_params())
def device(request) -> str:
    """Each available device in turn (device-dependent tests)."""
    return request.param
