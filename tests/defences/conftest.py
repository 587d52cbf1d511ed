"""Fixtures for the defence tests: a tiny store with two trained compartments and the paragon."""

from __future__ import annotations

import pytest
from defences_helpers import build_store

from silodiff.store import Store


@pytest.fixture(scope="module")
def defence_store(tmp_path_factory) -> Store:
    """Shared by a module's tests; tests that write to it only add artifacts."""
    return build_store(tmp_path_factory.mktemp("defences") / "store")
