"""Jobs: compartments see only their own samples, slice lineage, resume after a
lost checkpoint, and backend equivalence (process pool == serial)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from silodiff.data import load_digits
from silodiff.errors import SilodiffError
from silodiff.jobs import plan_compartments, run_jobs, train_compartments, train_paragon
from silodiff.store import Store
from silodiff.training import TrainConfig

CONFIG = TrainConfig(epochs=2, batch_size=16)


def _planned_store(root) -> Store:
    store = Store(root)
    store.ingest(load_digits("random:2", limit=48), "digits")
    plan_compartments(store, by="source", slices=2)
    return store


def _finals(store: Store) -> dict[str, str]:
    return {r["name"]: r["hash"] for r in store.catalog.artifacts("compartment") if r["slice"] == 1}


def test_compartment_lineage_is_exactly_its_own_samples(trained_store):
    rows = trained_store.catalog.sample_rows()
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], set()).add(r["sample_id"])
    checkpoints = trained_store.catalog.artifacts("compartment")
    assert {c["name"] for c in checkpoints} == set(by_source) and len(checkpoints) == 2 * len(by_source)
    for c in checkpoints:
        lineage = set(trained_store.catalog.lineage(c["hash"]))
        slices = trained_store.catalog.slices(c["name"])
        # checkpoint r saw exactly slices 0..r of its own compartment …
        assert lineage == {sid for s in slices[: c["slice"] + 1] for sid in s}
        assert lineage <= by_source[c["name"]]
        # … and no sample of any other compartment
        others = set().union(*(ids for name, ids in by_source.items() if name != c["name"]))
        assert not lineage & others
    final = {c["name"]: c for c in checkpoints if c["slice"] == 1}
    for name, ids in by_source.items():
        assert set(trained_store.catalog.lineage(final[name]["hash"])) == ids
        saw = {(a["kind"], a["name"]) for a in trained_store.catalog.artifacts_that_saw([min(ids)])}
        assert ("compartment", name) in saw and ("paragon", "paragon") in saw
        assert not any(k == "compartment" and n != name for k, n in saw)


def test_router_and_paragon_lineage_is_everything(trained_store):
    everything = {r["sample_id"] for r in trained_store.catalog.sample_rows()}
    (router,) = trained_store.active("router")
    assert set(trained_store.catalog.lineage(router["hash"])) == everything
    paragon = [r for r in trained_store.active("paragon") if r["slice"] == 1]
    assert set(trained_store.catalog.lineage(paragon[0]["hash"])) == everything


def test_resume_after_losing_the_last_checkpoint_reproduces_it(tmp_path, tiny_model_config):
    store = _planned_store(tmp_path / "s")
    results = train_compartments(store, config=CONFIG, model=tiny_model_config, progress=False)
    assert [r.resumed_from for r in results] == [0, 0] and all(len(r.artifacts) == 2 for r in results)
    finals = _finals(store)
    # a finished job is a no-op on re-run
    again = train_compartments(store, config=CONFIG, model=tiny_model_config, progress=False)
    assert [r.resumed_from for r in again] == [2, 2] and all(r.artifacts == [] and r.steps == 0 for r in again)
    # lose the last checkpoint of one compartment: only its last slice is retrained, bit for bit
    victim = sorted(finals)[0]
    store.artifacts.delete(finals[victim])
    (result,) = train_compartments(store, [victim], config=CONFIG, model=tiny_model_config, progress=False)
    assert result.resumed_from == 1 and result.artifacts == [finals[victim]]
    assert store.artifacts.exists(finals[victim])


def test_process_backend_matches_serial(tmp_path, tiny_model_config):
    serial, pooled = _planned_store(tmp_path / "serial"), _planned_store(tmp_path / "process")
    train_compartments(serial, config=CONFIG, model=tiny_model_config, progress=False)
    results = train_compartments(pooled, config=CONFIG, model=tiny_model_config, backend="process", workers=2,
                                 progress=False)
    assert _finals(pooled) == _finals(serial)
    assert {r.name: r.artifacts[-1] for r in results} == _finals(serial)
    hashes = [sorted(a["hash"] for a in s.catalog.artifacts()) for s in (pooled, serial)]
    assert hashes[0] == hashes[1]


def test_paragon_and_errors(tmp_path, tiny_model_config):
    store = _planned_store(tmp_path / "s")
    with pytest.raises(SilodiffError, match="unknown compartment"):
        train_compartments(store, ["nope"], config=CONFIG, progress=False)
    with pytest.raises(SilodiffError, match="unknown backend"):
        run_jobs([], "threads")
    result = train_paragon(store, config=CONFIG, model=tiny_model_config, slices=2, progress=False)
    assert len(result.artifacts) == 2
    assert set(store.catalog.lineage(result.artifacts[-1])) == {r["sample_id"] for r in store.catalog.sample_rows()}
    empty = Store(tmp_path / "empty")
    with pytest.raises(SilodiffError, match="no compartments planned"):
        train_compartments(empty, config=CONFIG, progress=False)
    with pytest.raises(SilodiffError, match="no samples"):
        plan_compartments(empty)


def test_paragon_on_the_process_backend_matches_serial_beside_the_compartments(tmp_path, tiny_model_config):
    """The paragon's one job in a worker process of its own, while the compartments train (as the demo does):
    the same checkpoints as in this process, bit for bit, and both sets of checkpoints in the catalog."""
    serial, pooled = _planned_store(tmp_path / "serial"), _planned_store(tmp_path / "process")
    expected = train_paragon(serial, config=CONFIG, model=tiny_model_config, slices=2, progress=False).artifacts
    with ThreadPoolExecutor(1) as side:
        paragon = side.submit(train_paragon, Store(pooled.root), config=CONFIG, model=tiny_model_config, slices=2,
                              progress=False, backend="process")
        train_compartments(pooled, config=CONFIG, model=tiny_model_config, backend="process", workers=1,
                           progress=False)
        assert paragon.result().artifacts == expected
    assert set(expected) | set(_finals(pooled).values()) <= {a["hash"] for a in pooled.catalog.artifacts()}
    with pytest.raises(SilodiffError, match="serial backend"):
        train_paragon(serial, config=CONFIG, model=tiny_model_config, backend="process", data_parallel=2, progress=False)
