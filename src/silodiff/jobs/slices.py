"""A training job: one model trained slice by slice (SISA), checkpoint after each slice.

Stage r trains ``epochs / R`` epochs on the union of slices 0..r, so stage r
costs ∝ r + 1 and retraining from slice r costs ≈ (2R+1)/(3R) of the whole on
average (Bourtoule et al. 2021).  After each stage the checkpoint (EMA weights
for sampling + the full training state under ``train/``) is written as an
artifact (``model.safetensors`` the EMA weights, ``train.safetensors`` the training state: see
``store.artifacts``) and registered with its lineage: the sample sets of slices 0..r.  A
job that is killed and run again resumes after its last registered slice.

Jobs are plain data (``SliceJob``) and ``run_job`` is a top-level function, so
any backend (serial, process pool, Ray) runs them the same way.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import build
from ..store import Store, ids_hash
from ..store.lineage import BaseRef
from ..training import TrainConfig, new_state, steps_for, train
from ..data import SampleSet
from ..training.early_stop import MAX_HELD_OUT, EarlyStopping, auto_every, split_validation
from ..training.hooks import build_hooks, hook_reports
from ..training.plan import derive_seed
from ..training.state import TrainState, model_tensors
from .models import default_model_config


@dataclass
class SliceJob:
    store: str
    kind: str  # "compartment", "paragon", "member"
    name: str
    slices: list[list[str]]
    model: dict[str, Any]  # model config (rebuilds the architecture)
    train: dict[str, Any]  # TrainConfig fields
    start: int = 0  # first slice to (re)train
    init: str | None = None  # artifact hash of the checkpoint after slice start-1
    activate: bool = True  # register as active (False: staged, for an atomic switch later)
    threads: int = 1
    progress: bool = True
    hooks: list[dict[str, Any]] = field(default_factory=list)  # training-hook specs (``training.hooks.hook_spec``)
    base: BaseRef | None = None  # the base checkpoint it starts from: its lineage is part of this model's
    init_from: str | None = None  # the external artifact (a pretrained UNet) it starts from
    sources: list[str] | None = None  # a base: the public sources it trains on (kept in its config.json)
    data_parallel: int = 1  # N > 1: trains in N processes (``training.parallel``)


@dataclass
class JobResult:
    name: str
    artifacts: list[str]  # hashes of the checkpoints written, slice order
    seconds: float
    steps: int
    resumed_from: int


def slice_jobs(store: Store, kind: str, plans: dict[str, list[list[str]]], config: TrainConfig, model: dict | None,
               progress: bool, hooks: Sequence[dict] | None = None, **options: Any) -> list[SliceJob]:
    """One job per planned model (name → its slices), all with one architecture (default: the store's default
    denoiser), training config, hook specs and ``options`` (the other ``SliceJob`` fields: base, init_from, …)."""
    model = model or default_model_config(store)
    return [
        SliceJob(str(store.root), kind, name, slices, model, config.to_dict(), progress=progress,
                 hooks=list(hooks or []), **options)
        for name, slices in plans.items()
    ]


def stage_steps(job: SliceJob, config: TrainConfig) -> list[int]:
    """Optimizer steps of each stage: epochs / R over the cumulative slices."""
    n_slices = len(job.slices)
    sizes = [sum(len(s) for s in job.slices[: r + 1]) for r in range(n_slices)]
    return [steps_for(n, config, config.epochs / n_slices) for n in sizes]


def _hook_kinds(job: SliceJob) -> list[str]:
    return sorted(h["config"]["kind"] for h in job.hooks)


def recipe(job: SliceJob) -> str:
    """Fingerprint of how a job trains (architecture, TrainConfig, hook specs): only a checkpoint with the same
    recipe is resumed, so AGC with another λ, or other epochs, trains anew instead of reusing it."""
    spec = {"model": job.model, "train": TrainConfig(**job.train).recipe_dict(), "hooks": job.hooks}
    if job.base:
        spec["base"] = job.base.hash
    if job.init_from:
        spec["init_from"] = job.init_from
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _early_stopping(stage: SampleSet, config: TrainConfig, budget: int) -> tuple[SampleSet, EarlyStopping | None]:
    """(the samples to train on, the early-stopping hook) for one stage; no hook when ``val_fraction`` is 0.

    The held-out samples stay in the stage's lineage: they decided when it stopped."""
    ids = stage.sample_ids
    fraction = min(config.val_fraction or 0.0, MAX_HELD_OUT / max(1, len(ids)))  # a large set: ≤ MAX_HELD_OUT
    fit, held = split_validation(ids, fraction, config.seed)
    if not held:
        return stage, None
    every = config.val_every or auto_every(budget, config.batch_size * config.grad_accum, len(held))
    stopper = EarlyStopping(stage.subset(held).load(), every=every, patience=config.patience, seed=config.seed,
                            num_train_timesteps=config.num_train_timesteps)
    return stage.subset(fit), stopper


def _save_checkpoint(store: Store, job: SliceJob, state: TrainState, r: int, set_ids: list[str], seconds: float,
                     hooks: list | None = None, stopper: EarlyStopping | None = None) -> str:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.ema.model.state_dict().items()}
    tensors.update(state.to_tensors())
    info = {"kind": job.kind, "name": job.name, "slice": r, "n_slices": len(job.slices), "train": job.train}
    if job.base:
        info["base"] = job.base.hash  # forgetting a base sample rebuilds this compartment on the new base
    if job.sources:
        info["sources"] = job.sources
    if stopper is not None:
        info["early_stop"] = stopper.report()  # the stop step, the best step and the held-out loss curve
    if job.init_from:
        info["init_from"] = job.init_from  # the external artifact (pretrained UNet) it started from
    reports, summaries = hook_reports(hooks or [])
    if reports:
        info["hooks"] = reports  # e.g. AGC skip counts per sample_id
        info["hook_specs"] = job.hooks  # so a retrain (forgetting) can rebuild the same hooks
    digest = store.artifacts.put(tensors, {"model": job.model, "info": info})
    with store.catalog.transaction():
        if job.activate:
            store.catalog.supersede(job.kind, job.name, r, digest)
        store.catalog.add_artifact(
            digest, job.kind, job.name, job.model, set_ids[: r + 1] + base_sets(job),
            compartment=job.name if job.kind == "compartment" else None, slice=r,
            metrics={"train_seconds": round(seconds, 3), "step": state.step, "n": sum(len(s) for s in job.slices[: r + 1]),
                     "recipe": recipe(job),
                     **({"best_step": stopper.best_step, "stopped_early": stopper.stop_step is not None}
                        if stopper is not None else {}),
                     **({"hooks": _hook_kinds(job), **summaries} if job.hooks else {})},
            active=job.activate,
        )
    return digest


def base_sets(job: SliceJob) -> list[str]:
    """The sample sets of the base a job starts from: part of its effective lineage (own ids ∪ the base's)."""
    return list(job.base.sets) if job.base else []


def _resume_point(store: Store, job: SliceJob) -> tuple[int, str | None]:
    """The first slice still to train and the checkpoint to start from (hash-named by lineage)."""
    start, init = job.start, job.init
    base_ids = set(job.base.ids) if job.base else set()
    for r in range(job.start, len(job.slices)):
        want = ids_hash({sid for s in job.slices[: r + 1] for sid in s} | base_ids)
        rows = store.catalog.checkpoints(job.kind, job.name, r, want, active=job.activate)
        # a checkpoint trained another way (other hooks or λ, epochs, lr, architecture) is not this job's;
        # checkpoints from before recipes were recorded are matched on their hook kinds
        row = next((x for x in rows if _same_recipe(x["metrics"], job)), None)
        if row is None or not store.artifacts.exists(row["hash"]):
            break
        start, init = r + 1, row["hash"]
    return start, init


def _same_recipe(metrics: dict[str, Any], job: SliceJob) -> bool:
    if "recipe" in metrics:
        return metrics["recipe"] == recipe(job)
    return metrics.get("hooks", []) == _hook_kinds(job)


def _initial_model(store: Store, job: SliceJob) -> torch.nn.Module:
    """The model before its first slice: fresh, the base's weights (a full fine-tune starts from them; an
    adapter freezes them and trains only its low-rank layers) or an imported pretrained UNet's (``init_from``)."""
    model = build(job.model)
    if job.init_from:
        model.load_state_dict(model_tensors(store.artifacts.get(job.init_from, train=False)[0]))
    if job.base:
        tensors = model_tensors(store.artifacts.get(job.base.hash, train=False)[0])
        if getattr(model, "base_hash", None):
            model.load_base(tensors)
        else:
            model.load_state_dict(tensors)
    return model


def run_job(job: SliceJob) -> JobResult:
    """Train one job to completion (resuming if checkpoints exist); returns what it wrote.

    ``job.data_parallel = N`` trains it in N processes (one per GPU on CUDA, gloo on
    the CPU; see ``silodiff.training.parallel``); rank 0 writes the checkpoints.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        if job.data_parallel > 1:
            return _run_parallel(job)
        return _run(job)
    finally:
        torch.set_num_threads(threads)


def _run_parallel(job: SliceJob) -> JobResult:
    import tempfile
    from pathlib import Path

    from ..devices import resolve_device
    from ..training.parallel import launch

    size = job.data_parallel
    device_type = resolve_device(job.train.get("device", "auto")).type
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        launch(_rank_main, size, job, str(out), device_type=device_type)
        r = json.loads(out.read_text())
    return JobResult(r["name"], r["artifacts"], r["seconds"], r["steps"], r["resumed_from"])


def _rank_main(rank: int, size: int, job: SliceJob, out: str) -> None:
    """One data-parallel rank: the same job on its device; rank 0 writes the result for the parent."""
    from dataclasses import asdict, replace

    from ..training.parallel import rank_device

    torch.set_num_threads(job.threads)
    train = {**job.train, "device": rank_device(job.train.get("device", "auto"), rank)}
    result = _run(replace(job, train=train, progress=job.progress and rank == 0), rank=rank)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(asdict(result), f)


def _run(job: SliceJob, rank: int = 0) -> JobResult:
    lead = rank == 0  # the one process that writes (data-parallel ranks > 0 only train)
    store = Store(job.store, create=False)
    config = TrainConfig(**{**job.train, "seed": derive_seed(job.train.get("seed", 0), job.name)}).check()
    set_ids = [store.catalog.add_sample_set(s) for s in job.slices] if lead else []
    hooks = build_hooks(job.hooks)  # plain-data specs, e.g. AGC (silodiff.defences.agc)
    start, init = _resume_point(store, job)
    torch.manual_seed(config.seed)
    state = new_state(_initial_model(store, job), config)
    if init is not None:
        tensors, _ = store.artifacts.get(init)
        state.load_tensors(tensors)
    data = store.training_set(sorted({sid for s in job.slices for sid in s}))  # streamed when large
    base_ids = job.base.ids if job.base else ()
    replay = store.training_set(sorted(base_ids)) if config.replay and base_ids else None  # the base's samples
    budget = stage_steps(job, config)
    written, t0, steps0 = [], time.perf_counter(), state.step
    for r in range(start, len(job.slices)):
        # stage r: the union of slices 0..r, for its share of the epochs
        stage = data.subset(sorted(sid for s in job.slices[: r + 1] for sid in s))
        label = f"{job.name} slice {r + 1}/{len(job.slices)}" if job.progress else False
        stage_t0 = time.perf_counter()
        stage, stopper = _early_stopping(stage, config, budget[r])
        train(state, stage, config, steps=budget[r], progress=label, hooks=[*hooks, *([stopper] if stopper else [])],
              replay=replay, name=job.name)
        if stopper:
            stopper.finish(state)
        if lead:
            written.append(_save_checkpoint(store, job, state, r, set_ids, time.perf_counter() - stage_t0, hooks,
                                            stopper))
    return JobResult(job.name, written, time.perf_counter() - t0, state.step - steps0, start)

