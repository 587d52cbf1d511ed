"""Plan and train compartments and the paragon from a store.

- ``plan_compartments``: group live samples (by source, or ``shards:K``) and split
  each group into R slices, recorded in the catalog.
- ``train_compartments``: one ``SliceJob`` per compartment, each seeing only its
  own samples, on the chosen backend.
- ``train_paragon``: the same loop and slice schedule over all data (the
  monolithic baseline every composition is compared with).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import SilodiffError
from ..store import Store
from ..store.lineage import BaseRef, active_base
from ..training import TrainConfig
from ..training.plan import group_compartments, split_slices
from .backends import check_backend, run_jobs
from .failures import JobsFailed
from .models import from_base_model
from .pretrained import check_init, init_model
from .slices import JobResult, slice_jobs

PARAGON = "paragon"
FINE_TUNE_VAL_FRACTION = 0.1  # held out of each compartment to early-stop a full fine-tune from a base


def plan_compartments(store: Store, *, by: str = "source", slices: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Write the compartment plan; a compartment's existing plan is replaced."""
    groups = group_compartments(store.catalog.sample_rows(), by)
    if not groups:
        raise SilodiffError("no samples to plan: ingest data first")
    with store.catalog.transaction():
        for name, ids in sorted(groups.items()):
            store.catalog.plan_compartment(name, split_slices(ids, slices, seed))
    return store.catalog.compartments()


def train_compartments(
    store: Store,
    names: Sequence[str] | None = None,
    *,
    config: TrainConfig | None = None,
    model: dict | None = None,
    backend: str = "serial",
    progress: bool = True,
    hooks: Sequence[dict] | None = None,
    from_base: bool = False,
    adapter: str = "none",
    lora: dict[str, Any] | None = None,
    init_from: str | None = None,
    provenance: str | None = None,
    plan: str | None = None,
    slices: int = 1,
    **backend_options: Any,
) -> list[JobResult]:
    """Train (or resume) the planned compartments; each sees only its own samples.

    ``plan`` ('source' or 'shards:K'): first plan the compartments that way, ``slices`` slices each
    (``plan_compartments``, seeded by ``config.seed``), once every option is checked: bad input plans nothing.
    ``hooks``: training-hook specs as plain data (``silodiff.training.hooks.hook_spec``),
    e.g. anti-gradient control; every job rebuilds its own.
    ``from_base``: start each compartment from the active base model (``silodiff.store.lineage.active_base``), as a full
    fine-tune (``adapter="none"``; early-stopped on a held-out ``FINE_TUNE_VAL_FRACTION`` of each compartment's
    samples unless ``config.val_fraction`` says otherwise, 0 turning it off) or LoRA adapters (``adapter="lora"``,
    ``lora=dict(rank=, alpha=, targets=)``).  ``config.replay`` (with ``from_base`` only): that share of every
    batch comes from the base's samples (``training.loop.replay_batches``), the steps unchanged.
    ``init_from``: a local diffusers ``UNet2DModel`` folder every compartment starts from, registered as an external
    artifact with the ``provenance`` the caller declares (``silodiff.jobs.pretrained``).
    ``backend_options``: ``run_jobs_ray``'s keywords (``backend="ray"`` only).
    """
    config = (config or TrainConfig()).check()
    check_backend(backend, backend_options)
    base = None
    if from_base:
        if model is not None:
            raise SilodiffError("--unet-config and --from-base: a compartment on a base has the base's architecture")
        if init_from is not None:
            raise SilodiffError("--init-from and --from-base: a compartment starts from one model (import it as the base)")
        if adapter == "none" and lora:
            raise SilodiffError("--rank, --lora-alpha and --target-modules need --adapter lora")
        base = active_base(store)
        model = from_base_model(base, adapter, **(lora or {}))
        if adapter == "none" and config.val_fraction is None:  # a full fine-tune overfits an owner's few samples
            config = dataclasses.replace(config, val_fraction=FINE_TUNE_VAL_FRACTION)
    elif adapter != "none" or lora or config.replay:
        raise SilodiffError("--adapter, the LoRA options and --replay need --from-base: they start from the base")
    checked = check_init(store, init_from, provenance, model)  # before anything is planned or registered
    if plan is not None:
        plan_compartments(store, by=plan, slices=slices, seed=config.seed)
    planned = {c["name"] for c in store.catalog.compartments()} - {c["name"] for c in store.catalog.compartments("dropped")}
    if not planned:
        raise SilodiffError("no compartments planned: run `silodiff train compartments` with a plan, or plan_compartments()")
    if names is None and from_base:  # a compartment of public data only is the base itself: not trained again
        public = set(store.catalog.public_sources())
        planned = {n for n in planned if store.catalog.planned_sources(n) - public}
    names = sorted(planned) if names is None else list(names)
    unknown = sorted(set(names) - planned)
    if unknown:
        raise SilodiffError(f"unknown compartment(s): {', '.join(unknown)}")
    model, external = init_model(store, init_from, provenance, model, checked)
    jobs = slice_jobs(store, "compartment", {n: store.catalog.slices(n) for n in names}, config, model, progress, hooks,
                      init_from=external, base=BaseRef.from_dict(base) if base else None)
    try:
        results = run_jobs(jobs, backend, **backend_options)
    except JobsFailed as exc:  # the others finished: record them, then report the failures
        _record_trained(store, [r for r in exc.results if r is not None], backend, exc.failures)
        raise
    _record_trained(store, results, backend)
    return results


def _record_trained(store: Store, results: list[JobResult], backend: str, failed: dict[str, str] | None = None) -> None:
    with store.catalog.transaction():
        for r in results:
            store.catalog.set_compartment_status(r.name, "trained")
        store.catalog.log_event("train", {"kind": "compartment", "names": [r.name for r in results], "backend": backend,
                                          "seconds": {r.name: round(r.seconds, 2) for r in results},
                                          **({"failed": failed} if failed else {})})


def train_paragon(
    store: Store, *, config: TrainConfig | None = None, model: dict | None = None, slices: int = 1, seed: int = 0,
    progress: bool = True, hooks: Sequence[dict] | None = None, data_parallel: int = 1,
    init_from: str | None = None, provenance: str | None = None, backend: str = "serial", **backend_options: Any,
) -> JobResult:
    """The monolithic baseline: all live samples, same loop and slice schedule (``hooks`` as for compartments).

    ``data_parallel = N`` trains it in N processes, one per GPU (gloo processes on a CPU-only machine),
    with the gradients summed across them (``silodiff.training.parallel``; serial backend only).
    ``backend``: where its one job runs, as for compartments (``process``: a worker process of its own, so it can
    train beside another job on the machine's other cores; ``ray``: a Ray task).
    ``init_from``/``provenance``: start from a local diffusers ``UNet2DModel`` folder (as ``train_compartments``).
    """
    config = (config or TrainConfig()).check()
    if config.replay:
        raise SilodiffError("replay is for a compartment fine-tuned from a base (--from-base), not the paragon")
    if data_parallel < 1:
        raise SilodiffError(f"data_parallel must be ≥ 1, got {data_parallel}")
    if data_parallel > 1 and backend != "serial":
        raise SilodiffError(f"data_parallel starts its own processes: use the serial backend, not {backend!r}")
    ids = [r["sample_id"] for r in store.catalog.sample_rows()]
    model, external = init_model(store, init_from, provenance, model)
    jobs = slice_jobs(store, "paragon", {PARAGON: split_slices(ids, slices, seed)}, config, model, progress, hooks,
                      init_from=external, data_parallel=data_parallel)
    (result,) = run_jobs(jobs, backend, **backend_options)
    store.catalog.log_event("train", {"kind": "paragon", "seconds": round(result.seconds, 2), "backend": backend})
    return result
