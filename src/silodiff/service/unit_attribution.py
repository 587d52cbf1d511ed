"""``POST /v1/attribute`` with ``method`` = ensemble | dtrak | trak: training units behind a key's rights.

- ``dtrak`` / ``trak``: the composition over the key's allowed compartments (the same
  snapshot ``/v1/generate`` would serve), so every scored unit lies in the
  lineage of a compartment the key may use; with ``models="compartments"`` the
  scores are averaged over those compartments' own models, with
  ``models="ensemble"`` over the encoded ensemble's members (rights as below);
- ``ensemble``: the store's encoded ensemble (signed contrast: no resampling); its
  members trained on every unit, so the key needs rights over every source in
  their lineage, else 403.

Limits as for generation (n, steps, n × steps); the snapshot is checked before and
after the run, as ``service.image_requests.run_attribution`` does.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import SilodiffError
from .errors import Forbidden, Unavailable
from .image_requests import check_limits, request_labels
from ..attribution.encoded import load_plan, member_checkpoints
from ..attribution.gradient_units import attribute_by_gradient
from ..attribution.influence import attribute_units
from ..store.lineage import num_classes, seen_by


def run_unit_attribution(state, caller, req, attempts: int = 3) -> dict[str, Any]:
    check_limits(state.settings, req.n, req.steps)
    for _ in range(attempts):
        before = _snapshot(state, caller, req)  # 403 outside the key's rights
        t0 = time.perf_counter()
        with state.active.lock.read():
            labels = request_labels(req, _num_classes(state)).tolist()
            try:
                if req.method == "ensemble":
                    _, result = attribute_units(
                        state.store, labels=labels, seed=req.seed, sampler=req.sampler, steps=req.steps,
                        top_k=req.top_k, loss_change=False, contrast="signed",
                    )
                else:
                    names = [n for n in before if n != "router"]
                    router = "classifier" if "router" in before else ("trajectory" if req.router == "auto" else req.router)
                    _, _, result = attribute_by_gradient(
                        state.store, method=req.method, labels=labels, seed=req.seed,
                        allowed=None if req.models == "ensemble" else names, router=router, models=req.models,
                        unit=req.unit, sampler=req.sampler, steps=req.steps, proj_dim=req.proj_dim, top_k=req.top_k,
                    )
            except Forbidden:
                raise
            except SilodiffError:
                if _snapshot(state, caller, req) == before:
                    raise
                continue  # the active set switched under the run: redo it
        if _snapshot(state, caller, req) != before:
            continue
        state.store.catalog.log_event(
            "attribute",
            {"key": caller.name, "method": req.method, "models": req.models, "unit": req.unit, "artifacts": before,
             "seed": req.seed, "n": req.n, "steps": req.steps, "seconds": round(time.perf_counter() - t0, 4)},
        )
        return {**result, "method": req.method, "artifacts": before}
    raise Unavailable("the active set kept changing during attribution; retry")


def _snapshot(state, caller, req) -> dict[str, str]:
    """The artifact hashes the request is served by; refuses what the key may not use."""
    if req.method != "ensemble" and req.models != "ensemble":
        return state.active.artifacts(caller, req.compartments, req.router)
    if req.compartments:
        what = "method ensemble" if req.method == "ensemble" else "models ensemble"
        raise SilodiffError(f"{what} attributes with the encoded ensemble: leave out compartments")
    store = state.store
    plan = load_plan(store)
    if req.method == "ensemble" and plan.unit != req.unit:  # dtrak / trak group any unit over the members' lineage
        raise SilodiffError(f"the encoded ensemble's units are {plan.unit!r}, not {req.unit!r}")
    rows = member_checkpoints(store, plan)
    seen = set(seen_by(store, [row["hash"] for row in rows]))
    sources = {r["source"] for r in store.catalog.sample_rows() if r["sample_id"] in seen}
    if not caller.may_use(sources):
        raise Forbidden("the encoded ensemble was trained on sources outside this key's rights")
    return {plan.member_names[m]: r["hash"] for m, r in enumerate(rows)}


def _num_classes(state) -> int:
    return num_classes(state.store)
