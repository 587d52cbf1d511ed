"""Build composed models from a store, and train the shard-classifier router.

``compose(store, allowed=…)`` loads exactly the allowed compartments' final
checkpoints (nothing else is read from disk) and the router, and returns a
``ComposedDenoiser``.  ``train_router`` trains the shard classifier with the one
training loop; its lineage is every compartment it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..devices import device_of, resolve_device
from ..errors import SilodiffError
from ..jobs.compartments import PARAGON
from ..nn import NoisyClassifier
from ..nn.lora import share_bases
from ..store import Store
from ..store.lineage import (BASE, active_base, final_checkpoint, member_label_counts, num_classes, own_ids, own_sets,
                             trained_compartments)
from ..training import TrainConfig, new_state, train
from .composed import ComposedDenoiser
from .heads import check_known, is_heads, load_heads, train_heads
from .routers import ClassifierRouter, TrajectoryFilter, UniformRouter, check_router, log_label_prior, router_loss
from .soup import AdapterSoup

ROUTER_NAME = "shard-classifier"
COMBINES = ("mixture", "soup")


def train_router(
    store: Store, *, config: TrainConfig | None = None, progress: bool = True, members: dict[str, str] | None = None,
    activate: bool = True, with_base: bool = False, heads: bool = False, previous: str | None = None,
) -> str:
    """Train the router f(x_t, t, y) → compartment over all trained compartments.

    ``members`` (compartment → checkpoint hash) trains over exactly those checkpoints
    instead of the active final ones (a forget stages new ones first);
    ``activate=False`` registers the router inactive, for an atomic switch later; ``with_base``: the
    active base is one more class (for compositions that include it, ``compose(..., with_base=True)``).
    ``heads``: one head per compartment against the public reference (``composition.heads``) instead of one
    shard classifier over all, so a forget retrains only the heads that saw the forgotten samples;
    ``previous`` (a heads router's hash) keeps its heads whose data is unchanged.
    """
    config = (config or TrainConfig(epochs=100)).check()
    members = dict(members) if members is not None else {
        n: final_checkpoint(store, "compartment", n)["hash"] for n in trained_compartments(store)}
    if with_base:  # the base is one more class: the router learns when a sample looks like public data
        members[BASE] = active_base(store)["hash"]
    names = sorted(members)
    if len(names) < 2:
        raise SilodiffError("a router needs at least two trained compartments")
    finals = [store.catalog.artifact(members[n]) for n in names]
    set_ids = sorted({s for f in finals for s in own_sets(store, f["hash"])})
    # a compartment on a base is told apart by its own data, not the base's
    data_of = {n: own_ids(store, f["hash"]) for n, f in zip(names, finals)}
    n_classes = num_classes(store)
    if heads:
        public = set(store.catalog.public_sources())
        reference = [BASE] if with_base else [
            n for n, f in zip(names, finals) if store.catalog.lineage_sources(f["hash"]) <= public]
        old = store.load(previous) if previous else None
        old = {"module": old, "info": old.info} if old is not None else None
        classifier, info = train_heads(store, data_of, reference, config, n_classes, previous=old, progress=progress)
        extra = {"router": "heads", "heads": info}
    else:
        classifier = _train_classifier(store, data_of, config, n_classes, progress)
        extra = {"router": "classifier"}
    with store.catalog.transaction():
        if activate:
            store.catalog.set_active([r["hash"] for r in store.active("router", ROUTER_NAME)], False)
        digest = store.save(classifier, "router", ROUTER_NAME, set_ids, active=activate,
                            info={"compartments": names, "train": config.to_dict(), **extra})
    return digest


def _train_classifier(store: Store, data_of: dict[str, list[str]], config: TrainConfig, n_classes: int,
                      progress: bool) -> NoisyClassifier:
    """The shard classifier over ``data_of`` (name → sample ids, in class order)."""
    ids = [s for own in data_of.values() for s in own]
    targets = torch.as_tensor([k for k, own in enumerate(data_of.values()) for _ in own])
    data = store.training_set(ids)  # streamed from the chunks when large
    counts = torch.zeros(len(data_of), n_classes)
    counts.index_put_((targets, data.labels), torch.ones(len(targets)), accumulate=True)  # (K, C)
    torch.manual_seed(config.seed)
    classifier = NoisyClassifier(image_shape=data.image_shape, num_outputs=len(data_of), num_classes=n_classes)
    state = new_state(classifier, config)
    loss_fn = router_loss(targets, log_label_prior(counts), null_label=n_classes)
    train(state, data, config, loss_fn=loss_fn, progress="router" if progress else False)
    return state.ema.model


def check_combine(combine: str, gate: float = 0.0) -> None:
    """One clear error for an unknown ``combine`` or for gating a soup (one model has no members to gate)."""
    if combine not in COMBINES:
        raise SilodiffError(f"unknown combine {combine!r}: use one of {', '.join(COMBINES)}")
    if combine == "soup" and gate > 0:
        raise SilodiffError("a soup is one model: gating does not apply")


def compose(
    store: Store,
    allowed: Sequence[str] | None = None,
    *,
    router: str = "classifier",
    gate: float = 0.0,
    load: Callable[[str], torch.nn.Module] | None = None,
    load_router: Callable[[str, list[str]], torch.nn.Module] | None = None,
    with_base: bool = False,
    share: bool = True,
    device: str | torch.device | None = None,
    combine: str = "mixture",
) -> ComposedDenoiser | AdapterSoup:
    """The composition over ``allowed`` (default: every trained compartment), on ``device``.

    ``load`` (artifact hash → module, default ``store.load``) lets a caller serve
    members from a cache; only the allowed members and the router are asked for.  ``load_router`` (router hash,
    member names → module) does the same for the router; by default a heads router is read for the members'
    heads only (``heads.load_heads``), a shard classifier whole with ``load``.
    ``with_base``: the active base model is one more member (named ``base``), weighted by the router like the
    others, with the label prior of its own lineage.  ``share``: LoRA members built on one base share one copy
    of it (``nn.lora.AdapterBank``); ``False`` holds each as its own model (the same ε).
    ``device`` (auto | cpu | cuda[:N] | mps; default: where ``load`` puts them, the
    CPU for ``store.load``) holds the members, the router and its state.
    ``combine``: ``mixture`` (ε̂ = Σ w_i ε_i, weighted by the router) or ``soup``: LoRA compartments of one base
    averaged in weight space by their sample counts (``composition.soup``; one model, no router: ``router``,
    ``gate`` and ``share`` do not apply).
    """
    check_combine(combine, gate)
    check_router(router)
    load = load or store.load
    trained = trained_compartments(store)
    names = list(trained if allowed is None else allowed)
    if not names:
        raise SilodiffError("nothing to compose: no trained compartments" if allowed is None else "the allowed set is empty")
    unknown = sorted(set(names) - set(trained))
    if unknown:
        raise SilodiffError(f"not a trained compartment: {', '.join(unknown)}")
    finals = {n: final_checkpoint(store, "compartment", n) for n in names}
    if with_base:
        finals[BASE] = store.catalog.artifact(active_base(store)["hash"])
        names.append(BASE)
    label_counts = {n: member_label_counts(store, n) for n in names}
    members = {n: load(finals[n]["hash"]) for n in names}
    hashes = {n: f["hash"] for n, f in finals.items()}
    if combine == "soup":
        soup = AdapterSoup(members, label_counts, base=BASE if with_base else None)
        soup = soup.to(resolve_device(device) if device is not None else device_of(members[names[0]]))
        soup.artifact_hashes = hashes
        return soup
    if share:  # LoRA members of one base: one base in memory, evaluated in one mixed-adapter pass
        members = share_bases(members, members.get(BASE), BASE if with_base else None)
    counts = torch.zeros(len(names), num_classes(store))
    for k, n in enumerate(names):
        for y, c in label_counts[n].items():
            counts[k, y] = c
    if router == "classifier":
        rows = store.active("router", ROUTER_NAME)
        if not rows:
            raise SilodiffError("no shard-classifier router: run `silodiff train router` (or use --router trajectory)")
        digest = rows[-1]["hash"]
        if load_router is not None:
            classifier = load_router(digest, names)
        else:
            classifier = load_heads(store, digest, names) if is_heads(store, digest) else load(digest)
        known = classifier.info.get("compartments", [])
        check_known(known, names)
        chosen = ClassifierRouter(classifier, [known.index(n) for n in names])
        hashes["router"] = digest
    else:
        chosen = TrajectoryFilter() if router == "trajectory" else UniformRouter()
    model = ComposedDenoiser(members, chosen, counts, gate=gate)
    model = model.to(resolve_device(device) if device is not None else device_of(members[names[0]]))
    model.artifact_hashes = hashes
    return model


def load_denoiser(store: Store, which: str = "composed", *, device: str | torch.device | None = None,
                  **compose_options: Any) -> torch.nn.Module:
    """``composed``, ``paragon``, a compartment name, or an artifact hash (prefix), on ``device``."""
    if which == "composed":
        return compose(store, device=device, **compose_options)
    if which == PARAGON:
        return store.load(final_checkpoint(store, "paragon", PARAGON)["hash"], device=device)
    if which in trained_compartments(store):
        return store.load(final_checkpoint(store, "compartment", which)["hash"], device=device)
    return store.load(which, device=device)
