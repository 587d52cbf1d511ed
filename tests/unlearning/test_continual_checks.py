"""``add_source`` checks its training config (the existing compartments' one, with ``changes``) before it stores
anything."""

from __future__ import annotations

import pytest

from silodiff.data import load_digits
from silodiff.errors import SilodiffError


def test_add_source_checks_its_config_before_storing_anything(tmp_store):
    from silodiff.unlearning import add_source

    new = load_digits("single:museum", limit=60)
    new = new.subset(new.sample_ids[40:])
    before = len(tmp_store.catalog.sample_rows())
    with pytest.raises(SilodiffError, match="epochs must be ≥ 1"):
        add_source(tmp_store, new, "digits", changes={"epochs": 0})
    assert len(tmp_store.catalog.sample_rows()) == before and "museum" not in tmp_store.source_names()
