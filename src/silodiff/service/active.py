"""What serves a request: one consistent snapshot of the active artifacts, within a key's rights.

Per request (``ActiveSet.serve``):
  1. inside ONE read transaction of the catalog (``Catalog.read_snapshot``: a deferred
     SQLite transaction; in WAL mode it takes no lock, so neither writers nor
     other requests wait on it): list the trained compartments, their active
     final checkpoints, and the sources in each checkpoint's lineage; keep those
     whose sources are all within the key's rights; choose the router; note the
     artifact hash of every model the request needs.  A forget switches the
     active set in one transaction, so the snapshot is wholly old or wholly new,
     and a compartment outside the rights is never asked for, so never loaded;
  2. outside any database lock, load those hashes (``ModelCache``: one thread
     reads a given file, others wait for that file only);
  3. in a second read snapshot, compose the model from exactly the loaded
     modules; if the active set moved between 1 and 3 (compose asks for a hash
     not loaded) or a file went away under the load, start again (3 tries, then 503);
  4. the request runs under the read side of a readers-writer lock;
  5. when a service job (a forget) ends, ``switched()`` takes the write side: it
     waits for requests still on the old snapshot, bumps ``generation`` and drops
     models no longer active from the cache, and only then is the job reported
     done — so after the job no request uses the old weights.

Loaded models are cached by artifact hash (content-addressed, so a hash always
names the same weights) and shared read-only between requests (eval mode, no grad).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..composition import ROUTER_NAME, AdapterSoup, ComposedDenoiser, compose
from ..composition.build import check_combine
from ..composition.heads import check_known, heads_within, is_heads, load_heads, reference_hashes, router_members
from ..errors import SilodiffError
from ..store import Store
from ..store.lineage import BASE, base_checkpoints, final_checkpoint, trained_compartments
from .errors import Forbidden, NotFound, Unavailable
from .keys import ALL_SOURCES, Caller

ROUTER_CHOICES = ("auto", "classifier", "trajectory", "uniform")
ATTEMPTS = 3


class _Moved(Exception):
    """The active set moved on between resolving a snapshot and composing it."""


def heads_key(digest: str, members: Sequence[str]) -> str:
    return f"{digest}#{'+'.join(members)}"


class ModelCache:
    """Least-recently-used modules by artifact hash (a heads router's subset: ``heads_key``); ``loads`` lists every
    key read from disk (instrumentation)."""

    def __init__(self, store: Store, size: int = 32, device: str | torch.device | None = None):
        self.store, self.size, self.device = store, size, device
        self._models: OrderedDict[str, torch.nn.Module] = OrderedDict()
        self._lock = threading.Lock()  # guards the dicts only, never held during a read from disk
        self._loading: dict[str, threading.Lock] = {}  # one lock per hash being read
        self.loads: list[str] = []

    def _cached(self, digest: str) -> torch.nn.Module | None:
        with self._lock:
            if digest in self._models:
                self._models.move_to_end(digest)
                return self._models[digest]
        return None

    def load(self, digest: str) -> torch.nn.Module:
        """The module of ``digest``: from memory, or read once from disk while other hashes stay servable."""
        return self._get(digest, lambda: self.store.artifacts.load_module(digest))  # hash-verified read

    def load_heads(self, digest: str, members: Sequence[str]) -> torch.nn.Module:
        """The heads router ``digest`` restricted to ``members`` (``composition.heads.load_heads``: only their heads
        are read), cached under ``<hash>#<members>``."""
        return self._get(heads_key(digest, members), lambda: load_heads(self.store, digest, members))

    def load_soup(self, members: Mapping[str, str], build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        """The adapter soup of ``members`` (name → artifact hash): built once by ``build``, then served from memory.
        Artifacts never change, so these hashes name one soup; a forget gives a member a new hash, hence a new soup."""
        return self._get("soup:" + ",".join(f"{n}={h}" for n, h in sorted(members.items())), build)

    def _get(self, key: str, read: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        module = self._cached(key)
        if module is not None:
            return module
        with self._lock:
            pending = self._loading.setdefault(key, threading.Lock())
        with pending:  # concurrent requests for the same cold key wait for one read
            module = self._cached(key)
            if module is not None:
                return module
            try:
                module = read()
                if self.device is not None:
                    from ..devices import resolve_device

                    module = module.to(resolve_device(self.device))
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self.loads.append(key)
                self._models[key] = module
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
        return module

    def retain(self, keep: set[str]) -> list[str]:
        """Drop every cached model whose hash is not in ``keep``; returns the dropped keys."""
        with self._lock:
            gone = [d for d in self._models if d.split("#")[0] not in keep]
            for d in gone:
                del self._models[d]
        return gone

    def __len__(self) -> int:
        return len(self._models)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer stops new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


@dataclass
class Served:
    """The model one request is served by, and exactly which artifacts it holds."""

    model: ComposedDenoiser | AdapterSoup
    compartments: list[str]
    router: str
    artifacts: dict[str, str]  # compartment (and "router", "protection:<name>") → artifact hash
    generation: int
    scope: list[str]  # every source in the lineage of those artifacts
    held_labels: list[int]  # labels at least one of its compartments was trained on


class ActiveSet:
    def __init__(self, store: Store, cache_size: int = 32, device: str | torch.device | None = None):
        self.store = store
        self.cache = ModelCache(store, cache_size, device)
        self.lock = ReadWriteLock()
        self.generation = 0
        self._sources: dict[str, frozenset[str]] = {}  # artifact hash → sources in its lineage (immutable)
        self._heads: dict[frozenset, bool] = {}  # (router, members, reference) hashes → heads_within (immutable)

    # -- rights ------------------------------------------------------------------
    def lineage_sources(self, digest: str) -> frozenset[str]:
        """The non-public sources of every sample artifact ``digest`` was trained on (its effective lineage, a base's
        included): what a key's rights must cover.  Sources declared public count for every key."""
        return self._lineage_sources(digest) - frozenset(self.store.catalog.public_sources())

    def _lineage_sources(self, digest: str) -> frozenset[str]:
        if digest not in self._sources:
            self._sources[digest] = frozenset(self.store.catalog.lineage_sources(digest))
        return self._sources[digest]

    def compartments(self, caller: Caller) -> list[dict[str, Any]]:
        """Every compartment ``caller`` may use, with its sources, labels and active final checkpoint."""
        out = []
        with self.store.catalog.read_snapshot():  # one snapshot
            trained = set(trained_compartments(self.store))
            for c in self.store.catalog.compartments():
                if c["status"] == "dropped":
                    continue
                final = None
                if c["name"] in trained:
                    try:
                        final = final_checkpoint(self.store, "compartment", c["name"])["hash"]
                    except SilodiffError:
                        final = None
                sources = self.lineage_sources(final) if final else frozenset(self.store.catalog.planned_sources(c["name"]))
                if not caller.may_use(sources):
                    continue
                out.append(
                    {
                        "name": c["name"],
                        "status": c["status"],
                        "n": c["n"],
                        "n_slices": c["n_slices"],
                        "sources": sorted(sources),
                        "artifact": final,
                        "trained": final is not None,
                        "labels": {str(y): k for y, k in sorted(self.store.catalog.label_counts(c["name"]).items())},
                    }
                )
        return out

    def compartment(self, caller: Caller, name: str) -> dict[str, Any]:
        for c in self.compartments(caller):
            if c["name"] == name:
                return c
        if ALL_SOURCES in caller.sources:
            raise NotFound(f"no compartment named {name!r}")
        raise Forbidden(f"compartment {name!r} is not available to key {caller.name!r}")

    def _choose(self, caller: Caller, requested: Sequence[str] | None) -> list[str]:
        """The caller's trained compartments, or the requested subset of them (403 for any other name)."""
        mine = {}
        for name in trained_compartments(self.store):
            final = final_checkpoint(self.store, "compartment", name)["hash"]
            if caller.may_use(self.lineage_sources(final)):
                mine[name] = final
        if requested is None:
            if not mine:
                raise Forbidden(f"key {caller.name!r} may use no trained compartment")
            return sorted(mine)
        if len(set(requested)) != len(requested):
            raise SilodiffError("a compartment is listed twice")
        for name in requested:
            if name in mine:
                continue
            if ALL_SOURCES in caller.sources:
                raise SilodiffError(f"not a trained compartment: {name!r}")
            raise Forbidden(f"compartment {name!r} is not available to key {caller.name!r}")
        return list(requested)

    def _router(self, caller: Caller, router: str, names: list[str], base: str | None = None) -> str:
        """``auto``: the learned router when the key may use what the part it needs was trained on, else the
        trajectory filter.

        A shard classifier saw every compartment's data, so serving it to a key without rights to all of them
        would serve a model built partly from data outside the rights.  A heads router is served head by head
        (``composition.heads``): the members' heads and the public reference are all a key needs rights on.
        """
        if router not in ROUTER_CHOICES:
            raise SilodiffError(f"unknown router {router!r}: use one of {ROUTER_CHOICES}")
        if router in ("trajectory", "uniform"):
            return router
        rows = self.store.active("router", ROUTER_NAME)
        digest = rows[-1]["hash"] if rows else None
        whole = digest is not None and caller.may_use(self.lineage_sources(digest))
        heads = not whole and digest is not None and self._heads_allowed(caller, digest, names, base)
        if router == "classifier" and digest is not None and not (whole or heads):
            raise Forbidden(
                "the learned router was trained on sources outside this key's rights: use router 'trajectory' or 'auto'"
            )
        if router == "auto":
            return "classifier" if heads or (whole and self._router_covers(digest, names, base)) else "trajectory"
        return router

    def _heads_allowed(self, caller: Caller, digest: str, names: list[str], base: str | None) -> bool:
        """A heads router whose heads for these members were trained on exactly their active data and a reference
        within the key's rights (the members themselves were checked by ``_choose`` and ``_base``)."""
        refs = reference_hashes(self.store, digest)  # None: not a heads router
        if refs is None or not all(caller.may_use(self.lineage_sources(h)) for h in refs.values()):
            return False
        members = {n: final_checkpoint(self.store, "compartment", n)["hash"] for n in names} | (
            {BASE: base} if base else {})
        key = frozenset([("router", digest), *members.items(), *(("ref", n, h) for n, h in refs.items())])
        if key not in self._heads:  # hashes name immutable content: the ids' hashes need computing once
            self._heads[key] = heads_within(self.store, digest, members, refs)
        return self._heads[key]

    def _router_covers(self, router_hash: str, names: list[str], base: str | None = None) -> bool:
        """True when the router was trained on exactly the data of each compartment's active checkpoint (and of
        the base, ``base``'s hash, when it is a member)."""
        seen = set(self.store.catalog.lineage_sets(router_hash))
        finals = [final_checkpoint(self.store, "compartment", n)["hash"] for n in names] + ([base] if base else [])
        return all(set(self.store.catalog.lineage_sets(f)) <= seen for f in finals)

    def _base(self, caller: Caller) -> str:
        """The active base's hash, when the key may use its sources (a member of the mixture, ``with_base``)."""
        rows = base_checkpoints(self.store)
        if not rows:
            raise SilodiffError("this store has no base model: train one (`silodiff train base`) or drop with_base")
        if not caller.may_use(self.lineage_sources(rows[-1]["hash"])):
            raise Forbidden("the base model was trained on sources outside this key's rights")
        return rows[-1]["hash"]

    # -- serving -----------------------------------------------------------------
    def scope(self, digests) -> list[str]:
        """Every source in the lineage of any of ``digests``; a heads router counts as its reference members (its
        other heads were trained on the members' own data, already counted, or are not served)."""
        sources: set[str] = set()
        for d in digests:
            refs = reference_hashes(self.store, d) if self.store.catalog.artifact(d)["kind"] == "router" else None
            for h in [d] if refs is None else refs.values():
                sources |= self.lineage_sources(h)
        return sorted(sources)

    def _resolve(
        self, caller: Caller, requested: Sequence[str] | None, router: str, protected: bool, with_base: bool = False
    ) -> tuple[list[str], str, dict[str, str]]:
        """(members, router, every artifact hash the request needs), within the caller's rights; call in a snapshot.
        ``with_base``: the active base is one more member (``needed["base"]``)."""
        names = self._choose(caller, requested)
        if with_base and protected:
            raise SilodiffError("cpsample and with_base do not combine: the base has no protection classifier")
        base = self._base(caller) if with_base else None
        chosen = self._router(caller, router, names, base)
        needed = {n: final_checkpoint(self.store, "compartment", n)["hash"] for n in names}
        if base:
            needed[BASE] = base
        rows = self.store.active("router", ROUTER_NAME) if chosen == "classifier" else []
        if rows:
            needed["router"] = rows[-1]["hash"]
        if protected:
            needed.update({f"protection:{n}": h for n, h in self._protection(caller, names).items()})
        return names, chosen, needed

    @contextmanager
    def serve(
        self,
        caller: Caller,
        requested: Sequence[str] | None = None,
        router: str = "auto",
        gate: float = 0.0,
        cpsample: tuple[float, float] | None = None,
        with_base: bool = False,
        combine: str = "mixture",
    ) -> Iterator[Served]:
        """Resolve one snapshot, load its models outside any database lock, and hold the read side of the
        readers-writer lock while the caller runs the model.

        ``cpsample = (alpha, scale)`` wraps each member with its compartment's protection classifier;
        ``with_base``: the active base is one more member, named ``base``; ``combine="soup"``: the members' LoRA
        adapters averaged into one model (``composition.soup``), no router.
        """
        check_combine(combine, gate)  # before the cache: a cached soup is never composed again
        if combine == "soup" and cpsample is not None:
            raise SilodiffError("cpsample and soup do not combine: CPSample guards each member, a soup is one model")
        if combine == "soup":
            router = "uniform"  # a soup has no router: nothing to resolve or load for it
        with self.lock.read():
            for _ in range(ATTEMPTS):
                with self.store.catalog.read_snapshot():  # 1. rights and hashes, from one snapshot
                    names, chosen, needed = self._resolve(caller, requested, router, cpsample is not None, with_base)
                    scope = self.scope(needed.values())
                    heads = "router" in needed and is_heads(self.store, needed["router"])
                    members = names + ([BASE] if with_base else [])
                    if heads:  # a member the router does not know is the request's error, not a moved set
                        check_known(router_members(self.store, needed["router"]), members)
                try:  # 2. no database lock held while reading weights (of a heads router, the members' heads only)
                    modules = {h: self.cache.load(h) for k, h in needed.items() if not (k == "router" and heads)}
                    if heads:
                        modules[heads_key(needed["router"], members)] = self.cache.load_heads(needed["router"], members)
                except (SilodiffError, OSError):
                    continue  # the set moved on and its old files went: resolve again

                def loaded(digest: str) -> torch.nn.Module:
                    if digest not in modules:
                        raise _Moved(digest)
                    return modules[digest]

                def loaded_router(digest: str, members: list[str]) -> torch.nn.Module:
                    return loaded(heads_key(digest, members) if heads else digest)

                try:
                    with self.store.catalog.read_snapshot():  # 3. compose exactly what was loaded
                        def build() -> torch.nn.Module:
                            return compose(self.store, names, router=chosen, gate=gate, load=loaded,
                                           load_router=loaded_router, with_base=with_base, combine=combine)

                        model = self.cache.load_soup(needed, build) if combine == "soup" else build()
                except _Moved:
                    continue
                held = model.held_labels()
                if cpsample is not None:
                    from ..defences.cpsample import protect

                    guards = {n: modules[needed[f"protection:{n}"]] for n in names}
                    model = protect(model, guards, alpha=cpsample[0], scale=cpsample[1])
                break
            else:
                raise Unavailable("the active set kept changing while this request was resolved; retry")
            yield Served(model, model.names, "none" if combine == "soup" else chosen, needed, self.generation, scope,
                         held)

    def _protection(self, caller: Caller, names: list[str]) -> dict[str, str]:
        """CPSample (``silodiff.defences.cpsample``): each member's active protection classifier, within the rights."""
        from ..defences.cpsample import KIND

        found = {}
        for name in names:
            rows = self.store.active(KIND, name)
            if not rows:
                raise SilodiffError(
                    f"compartment {name!r} has no protection classifier: "
                    f"run `silodiff train protection-classifier --compartment {name}`"
                )
            if not caller.may_use(self.lineage_sources(rows[-1]["hash"])):
                raise Forbidden(f"the protection classifier of {name!r} was trained outside this key's rights")
            found[name] = rows[-1]["hash"]
        return found

    def artifacts(self, caller: Caller, requested: Sequence[str] | None = None, router: str = "auto") -> dict[str, str]:
        """The hashes a request would be served by now (no model is loaded)."""
        with self.store.catalog.read_snapshot():
            return self._resolve(caller, requested, router, False)[2]

    @contextmanager
    def switched(self) -> Iterator[None]:
        """Write side: wait for requests on the old snapshot, then bump the generation and drop stale models."""
        with self.lock.write():
            yield
            self.generation += 1
            self.cache.retain({a["hash"] for a in self.store.catalog.artifacts(None, active=True)})
