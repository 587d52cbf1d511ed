"""Fixtures for the service tests: one tiny trained store per session, its API keys, an app, fresh copies.

- ``service_store``: 120 digits from 3 sources (source-0/1/2), 3 compartments × 2
  slices and the shard-classifier router, 2 epochs of a one-block MLP (~2 s).
- ``keys``: plain keys by name — ``admin`` (all sources, admin), ``alice``
  (source-0, source-1), ``bob`` (source-2), ``ops`` (admin limited to source-2).
- ``auth(name)``: headers with that key; ``app_factory``: ``make_app``.
- ``client``: a TestClient over an app with rate limiting off and small limits.
- ``fresh_store``: a private copy of ``service_store`` for tests that change it.
"""

from __future__ import annotations

import shutil

import pytest

from silodiff.store import Store

LIMITS = dict(max_n=16, max_steps=100, max_image_steps=800, rate_per_minute=0)


def tiny_model() -> dict:
    return {"kind": "mlp-denoiser", "image_shape": [1, 8, 8], "num_classes": 10, "hidden": 32, "depth": 1}


@pytest.fixture(scope="session")
def service_store(tmp_path_factory) -> Store:
    from silodiff.composition import train_router
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_compartments
    from silodiff.training import TrainConfig

    store = Store(tmp_path_factory.mktemp("service") / "store")
    store.ingest(load_digits("random:3", limit=120), "digits")
    plan_compartments(store, by="source", slices=2)
    config = TrainConfig(epochs=2, batch_size=32)
    train_compartments(store, config=config, model=tiny_model(), progress=False)
    train_router(store, config=config, progress=False)
    return store


@pytest.fixture(scope="session")
def keys(service_store) -> dict[str, str]:
    from silodiff.service.keys import create_key

    rights = {
        "admin": (None, True),
        "alice": (["source-0", "source-1"], False),
        "bob": (["source-2"], False),
        "ops": (["source-2"], True),
    }
    return {name: create_key(service_store, name, sources, admin=admin)[1] for name, (sources, admin) in rights.items()}


def make_app(store: Store, **overrides):
    from silodiff.service import Settings, create_app

    return create_app(Settings(store=store.root, **{**LIMITS, **overrides}), store)


@pytest.fixture(scope="session")
def app(service_store, keys):
    return make_app(service_store)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture(scope="session")
def auth(keys):
    """``auth("alice")`` → the headers that carry alice's key."""
    return lambda name: {"X-API-Key": keys[name]}


@pytest.fixture(scope="session")
def app_factory():
    """``app_factory(store, **settings)`` → a new app (its own model cache and rate limiter)."""
    return make_app


@pytest.fixture
def fresh_store(service_store, keys, tmp_path) -> Store:
    """A copy of the trained store (with the same keys) that a test may change."""
    service_store.catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(service_store.root, tmp_path / "store")
    return Store(tmp_path / "store", create=False)
