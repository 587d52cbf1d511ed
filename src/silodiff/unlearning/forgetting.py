"""Exact forgetting: retrain only what saw the data, switch atomically, delete, certify.

CDM §1 + SISA (Golatkar et al. 2023, arXiv 2308.01937; Bourtoule et al. 2021).
``forget(store, sample_ids=…, sources=…)`` runs the plan of ``plan.py`` as a
journaled operation (``journal.py``):

1. planned:  record the plan (a ``forget_requests`` row + a ``forget-request`` event);
2. staged:   a base that saw F retrains first (every compartment built on it then
             retrains from scratch on the new base); per compartment, reload the checkpoint after slice r-1 and retrain
             slices r..R-1 without the forgotten ids (``SliceJob(start=r, init=…,
             activate=False)``: registered inactive); retrain the shard-classifier
             router over the new final checkpoints, also inactive;
3. switched: ONE transaction activates the new artifacts, deactivates every old
             one that saw the data (paragon, feature net … included), rewrites the
             slice plans, drops emptied compartments, marks the samples forgotten
             and logs a ``forget`` event;
4. deleted:  delete the old weight files and rewrite the data shards without the
             forgotten samples;
5. done:     write the certificate (``certificate.py``).

Batched requests retrain each compartment once.  A request killed at any point
resumes from its phase on the next call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any


from ..composition import train_router
from ..errors import SilodiffError
from ..jobs import SliceJob, run_jobs
from ..store import Store, ids_hash
from ..store.artifacts import _fsync_write
from ..store.catalog import now
from ..store.lineage import BASE, BaseRef, active_base, base_ref, final_checkpoint
from ..store.scratch import part_path
from ..training import TrainConfig
from .certificate import build_certificate
from .journal import Journal, certificate_path, crash_point, store_lock
from .plan import plan_forget, resolve_request


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[forget] {msg}", flush=True)


def forget(
    store: Store,
    *,
    sample_ids: Sequence[str] = (),
    sources: Sequence[str] = (),
    dry_run: bool = False,
    progress: bool = False,
    backend: str = "serial",
    device: str | None = None,
) -> dict[str, Any]:
    """Forget samples (by id) and whole sources; returns the certificate (the plan when ``dry_run``).

    ``device`` retrains there (auto | cpu | cuda[:N] | mps; default: each model's recorded setting).

    Already forgotten ids are a no-op (``status: "noop"`` and a message); unknown
    ids or sources raise ``SilodiffError``.  An interrupted earlier request is
    completed first.
    """
    resolve_request(store, sample_ids, sources)  # unknown ids fail before anything runs
    if dry_run:
        return plan_forget(store, sample_ids, sources)
    with store_lock(store):
        store.clean_tmp()  # a killed earlier run's staging folders may hold weights that saw these samples
        journal = Journal(store)
        resumed = [_execute(store, journal, req, progress, backend, device) for req in journal.pending()]
        plan = plan_forget(store, sample_ids, sources)
        if not plan["forget_ids"]:
            if resumed:  # the same request, interrupted and now completed
                return resumed[-1]
            return {"status": "noop", "already_forgotten": plan["already_forgotten"],
                    "message": f"all {len(plan['already_forgotten'])} sample(s) were already forgotten; nothing to do"}
        request_id = hashlib.sha256(f"{plan['ids_hash']}:{now()}".encode()).hexdigest()[:16]
        journal.open(request_id, plan)
        _log(progress, f"request {request_id}: {len(plan['forget_ids'])} sample(s), "
                       f"{len(plan['compartments'])} compartment(s), {len(plan['artifacts'])} artifact(s) hit")
        crash_point("after-plan")
        return _execute(store, journal, journal.get(request_id), progress, backend, device)


def _execute(store: Store, journal: Journal, req: dict[str, Any], progress: bool, backend: str,
             device: str | None = None) -> dict[str, Any]:
    """Run a journaled request from its recorded phase to the end."""
    rid, plan, state, phase = req["id"], req["plan"], req["state"], req["phase"]
    timings = state.setdefault("seconds", {})
    state["attempts"] = state.get("attempts", 0) + 1  # > 1: it was interrupted and resumed
    journal.set_phase(rid, phase, state)

    def clock(name: str, t0: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 3)

    if phase == "planned":
        t0 = time.perf_counter()
        state["base"] = _retrain_base(store, plan, progress, device)
        clock("retrain_base", t0)
        t0 = time.perf_counter()
        state["compartments"] = _retrain_compartments(store, plan, progress, backend, state["base"], device)
        clock("retrain_compartments", t0)
        t0 = time.perf_counter()
        state["router"] = _retrain_router(store, plan, state["compartments"], progress, state.get("base"), device)
        clock("retrain_router", t0)
        journal.set_phase(rid, "staged", state)
        phase = "staged"
    crash_point("before-switch")
    if phase == "staged":
        t0 = time.perf_counter()
        _switch(store, journal, rid, plan, state)  # records phase "switched" in the same transaction
        clock("switch", t0)
        phase = "switched"
    crash_point("after-switch")
    if phase == "switched":
        t0 = time.perf_counter()
        _delete(store, plan)
        clock("delete", t0)
        journal.set_phase(rid, "deleted", state)
        phase = "deleted"
    crash_point("before-certificate")
    certificate = build_certificate(store, journal.get(rid))
    path = certificate_path(store, rid)
    path.parent.mkdir(exist_ok=True)
    tmp = part_path(store.root / "tmp", path.name)
    _fsync_write(tmp, json.dumps(certificate, indent=2).encode())
    tmp.replace(path)
    journal.finish(rid, certificate)
    _log(progress, f"request {rid} done: certificate {path}")
    return certificate


def _staged(store: Store, name: str, slices: list[list[str]], r: int, kind: str = "compartment",
            base_ids: Sequence[str] = ()) -> str:
    """The inactive checkpoint of ``name`` after slice r of the new plan (its lineage: those slices ∪ its base's)."""
    rows = store.catalog.checkpoints(kind, name, r, ids_hash({sid for s in slices[: r + 1] for sid in s} | set(base_ids)),
                                     active=False)
    if not rows or not store.artifacts.exists(rows[0]["hash"]):
        raise SilodiffError(f"{kind} {name!r}: the retrained checkpoint of slice {r} is missing")
    return rows[0]["hash"]


def _on(train: dict[str, Any], device: str | None) -> dict[str, Any]:
    """A recorded training config, run on ``device`` when one is given (the device is not part of the recipe).
    A retrain writes no TensorBoard curves: the recorded ``log_dir`` belongs to the original run."""
    train = {k: v for k, v in train.items() if k != "log_dir"}
    return train if device is None else {**train, "device": device}


def _retrain_base(store: Store, plan: dict[str, Any], progress: bool, device: str | None = None) -> dict[str, Any] | None:
    """Retrain the base without F, registered inactive; its staged final checkpoint, sets and ids."""
    base = plan.get("base")
    if not base:
        return None
    _log(progress, f"base: retrain without {base['removed']} sample(s); every compartment on it follows")
    job = SliceJob(str(store.root), BASE, BASE, base["slices"], base["model"], _on(base["train"], device),
                   activate=False, progress=progress, sources=base["sources"] or None, init_from=base.get("init_from"))
    run_jobs([job], "serial")
    hashes = [_staged(store, BASE, base["slices"], r, kind=BASE) for r in range(len(base["slices"]))]
    return {"hashes": hashes, **base_ref(store, hashes[-1]).to_dict()}


def _rebased(c: dict[str, Any], base: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compartment's model config and ``SliceJob`` options (its plan's ``extra``: hooks, init_from, base), pointed
    at the new base when it is rebuilt on one."""
    model, extra = dict(c["model"]), c.get("extra", {})
    options = {"hooks": list(extra.get("hooks", [])), "init_from": extra.get("init_from"),
               "base": BaseRef.from_dict(extra["base"]) if extra.get("base") else None}
    if c.get("rebase") and base is not None:
        if "base_hash" in model:  # an adapter names its base
            model["base_hash"] = base["hash"]
        options["base"] = BaseRef.from_dict(base)
    return model, options


def _retrain_compartments(store: Store, plan: dict[str, Any], progress: bool, backend: str,
                          base: dict[str, Any] | None = None, device: str | None = None) -> dict[str, list[str]]:
    """Retrain slices r..R-1 of every hit compartment (all of them on a new base), inactive; {name: staged hashes}."""
    todo = [c for c in plan["compartments"] if c["action"] == "retrain"]
    jobs = []
    for c in todo:
        model, options = _rebased(c, base)
        jobs.append(SliceJob(str(store.root), "compartment", c["name"], c["slices"], model, _on(c["train"], device),
                             start=c["first_slice"], init=c["init"], activate=False, progress=progress, **options))
    for c in todo:
        _log(progress, f"{c['name']}: retrain slices {c['first_slice'] + 1}..{len(c['slices'])} of {len(c['slices'])}"
                       f" without {c['removed']} sample(s) (≈{c['cost_fraction']:.0%} of the compartment)")
    if backend == "serial":
        for job in jobs:  # one at a time, so a crash can land between two compartments
            run_jobs([job], "serial")
            crash_point("mid-retrain")
    elif jobs:
        run_jobs(jobs, backend)
    return {job.name: [_staged(store, job.name, job.slices, r, base_ids=job.base.ids if job.base else ())
                       for r in c["retrained_slices"]] for c, job in zip(todo, jobs)}


def _retrain_router(store: Store, plan: dict[str, Any], staged: dict[str, list[str]], progress: bool,
                    base: dict[str, Any] | None = None, device: str | None = None) -> str | None:
    """The router over the remaining compartments' new final checkpoints (and the base, new or not, when it was
    one of its classes), inactive; a heads router retrains only the heads whose data changed."""
    router = plan["router"]
    if router is None:
        return None
    members = {n: staged[n][-1] if n in staged else final_checkpoint(store, "compartment", n)["hash"]
               for n in router["compartments"]}
    if router.get("with_base"):
        members[BASE] = base["hash"] if base else active_base(store)["hash"]
    _log(progress, f"router: retrain over {len(members)} compartments")
    return train_router(store, config=TrainConfig(**_on(router["train"], device)), members=members, activate=False,
                        progress=progress, heads=router.get("heads", False),
                        previous=router["old"] if router.get("heads") else None)


def _switch(store: Store, journal: Journal, rid: str, plan: dict[str, Any], state: dict[str, Any]) -> None:
    """ONE transaction: new artifacts active, old inactive, plans rewritten, samples forgotten."""
    catalog, ts = store.catalog, now()
    new = [h for hashes in state["compartments"].values() for h in hashes] + ([state["router"]] if state["router"] else [])
    new += state["base"]["hashes"] if state.get("base") else []
    old = sorted({a["hash"] for a in plan["artifacts"] if a["active"]}
                 | {h for c in plan["compartments"] if c["action"] == "retrain" for h in c["replaced"]})
    with catalog.transaction():
        catalog.set_active(old, False)
        catalog.set_active(new, True)
        for c in plan["compartments"]:
            if c["action"] == "drop":
                catalog.drop_compartment(c["name"])
            else:
                catalog.plan_compartment(c["name"], c["slices"])
        catalog.forget_samples(plan["forget_ids"], plan["sources_forgotten"], ts)
        catalog.log_event("forget", {"request": rid, "n_samples": len(plan["forget_ids"]), "ids_hash": plan["ids_hash"],
                                     "deactivated": old, "activated": new,
                                     "dropped": [c["name"] for c in plan["compartments"] if c["action"] == "drop"]})
        journal.set_phase(rid, "switched", state)


def _delete(store: Store, plan: dict[str, Any]) -> None:
    """Delete every old weight file that saw the data, and the stored pixels of the forgotten samples."""
    catalog = store.catalog
    for k, a in enumerate(plan["artifacts"]):
        if catalog.artifact(a["hash"])["active"]:
            raise SilodiffError(f"artifact {a['hash'][:12]} saw forgotten samples but is active: refusing to go on")
        store.artifacts.delete(a["hash"])
        if k == 0:
            crash_point("mid-delete")
    store.drop_dead_rows()  # only the chunks that hold forgotten samples are rewritten
    store.clean_tmp()  # a crashed earlier write's .part files
