"""``silodiff forget``, ``silodiff certificate verify|list`` and ``silodiff add-source`` (exact unlearning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SilodiffError
from .common import (
    EXIT_VERIFY_FAILED, DeviceOpt, JsonOpt, StoreOpt, _names, _open, cli_errors, device_arg, emit, sub_app,
)

certificate_app = sub_app("Check forget certificates against a store.")


def _read_ids(path: Path) -> list[str]:
    """One sample id per line; blank lines and '#' comments are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SilodiffError(f"cannot read ids file {path}: {exc.strerror}") from None
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def _summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"compartment": c["name"], "action": c["action"], "first_slice": c["first_slice"], "removed": c["removed"],
             "remaining": c["remaining"], "cost": c.get("cost_fraction")} for c in result["compartments"]]


@cli_errors
def forget_cmd(
    store: StoreOpt,
    sample: Annotated[list[str] | None, typer.Option("--sample", help="Sample ids to forget, comma-separated.")] = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="Whole sources to forget, comma-separated.")] = None,
    ids_file: Annotated[Path | None, typer.Option("--ids-file", help="A file of sample ids, one per line.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (and its cost) without changing anything.")] = False,
    backend: Annotated[str, typer.Option(help="serial, process or ray (retraining the hit compartments).")] = "serial",
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Forget samples and sources exactly: retrain what saw them, switch, delete, print a certificate."""
    from ..unlearning import forget

    ids = (_names(sample) or []) + (_read_ids(ids_file) if ids_file else [])
    result = forget(_open(store), sample_ids=ids, sources=_names(source) or [], dry_run=dry_run, progress=not as_json,
                    backend=backend, device=device_arg(device))
    if as_json:
        if dry_run:
            result = {**result, "compartments": [{k: v for k, v in c.items() if k != "slices"} for c in result["compartments"]]}
        emit(result, True)
        return
    if result.get("status") == "noop":
        typer.echo(result["message"])
        return
    if dry_run:
        emit(_summary(result), False, title=f"plan: forget {len(result['forget_ids'])} sample(s)"
                                             f" ({len(result['already_forgotten'])} already forgotten)")
        emit([{k: a[k] for k in ("hash", "kind", "name", "slice", "action")} for a in result["artifacts"]], False,
             title="artifacts whose lineage is hit")
        emit(result["estimate"], False, title="estimated cost (optimizer steps)")
        return
    emit(_summary(result), False, title=f"forgot {result['forgotten']['n']} sample(s) in {result['timing']['total_s']} s")
    typer.echo(f"old artifacts retired: {len(result['old_artifacts'])}, new artifacts: {len(result['new_artifacts'])}")
    typer.echo(f"certificate: {_open(store).root / 'certificates' / (result['request_id'] + '.json')}")


@certificate_app.command("verify")
@cli_errors
def certificate_verify(
    file: Annotated[Path, typer.Argument(help="A certificate JSON file written by `silodiff forget`.")],
    store: StoreOpt,
    as_json: JsonOpt = False,
) -> None:
    """Re-check a certificate against the catalog and the files on disk (exit 1 when it fails)."""
    from ..unlearning import load_certificate, verify_certificate

    cert = load_certificate(file)
    ok, problems = verify_certificate(_open(store), cert)
    if as_json:
        emit({"ok": ok, "request_id": cert.get("request_id"), "problems": problems}, True)
    else:
        typer.echo(f"certificate {cert.get('request_id')}: {'OK' if ok else 'FAILED'}"
                   f" ({cert['forgotten']['n']} sample(s) forgotten)")
        for p in problems:
            typer.echo(f"  - {p}")
    if not ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


@certificate_app.command("list")
@cli_errors
def certificate_list(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Forget requests of a store, with their phase and certificate file."""
    from ..unlearning.journal import Journal, certificate_path

    st = _open(store)
    journal = Journal(st)
    rows = [{"request": r["id"], "phase": r["phase"], "samples": len(r["plan"]["forget_ids"]),
             "created_at": r["created_at"], "certificate": str(certificate_path(st, r["id"]))}
            for r in journal.done() + journal.pending()]
    emit(rows, as_json)


@cli_errors
def add_source_cmd(
    store: StoreOpt,
    dataset: Annotated[str, typer.Option(help="digits, fashion-mnist[:test], idx or folder.")] = "folder",
    assign: Annotated[str, typer.Option(help="How samples get their source: single:NAME, by-class or random:K "
                                             "(folders name their own).")] = "single:new",
    path: Annotated[str | None, typer.Option(help="IMAGES,LABELS for idx; ROOT for folder.")] = None,
    limit: Annotated[int | None, typer.Option(help="Keep only the first N images.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the existing compartments').")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Train there: auto, cpu, cuda, cuda:N or mps "
                                               "(default: the existing compartments' setting).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continual learning: register new sources as new compartments and train only them (and the router)."""
    from ..data import load_dataset
    from ..unlearning import add_source

    st = _open(store)
    data = load_dataset(dataset, sources=assign, limit=limit, path=path)
    changes = {k: v for k, v in {"epochs": epochs, "device": device}.items() if v is not None}
    result = add_source(st, data, dataset, changes=changes, progress=not as_json)
    if as_json:
        emit(result, True)
        return
    emit([{"compartment": n, "checkpoints": len(h), "final": h[-1] if h else None} for n, h in result["compartments"].items()],
         False, title=f"added {result['n_samples']} samples as {len(result['sources'])} new compartment(s)")
    typer.echo(f"router retrained: {result['router'] or 'no router in this store'}; "
               f"{len(result['unchanged'])} other compartment(s) unchanged")
