"""``silodiff.store.lineage`` on a hand-built catalog: a base, a compartment on it, one from scratch (no training)."""

from __future__ import annotations

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.store.lineage import (BASE, active_base, base_checkpoints, base_of, built_on, final_checkpoint, num_classes,
                                    own_ids, own_sets, sample_label_counts, seen_by, store_image_shape,
                                    trained_compartments)


def _artifact(store, kind: str, name: str, ids: list[str], slice: int = 0, **info) -> str:
    """Register an artifact trained on ``ids`` (one sample set) whose config.json records ``info``."""
    digest = store.artifacts.put({"w": torch.full((1,), float(len(ids) + slice))}, {"model": {"kind": kind},
                                                                                   "info": {"name": name, **info}})
    sets = [store.catalog.add_sample_set(ids)] + (store.catalog.lineage_sets(info["base"]) if "base" in info else [])
    store.catalog.add_artifact(digest, kind, name, {"kind": kind}, sets, slice=slice,
                               compartment=name if kind == "compartment" else None)
    return digest


@pytest.fixture
def built(tmp_store):
    ids = sorted(r["sample_id"] for r in tmp_store.catalog.sample_rows())
    public, own, alone = ids[:10], ids[10:20], ids[20:]
    base0 = _artifact(tmp_store, BASE, BASE, public[:5])
    base1 = _artifact(tmp_store, BASE, BASE, public, slice=1)
    tmp_store.catalog.plan_compartment("on-base", [own])
    tmp_store.catalog.plan_compartment("alone", [alone[:6], alone[6:]])
    on_base = _artifact(tmp_store, "compartment", "on-base", own, base=base1)
    first = _artifact(tmp_store, "compartment", "alone", alone[:6])
    last = _artifact(tmp_store, "compartment", "alone", alone, slice=1)
    tmp_store.catalog.set_compartment_status("alone", "trained")
    return tmp_store, dict(base0=base0, base1=base1, on_base=on_base, first=first, last=last, public=public, own=own,
                           alone=alone)


def test_the_base_and_what_is_built_on_it(built):
    store, a = built
    assert [r["hash"] for r in base_checkpoints(store)] == [a["base0"], a["base1"]]
    base = active_base(store)
    assert (base["hash"], base["ids"], base["model"]) == (a["base1"], a["public"], {"kind": BASE})
    assert base_of(store, a["on_base"]) == a["base1"] and base_of(store, a["last"]) is None
    assert base_of(store, "0" * 64) is None  # no config.json: no base, no error
    assert built_on(store, [a["base1"]]) == {"on-base"} and built_on(store, [a["base0"]]) == set()


def test_own_lineage_leaves_out_the_base(built):
    store, a = built
    assert sorted(store.catalog.lineage(a["on_base"])) == sorted(a["public"] + a["own"])  # effective lineage
    assert own_ids(store, a["on_base"]) == a["own"]
    assert own_sets(store, a["on_base"]) == {store.catalog.add_sample_set(a["own"])}
    assert own_ids(store, a["last"]) == a["alone"]
    assert seen_by(store, [a["first"], a["on_base"]]) == sorted(a["alone"][:6] + a["own"] + a["public"])


def test_final_checkpoints_of_trained_compartments(built):
    store, a = built
    assert trained_compartments(store) == ["alone"]
    assert final_checkpoint(store, "compartment", "alone")["hash"] == a["last"]
    store.catalog.set_active([a["last"]], False)
    with pytest.raises(SilodiffError, match="not fully trained"):
        final_checkpoint(store, "compartment", "alone")
    with pytest.raises(SilodiffError, match="the paragon has no trained model"):
        final_checkpoint(store, "paragon", "paragon")


def test_the_stores_data(built, digits32):
    store, a = built
    assert num_classes(store) == 10 and store_image_shape(store) == (1, 8, 8)
    counts = sample_label_counts(store, a["own"])
    assert sum(counts.values()) == 10 and set(counts) <= set(range(10))
    by_id = dict(zip(digits32.sample_ids, digits32.labels.tolist()))
    assert counts == {y: [by_id[s] for s in a["own"]].count(y) for y in set(by_id[s] for s in a["own"])}
