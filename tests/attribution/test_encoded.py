import math

import numpy as np
import pytest

from silodiff.attribution import balanced_codes, check_plan, load_plan, make_plan, plan_units
from silodiff.attribution.encoded import EncodedPlan, member_checkpoints
from silodiff.errors import SilodiffError


def test_codes_are_unique_balanced_and_seeded():
    codes = balanced_codes(60, 8, random_state=3)
    assert codes.shape == (60, 8)
    assert (codes.sum(1) == 4).all()
    assert len({tuple(c) for c in codes}) == 60
    assert (balanced_codes(60, 8, random_state=3) == codes).all()
    assert not (balanced_codes(60, 8, random_state=4) == codes).all()
    full = balanced_codes(math.comb(6, 3), 6)  # every possible code, exactly once
    assert len({tuple(c) for c in full}) == 20


@pytest.mark.parametrize("units,members", [(5, 7), (5, 0), (21, 6)])
def test_codes_refuse_odd_members_or_too_many_units(units, members):
    with pytest.raises(SilodiffError):
        balanced_codes(units, members)


def test_units_by_sample_source_and_csv_column(enc_store, tmp_path):
    rows = enc_store.catalog.sample_rows()
    by_sample = plan_units(enc_store, "sample")
    assert len(by_sample) == len(rows) and all(len(v) == 1 for v in by_sample.values())
    by_source = plan_units(enc_store, "source")
    assert sorted(by_source) == sorted({r["source"] for r in rows})
    csv = tmp_path / "groups.csv"
    csv.write_text("sample_id,owner\n" + "".join(f"{r['sample_id']},g{i % 4}\n" for i, r in enumerate(rows)))
    groups = plan_units(enc_store, "column:owner", csv)
    assert sorted(groups) == ["g0", "g1", "g2", "g3"]
    assert sum(len(v) for v in groups.values()) == len(rows)
    with pytest.raises(SilodiffError, match="header"):
        plan_units(enc_store, "column:missing", csv)
    csv.write_text("sample_id,owner\n" + f"{rows[0]['sample_id']},g0\n")
    with pytest.raises(SilodiffError, match="no group"):
        plan_units(enc_store, "column:owner", csv)
    with pytest.raises(SilodiffError, match="--groups"):
        plan_units(enc_store, "column:owner")


def test_plan_round_trips_through_the_catalog(enc_store):
    plan = load_plan(enc_store)
    assert plan.members == 8 and plan.codes.shape == (len(plan.units), 8)
    again = make_plan(enc_store, members=8, unit="sample", seed=plan.seed)
    assert (again.codes == plan.codes).all() and again.units == plan.units
    # the plan artifact's lineage is every unit
    assert set(enc_store.catalog.lineage(plan.hash)) == {s for ids in plan.unit_ids for s in ids}


def test_every_complementary_sub_ensemble_never_saw_its_unit(enc_store):
    """Checked against the catalog's lineage, not against the plan's own bookkeeping."""
    plan = load_plan(enc_store)
    lineage = [set(enc_store.catalog.lineage(r["hash"])) for r in member_checkpoints(enc_store, plan)]
    for j, ids in enumerate(plan.unit_ids):
        never = plan.never_saw(j)
        assert len(never) == plan.members // 2
        for m in never:
            assert not lineage[m] & set(ids)
        for m in plan.saw(j):
            assert set(ids) <= lineage[m]
        # and the catalog agrees from the sample's side: exactly the members that saw it
        saw = {r["name"] for r in enc_store.catalog.artifacts_that_saw(ids) if r["kind"] == "member"}
        assert saw == {plan.member_names[m] for m in plan.saw(j)}
    check_plan(enc_store, plan)


def test_check_plan_refuses_codes_that_disagree_with_lineage(enc_store):
    plan = load_plan(enc_store)
    codes = plan.codes.copy()
    codes[0] = ~codes[0]  # claim unit 0 was seen by the other half
    forged = EncodedPlan(plan.members, plan.unit, plan.units, plan.unit_ids, codes, plan.member_names, plan.seed)
    with pytest.raises(SilodiffError, match="lineage"):
        check_plan(enc_store, forged)


def test_ablating_a_member_that_never_saw_a_unit_keeps_its_bookkeeping(enc_store):
    plan = load_plan(enc_store)
    j = 0
    m = plan.never_saw(j)[0]
    kept = plan.drop_members([m])
    saw_before = {plan.member_names[k] for k in plan.saw(j)}
    assert {kept.member_names[k] for k in kept.saw(j)} == saw_before
    assert {kept.member_names[k] for k in kept.never_saw(j)} == {plan.member_names[k] for k in plan.never_saw(j)} - {
        plan.member_names[m]
    }
    # member m's sample ids are unchanged for every member that remains
    for k, name in enumerate(kept.member_names):
        assert kept.member_ids(k) == plan.member_ids(plan.member_names.index(name))
    # a unit m did see loses one "saw" member and keeps its complement
    i = next(i for i in range(len(plan.units)) if plan.codes[i, m])
    assert len(kept.saw(i)) == len(plan.saw(i)) - 1 and len(kept.never_saw(i)) == len(plan.never_saw(i))


def test_member_without_units_is_refused(enc_store):
    with pytest.raises(SilodiffError, match="train on nothing|units need"):
        make_plan(enc_store, members=16, unit="source")
    assert np.isfinite(load_plan(enc_store).codes.sum())
