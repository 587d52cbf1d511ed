"""Continual learning: a new source becomes a new compartment (CDM §1, Golatkar et al. 2023).

``add_source`` ingests new data, plans each new source as its own compartment
with the store's slice count (SISA), and trains only those compartments, with
the same architecture and training config as the existing ones.  Nothing else
is retrained except artifacts whose output set changes: the shard-classifier
router (one output per compartment).  Every other compartment's checkpoints
keep their hashes.
"""

from __future__ import annotations

from typing import Any

from ..composition import ROUTER_NAME, train_router
from ..data import SampleSet
from ..errors import SilodiffError
from ..jobs import train_compartments
from ..store import Store
from ..store.external import artifact_info
from ..store.lineage import BASE, base_of, final_checkpoint, num_classes, trained_compartments
from ..training import TrainConfig
from ..training.plan import split_slices
from .journal import store_lock
from .plan import DEFAULT_ROUTER_TRAIN


def _template(store: Store) -> tuple[int, dict[str, Any] | None, dict[str, Any] | None]:
    """(slices per compartment, model config, train config) of the existing trained compartments."""
    comps = [c for c in store.catalog.compartments() if c["status"] != "dropped"]
    n_slices = max((c["n_slices"] for c in comps), default=1)
    for name in trained_compartments(store):
        final = final_checkpoint(store, "compartment", name)
        train = artifact_info(store, final["hash"]).get("train")
        if train is not None:
            return n_slices, final["config"], train
    return n_slices, None, None


def _like(store: Store, model: dict[str, Any] | None) -> dict[str, Any]:
    """How the existing compartments were built: on the active base (the same adapter) or from ``model``, so a new
    compartment on a base gets the base's lineage too."""
    names = trained_compartments(store)
    if not names or not base_of(store, final_checkpoint(store, "compartment", names[0])["hash"]):
        return {"model": model}
    if model.get("kind") != "lora-denoiser":
        return {"from_base": True, "adapter": "none"}
    return {"from_base": True, "adapter": "lora",
            "lora": {"rank": model["rank"], "alpha": model.get("alpha"), "targets": model.get("targets")}}


def add_source(store: Store, data: SampleSet, dataset: str, *, config: TrainConfig | None = None,
               changes: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Register ``data`` (new sources only) as new compartments, train them, retrain the router if any.

    ``config`` defaults to the existing compartments' training config; ``changes`` replaces some of its fields
    (e.g. ``{"epochs": 50, "device": "cuda"}``).  It is checked before anything is stored.  Returns the
    new compartments' checkpoints, the new router (or None) and the untouched
    compartments' final hashes.
    """
    if len(data) == 0:
        raise SilodiffError("nothing to add: the data set is empty")
    fields = config.to_dict() if config is not None else (_template(store)[2] or {})
    config = TrainConfig(**{**fields, **(changes or {})}).check()
    new_sources = sorted(set(data.sources))
    if _interrupted(store, data):  # the same call was killed after ingesting: resume its training
        return _finish(store, data, dataset, new_sources, config, progress, ingest=False)
    existing = {c["name"] for c in store.catalog.compartments()} | set(store.source_names())
    clash = sorted(set(new_sources) & existing)
    if clash:
        raise SilodiffError(f"source(s) {', '.join(clash)} already exist: add-source registers new sources only")
    known = [s for s in data.sample_ids if store.catalog.sample(s) is not None]
    if known:
        raise SilodiffError(f"{len(known)} sample(s) are already in the store (e.g. {known[0][:12]}), under another source")
    return _finish(store, data, dataset, new_sources, config, progress, ingest=True)


def _interrupted(store: Store, data: SampleSet) -> bool:
    """Every sample already registered under its own source, each source a compartment not yet trained."""
    for sid, src in zip(data.sample_ids, data.sources):
        row = store.catalog.sample(sid)
        if row is None or row["source"] != src or row["forgotten_at"] is not None:
            return False
    status = {c["name"]: c["status"] for c in store.catalog.compartments()}
    return all(status.get(s) == "planned" for s in set(data.sources))


def _finish(store: Store, data: SampleSet, dataset: str, new_sources: list[str], config: TrainConfig,
            progress: bool, *, ingest: bool) -> dict[str, Any]:
    with store_lock(store):
        n_slices, model, _ = _template(store)
        if model is not None and data.num_classes > model.get("num_classes", data.num_classes):
            raise SilodiffError(f"the new data has labels up to {data.num_classes - 1}; the compartments' "
                                f"model has {model['num_classes']} classes")
        before = {n: final_checkpoint(store, "compartment", n)["hash"] for n in trained_compartments(store)}
        if ingest:
            # 1. register the samples and one compartment per new source (same slice count) in one transaction
            with store.catalog.transaction():
                store.ingest(data, dataset)
                for source in new_sources:
                    ids = [s for s, src in zip(data.sample_ids, data.sources) if src == source]
                    store.catalog.plan_compartment(source, split_slices(ids, min(n_slices, len(ids))))
        # 2. train only them (a rerun resumes after the last checkpoint written)
        results = train_compartments(store, new_sources, config=config, progress=progress, **_like(store, model))
        # 3. the router's output set changed: retrain it over all compartments
        router = None
        old_router = store.active("router", ROUTER_NAME)
        if old_router and len(trained_compartments(store)) >= 2:
            info = artifact_info(store, old_router[-1]["hash"])
            heads = info.get("router") == "heads"  # a heads router trains the new compartments' heads only
            router = train_router(store, config=TrainConfig(**(info.get("train") or DEFAULT_ROUTER_TRAIN)),
                                  progress=progress, with_base=BASE in info.get("compartments", []), heads=heads,
                                  previous=old_router[-1]["hash"] if heads else None)
        store.catalog.log_event("add-source", {"dataset": dataset, "sources": new_sources, "n": len(data),
                                               "router": router})
    return {"sources": new_sources, "n_samples": len(data), "num_classes": num_classes(store),
            "compartments": {r.name: r.artifacts for r in results}, "router": router,
            "router_replaced": old_router[-1]["hash"] if router and old_router else None, "unchanged": before}
