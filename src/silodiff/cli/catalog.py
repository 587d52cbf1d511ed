"""``silodiff catalog …``: read the catalog (sources, compartments, artifacts, lineage, the event log)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import SilodiffError
from .common import EXIT_VERIFY_FAILED, JsonOpt, StoreOpt, _open, cli_errors, emit, sub_app

catalog_app = sub_app("Query the catalog: sources, compartments, artifacts, lineage, events.")


@catalog_app.command("sources")
@cli_errors
def catalog_sources(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Sources and their live sample counts."""
    emit(_open(store).catalog.sources(), as_json)


@catalog_app.command("compartments")
@cli_errors
def catalog_compartments(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Compartments, their slices and status."""
    emit(_open(store).catalog.compartments(), as_json)


@catalog_app.command("artifacts")
@cli_errors
def catalog_artifacts(
    store: StoreOpt, kind: Annotated[str | None, typer.Option(help="Filter by kind.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include inactive artifacts.")] = False, as_json: JsonOpt = False,
) -> None:
    """Artifacts (active only unless --all), with the bytes a sampler reads (a LoRA checkpoint: its adapter only)."""
    from ..store.artifacts import WEIGHTS

    st = _open(store)
    rows = st.catalog.artifacts(kind, active=None if all_ else True)
    weights = {r["hash"]: st.artifacts.path(r["hash"]) / WEIGHTS for r in rows}
    rows = [{**{k: r[k] for k in ("hash", "kind", "name", "slice", "active", "lineage_hash", "created_at")},
             "bytes": weights[r["hash"]].stat().st_size if weights[r["hash"]].exists() else None} for r in rows]
    emit(rows, as_json)


@catalog_app.command("lineage")
@cli_errors
def catalog_lineage(store: StoreOpt, artifact: Annotated[str, typer.Argument(help="Artifact hash or prefix.")], as_json: JsonOpt = False) -> None:
    """Every sample id an artifact was trained on, and the external pretrained weights it started from."""
    from ..store.external import external_ancestors

    st = _open(store)
    ids = st.catalog.lineage(artifact)
    digest = st.catalog.artifact(artifact)["hash"]
    external = external_ancestors(st, digest)
    if as_json:
        emit({"artifact": digest, "n": len(ids), "sample_ids": ids, "external": external}, True)
        return
    if ids:
        typer.echo("\n".join(ids))
    for e in external:  # pretrained weights it started from: their data are not in this store
        typer.echo(f"external {e['hash']} {e['path']} (provenance: {e['provenance']}): {e['status']}")


@catalog_app.command("saw")
@cli_errors
def catalog_saw(store: StoreOpt, sample_id: Annotated[str, typer.Argument(help="A sample id.")],
                all_: Annotated[bool, typer.Option("--all", help="Include inactive artifacts.")] = False, as_json: JsonOpt = False) -> None:
    """Which artifacts were trained on a sample."""
    st = _open(store)
    if st.catalog.sample(sample_id) is None:
        raise SilodiffError(f"unknown sample id {sample_id!r}")
    rows = st.catalog.artifacts_that_saw([sample_id], active=None if all_ else True)
    emit([{k: r[k] for k in ("hash", "kind", "name", "slice", "active")} for r in rows], as_json)


@catalog_app.command("events")
@cli_errors
def catalog_events(store: StoreOpt, limit: Annotated[int, typer.Option(help="Most recent N.")] = 20, as_json: JsonOpt = False) -> None:
    """The append-only event log (most recent last)."""
    rows = _open(store).catalog.events(limit=limit)
    if as_json:  # full payloads, as JSON objects
        emit([{"seq": r["seq"], "ts": r["ts"], "kind": r["kind"], "payload": r["payload"]} for r in rows], True)
        return
    emit([{"seq": r["seq"], "ts": r["ts"], "kind": r["kind"], "payload": json.dumps(r["payload"])[:100]} for r in rows], False)


@catalog_app.command("verify")
@cli_errors
def catalog_verify(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Re-check the event log's hash chain."""
    ok, head = _open(store).catalog.verify_chain()
    emit({"ok": ok, "head": head}, as_json)
    if not ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)
