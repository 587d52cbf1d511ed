"""Encoded ensembles: codes, the plan and training (Dai & Gifford 2023, arXiv 2306.02174; METHODS.md §3).

M members (M even).  Every training unit j (a sample, a source, or a group
named in a CSV column) gets a unique random binary code ``c_j ∈ {0,1}^M`` with
exactly M/2 ones; member m trains on the units with ``c_jm = 1``.  Then for
every unit the members that never saw it, ``{m : c_jm = 0}``, form a
sub-ensemble of M/2 models, and resampling with it (same noise) measures the
unit's influence (``influence.py``).

The plan is an artifact (``kind = "encoded-plan"``): the codes as a uint8
safetensors tensor (units, M), the unit names and each unit's content-addressed
sample set in its JSON, and lineage = every unit.  Members are ordinary slice
jobs (``SliceJob(kind="member", name="member-m")``) on any backend, so each
member's lineage is recorded by the job like a compartment's.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SilodiffError
from ..jobs import SliceJob, run_jobs
from ..jobs.models import default_model_config
from ..jobs.slices import JobResult
from ..store import Store
from ..store.lineage import final_checkpoint
from ..training import TrainConfig
from ..training.plan import split_slices
from .ensemble import EnsembleDenoiser

PLAN_KIND, PLAN_NAME, MEMBER_KIND = "encoded-plan", "encoded", "member"
UNIT_KINDS = ("sample", "source", "column:NAME")


def member_name(m: int) -> str:
    return f"member-{m}"


def balanced_codes(n_units: int, members: int, *, random_state: int = 0) -> np.ndarray:
    """``n_units`` distinct random codes of length M with exactly M/2 ones, (n_units, M) bool.

    Each code is a uniformly random M/2-subset of the members; duplicates are
    redrawn, so codes are unique (needs ``n_units ≤ C(M, M/2)``).
    """
    if members < 2 or members % 2:
        raise SilodiffError(f"members must be an even number ≥ 2, got {members}")
    capacity = math.comb(members, members // 2)
    if n_units > capacity:
        raise SilodiffError(
            f"{n_units} units need more than {members} members: C({members}, {members // 2}) = {capacity} distinct codes"
        )
    rng = np.random.default_rng(random_state)
    codes, seen = np.zeros((n_units, members), dtype=bool), set()
    j = 0
    while j < n_units:
        ones = rng.choice(members, members // 2, replace=False)  # 1. a random half of the members
        key = tuple(sorted(ones.tolist()))
        if key in seen:  # 2. unique codes only
            continue
        seen.add(key)
        codes[j, ones] = True
        j += 1
    return codes


def read_groups(path: str | Path, column: str) -> dict[str, str]:
    """``sample_id → group`` from a CSV with a header holding ``sample_id`` and ``column``."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "sample_id" not in header or column not in header:
                raise SilodiffError(f"{path}: the header must hold 'sample_id' and {column!r}, found {header}")
            groups = {}
            for row in reader:
                sid, group = (row["sample_id"] or "").strip(), (row[column] or "").strip()
                if not sid or not group:
                    raise SilodiffError(f"{path}: line {reader.line_num} has an empty sample_id or {column}")
                groups[sid] = group
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SilodiffError(f"cannot read {path}: {exc}") from None
    return groups


def plan_units(store: Store, unit: str = "sample", groups: str | Path | None = None) -> dict[str, list[str]]:
    """Units of attribution over the live samples: ``unit name → sample ids`` (names sorted)."""
    rows = store.catalog.sample_rows()
    if not rows:
        raise SilodiffError("the store holds no samples: ingest data first")
    if unit == "sample":
        out = {r["sample_id"]: [r["sample_id"]] for r in rows}
    elif unit == "source":
        out = {}
        for r in rows:
            out.setdefault(r["source"], []).append(r["sample_id"])
    elif unit.startswith("column:") and unit != "column:":
        if groups is None:
            raise SilodiffError(f"--unit {unit} needs --groups FILE.csv (columns sample_id,{unit[7:]})")
        mapping = read_groups(groups, unit[7:])
        missing = [r["sample_id"] for r in rows if r["sample_id"] not in mapping]
        if missing:
            raise SilodiffError(f"{len(missing)} live sample(s) have no group in {groups}, e.g. {missing[0]}")
        out = {}
        for r in rows:
            out.setdefault(mapping[r["sample_id"]], []).append(r["sample_id"])
    else:
        raise SilodiffError(f"unknown unit {unit!r}: use sample, source or column:NAME")
    return {k: sorted(out[k]) for k in sorted(out)}


@dataclass
class EncodedPlan:
    """Which units each member trains on: ``codes[j, m] = 1`` ⇔ member m saw unit j."""

    members: int
    unit: str
    units: list[str]  # unit names, (U,)
    unit_ids: list[list[str]]  # sample ids of each unit
    codes: np.ndarray  # (U, M) bool
    member_names: list[str]
    seed: int = 0
    hash: str | None = None

    def __post_init__(self) -> None:
        self.codes = np.asarray(self.codes, dtype=bool)
        self._index = {u: j for j, u in enumerate(self.units)}

    def index(self, unit: str) -> int:
        if unit not in self._index:
            raise SilodiffError(f"unknown unit {unit!r}")
        return self._index[unit]

    def member_ids(self, m: int) -> list[str]:
        """Every sample id member m trains on (the units with a 1 at m)."""
        return sorted(sid for j in np.flatnonzero(self.codes[:, m]) for sid in self.unit_ids[j])

    def saw(self, j: int) -> list[int]:
        """Members trained on unit j."""
        return np.flatnonzero(self.codes[j]).tolist()

    def never_saw(self, j: int) -> list[int]:
        """The complementary sub-ensemble of unit j: members that never saw it."""
        return np.flatnonzero(~self.codes[j]).tolist()

    def drop_members(self, drop: Sequence[int]) -> EncodedPlan:
        """The plan over the remaining members (e.g. after members are retired); codes keep their meaning."""
        keep = [m for m in range(len(self.member_names)) if m not in set(drop)]
        if not keep:
            raise SilodiffError("cannot drop every member")
        return EncodedPlan(
            len(keep),
            self.unit,
            self.units,
            self.unit_ids,
            self.codes[:, keep],
            [self.member_names[m] for m in keep],
            self.seed,
            None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "unit": self.unit,
            "units": self.units,
            "member_names": self.member_names,
            "seed": self.seed,
            "n_samples": sum(len(u) for u in self.unit_ids),
        }


def make_plan(
    store: Store, *, members: int, unit: str = "sample", groups: str | Path | None = None, seed: int = 0
) -> EncodedPlan:
    """Units and their balanced codes (not yet saved)."""
    units = plan_units(store, unit, groups)
    codes = balanced_codes(len(units), members, random_state=seed)
    plan = EncodedPlan(
        members, unit, list(units), list(units.values()), codes, [member_name(m) for m in range(members)], seed
    )
    empty = [plan.member_names[m] for m in range(members) if not plan.member_ids(m)]
    if empty:
        raise SilodiffError(f"{', '.join(empty)} would train on nothing: use more units or fewer members")
    return plan


def save_plan(store: Store, plan: EncodedPlan) -> str:
    """Register the plan as the active ``encoded-plan`` artifact with lineage = every unit."""
    with store.catalog.transaction():
        set_ids = [store.catalog.add_sample_set(ids) for ids in plan.unit_ids]
        config = {"model": {"kind": PLAN_KIND}, "info": {**plan.to_dict(), "unit_sets": set_ids}}
        digest = store.artifacts.put({"codes": torch.from_numpy(plan.codes.astype(np.uint8))}, config)
        store.catalog.set_active([r["hash"] for r in store.active(PLAN_KIND, PLAN_NAME) if r["hash"] != digest], False)
        store.catalog.add_artifact(
            digest,
            PLAN_KIND,
            PLAN_NAME,
            config["model"],
            set_ids,
            metrics={"units": len(plan.units), "members": plan.members},
        )
    plan.hash = digest
    return digest


def load_plan(store: Store) -> EncodedPlan:
    """The active plan of the store."""
    rows = store.active(PLAN_KIND, PLAN_NAME)
    if not rows:
        raise SilodiffError(f"no encoded ensemble in {store.root}: run `silodiff train encoded`")
    digest = rows[-1]["hash"]
    tensors, config = store.artifacts.get(digest)
    info = config["info"]
    unit_ids = [store.catalog.sample_set(s) for s in info["unit_sets"]]
    return EncodedPlan(
        info["members"],
        info["unit"],
        info["units"],
        unit_ids,
        tensors["codes"].numpy().astype(bool),
        info["member_names"],
        info["seed"],
        digest,
    )


def train_encoded(
    store: Store,
    *,
    members: int,
    unit: str = "sample",
    groups: str | Path | None = None,
    config: TrainConfig | None = None,
    model: dict | None = None,
    slices: int = 1,
    seed: int = 0,
    backend: str = "serial",
    progress: bool = True,
    **backend_options: Any,
) -> tuple[EncodedPlan, list[JobResult]]:
    """Plan the codes and train the M members through the slice jobs (resumes finished members)."""
    config = (config or TrainConfig()).check()
    plan = make_plan(store, members=members, unit=unit, groups=groups, seed=seed)
    save_plan(store, plan)
    model = model or default_model_config(store)
    jobs = [
        SliceJob(
            str(store.root),
            MEMBER_KIND,
            name,
            split_slices(plan.member_ids(m), slices, seed),
            model,
            config.to_dict(),
            progress=progress,
        )
        for m, name in enumerate(plan.member_names)
    ]
    results = run_jobs(jobs, backend, **backend_options)
    store.catalog.retire_slices(MEMBER_KIND, plan.member_names, slices)  # a member re-planned with fewer slices
    store.catalog.log_event(
        "train",
        {
            "kind": "encoded",
            "plan": plan.hash,
            "members": members,
            "unit": unit,
            "units": len(plan.units),
            "backend": backend,
            "seconds": {r.name: round(r.seconds, 2) for r in results},
        },
    )
    return plan, results


def member_checkpoints(store: Store, plan: EncodedPlan) -> list[dict[str, Any]]:
    """Each member's active final checkpoint row (in member order)."""
    return [final_checkpoint(store, MEMBER_KIND, name) for name in plan.member_names]


def check_plan(store: Store, plan: EncodedPlan) -> None:
    """Refuse a plan whose members' catalog lineage disagrees with the codes.

    For every member m, its lineage must be exactly the union of the units with
    ``c_jm = 1``; so every unit's complementary sub-ensemble never saw it.
    """
    for m, row in enumerate(member_checkpoints(store, plan)):
        if set(store.catalog.lineage(row["hash"])) != set(plan.member_ids(m)):
            raise SilodiffError(
                f"{plan.member_names[m]}'s lineage does not match the encoded plan: retrain with `silodiff train encoded`"
            )


def load_ensemble(
    store: Store, plan: EncodedPlan | None = None, *, check: bool = True
) -> tuple[EncodedPlan, EnsembleDenoiser]:
    """The active plan and its members as one ``EnsembleDenoiser`` (lineage checked against the codes)."""
    plan = plan or load_plan(store)
    if check:
        check_plan(store, plan)
    members = [store.load(row["hash"]) for row in member_checkpoints(store, plan)]
    return plan, EnsembleDenoiser(members, names=plan.member_names)
