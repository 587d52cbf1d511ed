"""The demo's defences step: a small-data store of its own, one table row per model, a picture."""

from __future__ import annotations

from silodiff.demo import QUICK
from silodiff.demo.defences import demo_step
from silodiff.store import Store


def test_demo_step_trains_in_a_store_of_its_own(defence_store, tmp_path):
    before = {r["hash"] for r in defence_store.catalog.artifacts(active=None)}
    md = demo_step(defence_store, tmp_path, QUICK)
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith(("| model", "| ---"))]
    assert [row.split(" | ")[0] for row in table] == ["| baseline", "| AGC (λ = 1.2)", "| IET-AGC (2 shards × 2 rounds, λ = 1.2)",
                                                       "| CPSample on the baseline, calibrated (α = 0.25, s = 10)"]
    assert all(len(row.split(" | ")) == 6 for row in table) and (tmp_path / "defences.png").stat().st_size > 0
    small = Store(tmp_path / "defences-store")
    owner_ids = sorted(r["sample_id"] for r in defence_store.catalog.sample_rows(defence_store.source_names()[0]))
    owner = defence_store.source_names()[0]
    assert sorted(r["sample_id"] for r in small.catalog.sample_rows(owner)) == owner_ids[: QUICK.defences.n]
    public = {r["sample_id"] for r in small.catalog.sample_rows("public")}
    assert public == {r["sample_id"] for r in defence_store.catalog.sample_rows()} - set(owner_ids[: QUICK.defences.n])
    for kind in ("paragon", "iet-agc"):  # the models saw exactly the N digits: the public ones came after them
        (row,) = small.active(kind)
        assert sorted(small.catalog.lineage(row["hash"])) == owner_ids[: QUICK.defences.n]
    (clf,) = small.active("protection-classifier")
    lineage = set(small.catalog.lineage(clf["hash"]))
    assert set(owner_ids[: QUICK.defences.n]) < lineage <= set(owner_ids[: QUICK.defences.n]) | public
    # the demo store gains only its FLD network (cached): every defence trained in the small store
    added = [r["kind"] for r in defence_store.catalog.artifacts(active=None) if r["hash"] not in before]
    assert set(added) <= {"feature-net"}
