"""Forget certificates: what a forget did, bound to the catalog's hash-chained event log.

The certificate (JSON) holds the request, the forgotten ids, the old and new
artifact hashes, the retrained slices, the timing, and

    digest = sha256(canonical JSON of everything above)
    event_log = {seq, head}: the ``forget-certificate`` event that records ``digest``,
                whose hash chains back to the genesis (``Catalog.verify_chain``).

``verify_certificate`` re-checks it against the catalog and every file under the
store, temporary ones included; it fails when the certificate, the catalog (e.g.
an old artifact re-activated), the event log or a weight file was tampered
with, when a file holds an image of a forgotten sample (re-hashed from its
pixels), or when weights whose lineage the catalog does not record (a killed
write's staging folder in ``tmp/``, an unregistered artifact folder) are on disk.
Samples re-admitted after the certificate (``readmit`` events: new consent) are
exempt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from ..ids import sample_id
from ..errors import SilodiffError
from ..store import Store
from ..store.artifacts import canonical_json
from ..store.catalog import now
from ..store.external import external_ancestors

KIND = "silodiff-forget-certificate"


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def build_certificate(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    """The certificate of a completed (``deleted``) journal row, logged as a ``forget-certificate`` event."""
    plan, state = req["plan"], req["state"]
    new = [{"hash": h, "kind": "compartment", "name": name, "slice": r}
           for name, hashes in state["compartments"].items()
           for r, h in zip(next(c for c in plan["compartments"] if c["name"] == name)["retrained_slices"], hashes)]
    if state.get("router"):
        new.append({"hash": state["router"], "kind": "router", "name": "shard-classifier", "slice": None})
    replaced = {h for c in plan["compartments"] if c["action"] == "retrain" for h in c["replaced"]}
    old = [{k: a[k] for k in ("hash", "kind", "name", "slice", "action")} for a in plan["artifacts"]]
    old += [{"hash": h, "kind": "compartment", "name": None, "slice": None, "action": "superseded"}
            for h in sorted(replaced - {a["hash"] for a in plan["artifacts"]})]
    seconds = state.get("seconds", {})
    external = {e["hash"]: e for a in new for e in external_ancestors(store, a["hash"])}
    body = {
        "kind": KIND, "version": 1, "request_id": req["id"], "request": plan["request"],
        "forgotten": {"n": len(plan["forget_ids"]), "ids_hash": plan["ids_hash"], "sample_ids": plan["forget_ids"]},
        "already_forgotten": plan["already_forgotten"], "sources_forgotten": plan["sources_forgotten"],
        "compartments": [{k: c.get(k) for k in ("name", "action", "n_slices", "first_slice", "retrained_slices", "removed",
                                                 "remaining", "resplit", "cost_fraction")} for c in plan["compartments"]],
        "old_artifacts": old, "new_artifacts": new, "estimate": plan["estimate"],
        "timing": {"requested_at": req["created_at"], "completed_at": now(), "seconds": seconds,
                   "total_s": round(sum(seconds.values()), 3), "attempts": state.get("attempts", 1)},
    }
    if external:  # pretrained weights the new models start from: their training data is not in this store
        body["external_artifacts"] = [external[h] for h in sorted(external)]
    digest = _digest(body)
    with store.catalog.transaction():
        head = store.catalog.log_event("forget-certificate", {"request": req["id"], "digest": digest})
        seq = store.catalog.event(digest=head)["seq"]
    return {**body, "digest": digest, "event_log": {"seq": seq, "head": head}}


def load_certificate(certificate: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A certificate given as a dict or a JSON file path; anything else is an error."""
    cert = certificate
    if not isinstance(certificate, dict):
        try:
            cert = json.loads(Path(certificate).read_text())
        except (OSError, ValueError) as exc:
            raise SilodiffError(f"cannot read certificate {certificate}: {exc}") from None
    fields = ("forgotten", "old_artifacts", "new_artifacts", "digest", "event_log")
    if not isinstance(cert, dict) or cert.get("kind") != KIND or any(k not in cert for k in fields):
        name = "the given certificate" if isinstance(certificate, dict) else str(certificate)
        raise SilodiffError(f"{name} is not a silodiff forget certificate")
    return cert


def _stored_ids(path: Path) -> set[str] | None:
    """The sample ids of the images a safetensors file holds, recomputed from its pixels and labels
    (and those its metadata lists); None when it holds no images (weights) or is not safetensors."""
    try:
        with safe_open(str(path), framework="numpy") as f:  # numpy: verifying never imports torch
            keys, meta = set(f.keys()), f.metadata() or {}
            if not {"pixels", "labels"} <= keys:
                return None
            pixels, labels = f.get_tensor("pixels"), f.get_tensor("labels").tolist()
    except Exception:  # not safetensors (a half-written file, a JSON config)
        return None
    ids = {sample_id(p, y) for p, y in zip(pixels, labels)}
    try:
        ids |= set(json.loads(meta.get("sample_ids", "[]")))
    except ValueError:
        pass
    return ids


def _is_safetensors(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="numpy"):
            return True
    except Exception:
        return False


def _files_on_disk(store: Store, forgotten: set[str]) -> list[str]:
    """Every file under the store, temporary ones included: none may hold a forgotten image or unaccounted weights.

    - ``tmp/``: anything there is a write a killed process left (opening the store removes it);
      it fails verification whatever it holds, since its lineage is not recorded;
    - ``artifacts/<hash>/``: must be an artifact of the catalog (those that saw the
      samples are checked against the lineage separately);
    - any file holding images (data shards, wherever they lie): its images, re-hashed
      from their pixels, must not be forgotten samples.
    """
    problems = []
    registered = store.catalog.artifact_hashes()
    for path in sorted(p for p in store.root.rglob("*") if p.is_file()):
        rel = path.relative_to(store.root)
        top = rel.parts[0]
        if rel.name.startswith("catalog.sqlite") or top == "certificates" or path.suffix == ".lock":
            continue  # the catalog (ids, no pixels), certificates (ids), lock files (empty)
        images = _stored_ids(path)
        hit = len(images & forgotten) if images else 0
        if top == "tmp":
            what = (f"holds {hit} forgotten image(s)" if hit else "holds images") if images is not None else \
                ("holds weights of unrecorded lineage" if _is_safetensors(path) else "of unknown content")
            problems.append(f"temporary file {rel} is on disk and {what} "
                            "(left by a killed write; opening the store removes it)")
        elif top == "artifacts" and (len(rel.parts) != 3 or rel.parts[1] not in registered):
            problems.append(f"{rel} is not an artifact of the catalog: weights of unrecorded lineage are on disk")
        elif hit:
            where = f"data chunk {'/'.join(rel.parts[1:])!r}" if top == "data" else f"file {rel}"
            problems.append(f"{where} still stores {hit} forgotten sample(s)")
    return problems


def verify_certificate(store: Store, certificate: dict[str, Any] | str | Path) -> tuple[bool, list[str]]:
    """Re-check a certificate against the catalog and the files on disk: (ok, problems)."""
    cert = load_certificate(certificate)
    catalog, problems = store.catalog, []
    body = {k: v for k, v in cert.items() if k not in ("digest", "event_log")}
    # 1. the certificate itself, and its place in the event log's hash chain
    if _digest(body) != cert.get("digest"):
        problems.append("the certificate's contents do not match its digest (it was edited)")
    ok, head = catalog.verify_chain()
    if not ok:
        problems.append(f"the catalog's event log hash chain is broken: {head}")
    log = cert.get("event_log", {})
    row = catalog.event(seq=log.get("seq"))
    if row is None or row["hash"] != log.get("head") or row["kind"] != "forget-certificate":
        problems.append(f"event {log.get('seq')} of the log is not this certificate's event")
    elif row["payload"].get("digest") != cert.get("digest"):
        problems.append(f"event {log.get('seq')} records another certificate digest")
    # 2. the samples are forgotten (unless re-admitted later, with new consent), and nothing active, nor any
    #    file under the store, temporary ones included, holds them
    readmitted = catalog.readmitted_after(log.get("seq") or 0)
    ids = [s for s in cert["forgotten"]["sample_ids"] if s not in readmitted]
    for sid in ids:
        s = catalog.sample(sid)
        if s is None or s["forgotten_at"] is None:
            problems.append(f"sample {sid[:12]} is {'unknown' if s is None else 'live again'} in the catalog")
    for a in catalog.artifacts_that_saw(ids, active=None):
        if a["active"]:
            problems.append(f"active artifact {a['hash'][:12]} ({a['kind']} {a['name']}) has forgotten samples in its lineage")
        if (store.artifacts.path(a["hash"])).exists():
            problems.append(f"weights of {a['hash'][:12]} ({a['kind']} {a['name']}), which saw forgotten samples, are on disk")
    problems += _files_on_disk(store, set(ids))
    # 3. old artifacts inactive and gone; new ones present and intact (or superseded by a later request)
    for a in cert["old_artifacts"]:
        if catalog.is_active(a["hash"]):
            problems.append(f"old artifact {a['hash'][:12]} ({a['kind']} {a['name']}) is active again")
        if a["action"] != "superseded" and store.artifacts.path(a["hash"]).exists():
            problems.append(f"old artifact {a['hash'][:12]} still has files on disk")
    later_deleted = _deleted_later(store, cert)
    for a in cert["new_artifacts"]:
        active = catalog.is_active(a["hash"])
        if active is None:
            problems.append(f"new artifact {a['hash'][:12]} is not in the catalog")
        elif not (not active and a["hash"] in later_deleted):
            try:
                store.artifacts.verify(a["hash"])  # every file re-hashed, the training state's too
            except SilodiffError as exc:
                problems.append(f"new artifact {a['hash'][:12]}: {exc}")
    for a in catalog.artifacts(None, active=True):
        if not store.artifacts.exists(a["hash"]):
            problems.append(f"active artifact {a['hash'][:12]} ({a['kind']} {a['name']}) has no weights on disk")
    return not problems, problems


def _deleted_later(store: Store, cert: dict[str, Any]) -> set[str]:
    """Hashes a later completed forget request deleted (a new artifact of this one may have been hit again)."""
    from .journal import Journal

    out: set[str] = set()
    for req in Journal(store).done():
        if req["certificate"] and req["certificate"]["event_log"]["seq"] > cert.get("event_log", {}).get("seq", 0):
            out |= {a["hash"] for a in req["certificate"]["old_artifacts"]}
    return out
