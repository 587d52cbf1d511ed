"""Plan a forget request: what it touches and what it costs (SISA, Bourtoule et al. 2021; CDM §1).

For forgotten ids F and each compartment with slices s_0..s_{R-1}:

1. r = the first slice holding an id of F; the new plan is s_k \\ F for every k;
2. retrain slices r..R-1 from the checkpoint after slice r-1 (r = 0: from scratch);
   a compartment left empty is dropped; one left with an empty slice is re-split
   and retrained from scratch (a stage cannot train on nothing);
3. cost = Σ_{k≥r} steps_k / Σ_k steps_k, steps_k from ``jobs.stage_steps``
   (stage k trains epochs/R epochs on s_0 ∪ … ∪ s_k, so it costs ∝ |s_0..s_k|).

Every artifact whose lineage meets F (``catalog.artifacts_that_saw``, active or
not) is listed with its fate: compartment checkpoints are ``replace``d, the
shard-classifier router is ``retrain``ed over the remaining compartments (or
dropped when fewer than two remain), a hit base is retrained without F and every
compartment built on it retrains from scratch on the new base; every other kind (paragon, FLD feature
net, ensemble members, …) is ``drop``ped — deactivated and deleted, retrained on
demand — and inactive ones are ``delete``d.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..composition import ROUTER_NAME
from ..errors import SilodiffError
from ..jobs import SliceJob, stage_steps
from ..jobs.compartments import PARAGON
from ..store import Store, ids_hash
from ..store.external import artifact_info
from ..store.lineage import BASE, base_checkpoints, base_ref, built_on
from ..training import TrainConfig, steps_for
from ..training.plan import split_slices

DEFAULT_ROUTER_TRAIN = {"epochs": 100}


def _as_list(values: str | Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    return [values] if isinstance(values, str) else [str(v) for v in values]


def resolve_request(store: Store, sample_ids: Sequence[str] = (), sources: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(live ids to forget, ids already forgotten); unknown ids or sources are an error."""
    sample_ids, sources = _as_list(sample_ids), _as_list(sources)
    if not sample_ids and not sources:
        raise SilodiffError("nothing to forget: give sample ids and/or sources")
    status: dict[str, str | None] = {}
    for sid in sample_ids:
        row = store.catalog.sample(sid)
        if row is None:
            raise SilodiffError(f"unknown sample id {sid!r}")
        status[sid] = row["forgotten_at"]
    for src in sources:
        rows = store.catalog.source_samples(src)
        if rows is None:
            raise SilodiffError(f"unknown source {src!r}")
        status.update(rows)
    live = sorted(s for s, gone in status.items() if gone is None)
    return live, sorted(s for s, gone in status.items() if gone is not None)


def _active_by_slice(store: Store, name: str) -> dict[int, dict[str, Any]]:
    return {a["slice"]: a for a in store.catalog.artifacts("compartment", name=name)}


def _compartment_plan(store: Store, comp: dict[str, Any], forget: set[str], rebase: bool = False) -> dict[str, Any] | None:
    """The retrain of one compartment; ``rebase``: it is built on a base that saw F, so all of it retrains."""
    old = store.catalog.slices(comp["name"])
    hit = [r for r, s in enumerate(old) if forget.intersection(s)]
    if not hit and not rebase:
        return None
    first, new = (0 if rebase else hit[0]), [sorted(set(s) - forget) for s in old]
    remaining = sum(len(s) for s in new)
    entry = {"name": comp["name"], "status": comp["status"], "n_slices": len(old), "first_slice": first,
             "removed": sum(len(s) for s in old) - remaining, "remaining": remaining, "resplit": False}
    if remaining == 0:
        return {**entry, "action": "drop", "slices": []}
    if any(not s for s in new):  # a slice emptied: re-split what is left, retrain from scratch
        new = split_slices(sorted(sid for s in new for sid in s), min(len(old), remaining))
        entry.update(first_slice=0, resplit=True, n_slices=len(new))
    active = _active_by_slice(store, comp["name"])
    if comp["status"] != "trained" or not active:
        return {**entry, "action": "replan", "slices": new}
    latest = active[max(active)]
    info = artifact_info(store, latest["hash"])
    train = info.get("train")
    extra = {"hooks": info["hook_specs"]} if info.get("hook_specs") else {}  # e.g. AGC: retrain with the same hooks
    if info.get("init_from"):
        extra["init_from"] = info["init_from"]  # a retrain from slice 0 starts from the same pretrained UNet
    if info.get("base") and not rebase:  # the same base: its weights to start from, its lineage to keep
        extra["base"] = base_ref(store, info["base"]).to_dict()
    if train is None:
        raise SilodiffError(f"compartment {comp['name']!r}: checkpoint {latest['hash'][:12]} records no training config")
    init = active.get(entry["first_slice"] - 1)
    if entry["first_slice"] > 0 and (init is None or not store.artifacts.exists(init["hash"])):
        entry["first_slice"], init = 0, None  # no usable checkpoint before the slice: from scratch
    job = SliceJob(str(store.root), "compartment", comp["name"], new, latest["config"], train)
    steps = stage_steps(job, TrainConfig(**train))
    return {**entry, "action": "retrain", "slices": new, "model": latest["config"], "train": train, "extra": extra,
            "rebase": rebase,
            "init": init["hash"] if init and entry["first_slice"] > 0 else None,
            "retrained_slices": list(range(entry["first_slice"], len(new))),
            "replaced": [active[r]["hash"] for r in sorted(active) if r >= entry["first_slice"]],
            "retrain_steps": sum(steps[entry["first_slice"]:]), "full_steps": sum(steps),
            "cost_fraction": round(sum(steps[entry["first_slice"]:]) / sum(steps), 4)}


def plan_forget(store: Store, sample_ids: Sequence[str] = (), sources: Sequence[str] = ()) -> dict[str, Any]:
    """What forgetting ``sample_ids`` and every sample of ``sources`` would do, without doing it."""
    sample_ids, sources = _as_list(sample_ids), _as_list(sources)
    live, already = resolve_request(store, sample_ids, sources)
    forget = set(live)
    plan: dict[str, Any] = {
        "request": {"sample_ids": sorted(set(sample_ids)), "sources": sorted(set(sources))},
        "forget_ids": live, "ids_hash": ids_hash(live), "already_forgotten": already,
        "compartments": [], "artifacts": [], "router": None, "sources_forgotten": [], "estimate": {},
    }
    if not live:
        return plan
    # 0. a base that saw F retrains, and every compartment built on it retrains on the new base
    plan["base"] = _base_plan(store, forget)
    on_base = built_on(store, plan["base"]["replaced"]) if plan["base"] else set()
    # 1. compartments and the first affected slice of each
    for comp in store.catalog.compartments():
        if comp["status"] != "dropped":
            entry = _compartment_plan(store, comp, forget, rebase=comp["name"] in on_base)
            if entry is not None:
                plan["compartments"].append(entry)
    by_name = {c["name"]: c for c in plan["compartments"]}
    dropped = {n for n, c in by_name.items() if c["action"] == "drop"}
    kept = [n for n in (c["name"] for c in store.catalog.compartments("trained")) if n not in dropped]
    # 2. every artifact that saw any of F, and its fate
    for a in store.catalog.artifacts_that_saw(live, active=None):
        if not a["active"] and not store.artifacts.path(a["hash"]).exists():
            continue  # retired and deleted earlier: nothing left to do
        if not a["active"]:
            action = "delete"
        elif a["kind"] == "compartment" and a["compartment"] in by_name:
            action = "drop" if a["compartment"] in dropped else "replace"
        elif a["kind"] == "router" and a["name"] == ROUTER_NAME:
            action = "retrain" if len(kept) >= 2 else "drop"
        elif a["kind"] == BASE and plan["base"] is not None:
            action = "replace"
        else:
            action = "drop"
        plan["artifacts"].append({k: a[k] for k in ("hash", "kind", "name", "slice", "active")} | {"action": action})
    router = next((a for a in plan["artifacts"] if a["kind"] == "router" and a["action"] == "retrain"), None)
    if router is not None:
        info = artifact_info(store, router["hash"])
        plan["router"] = {"old": router["hash"], "train": info.get("train") or DEFAULT_ROUTER_TRAIN,
                          "compartments": kept, "with_base": BASE in info.get("compartments", []),
                          "heads": info.get("router") == "heads"}
    # 3. sources left with no live sample, and the image shape (for emptied data shards)
    touched = store.catalog.sources_of(live)
    for src in touched:
        if not {r["sample_id"] for r in store.catalog.sample_rows(src)} - forget:
            plan["sources_forgotten"].append(src)
    plan["sources_touched"] = touched
    plan["image_shape"] = list(store.dataset([live[0]]).image_shape)
    plan["estimate"] = _estimate(store, plan, kept)
    return plan


def _base_plan(store: Store, forget: set[str]) -> dict[str, Any] | None:
    """Retrain the active base without F (all of it: every compartment on it restarts anyway), or None."""
    bases = base_checkpoints(store)
    if not bases:
        return None
    last = bases[-1]
    lineage = set(store.catalog.lineage(last["hash"]))
    if not lineage & forget:
        return None
    remaining = sorted(lineage - forget)
    if not remaining:
        raise SilodiffError("this request forgets every sample of the base model; train a new base on other public "
                            "sources first, or forget the compartments built on it")
    info = artifact_info(store, last["hash"])
    if "train" not in info:
        raise SilodiffError(f"base checkpoint {last['hash'][:12]} records no training config")
    slices = split_slices(remaining, info.get("n_slices", 1))
    job = SliceJob(str(store.root), BASE, BASE, slices, last["config"], info["train"])
    return {"old": last["hash"], "replaced": [a["hash"] for a in bases], "slices": slices, "model": last["config"],
            "train": info["train"], "sources": info.get("sources", []), "removed": len(lineage & forget),
            **({"init_from": info["init_from"]} if info.get("init_from") else {}),
            "steps": sum(stage_steps(job, TrainConfig(**info["train"])))}


def _estimate(store: Store, plan: dict[str, Any], kept: list[str]) -> dict[str, Any]:
    """Optimizer steps the forget will take, against retraining everything it touches from scratch."""
    retrain = [c for c in plan["compartments"] if c["action"] == "retrain"]
    steps = sum(c["retrain_steps"] for c in retrain)
    est: dict[str, Any] = {"compartment_steps": steps, "compartments_retrained": len(retrain),
                           "compartments_dropped": sum(c["action"] == "drop" for c in plan["compartments"]),
                           "cost_fraction_of_touched": round(steps / max(1, sum(c["full_steps"] for c in retrain)), 4)}
    forget = set(plan["forget_ids"])
    if plan.get("base"):
        est["base_steps"] = plan["base"]["steps"]
        est["compartments_rebuilt_on_new_base"] = sum(bool(c.get("rebase")) for c in retrain)
    router = plan["router"]
    if router is not None and router["heads"]:  # the heads whose data holds a forgotten sample (every one: R's)
        heads = artifact_info(store, router["old"]).get("heads", {})
        reference_hit = plan.get("base") or any(heads.get(c["name"]) == "reference" for c in retrain)
        hit = set(heads) if reference_hit else {c["name"] for c in retrain if c["name"] in heads}
        lost = {c["name"]: c.get("removed", 0) for c in plan["compartments"]}
        est["router_heads_retrained"] = sorted(n for n in hit if n in kept and heads[n] != "reference")
        config = TrainConfig(**router["train"])
        est["router_steps"] = sum(steps_for(max(1, heads[n]["samples"] - lost.get(n, 0)), config)
                                  for n in est["router_heads_retrained"])
    elif router is not None:  # the shard classifier trains on every remaining compartment's samples
        n = sum(len({sid for s in store.catalog.slices(k) for sid in s} - forget) for k in kept)
        est["router_steps"] = steps_for(max(1, n), TrainConfig(**router["train"]))
    paragon = store.catalog.artifacts("paragon", name=PARAGON)
    if paragon:
        info = artifact_info(store, paragon[-1]["hash"])
        if "train" in info:
            ids = [r["sample_id"] for r in store.catalog.sample_rows() if r["sample_id"] not in forget]
            slices = split_slices(ids, min(info.get("n_slices", 1), len(ids))) if ids else []  # nothing left: no paragon
            job = SliceJob(str(store.root), "paragon", PARAGON, slices, {}, info["train"])
            est["paragon_steps"] = sum(stage_steps(job, TrainConfig(**info["train"]))) if slices else 0
            total = steps + est.get("router_steps", 0) + est.get("base_steps", 0)
            est["speedup_vs_paragon"] = round(est["paragon_steps"] / total, 2) if total and slices else None
    return est
