"""``silodiff audit``: memorisation and membership inference of a served model, as a report folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, JsonOpt, SeedOpt, StoreOpt, _names, _open, cli_errors, emit


@cli_errors
def audit_cmd(
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="Report folder (report.md, report.json, details.json, PNGs).")] = Path("audit"),
    model: Annotated[list[str], typer.Option(help="paragon, composed, a compartment or an artifact hash; comma-separated to compare several.")] = ["composed"],
    router: Annotated[str, typer.Option(help="Router of the composed model: classifier, trajectory or uniform.")] = "classifier",
    gate: Annotated[float, typer.Option(help="Sparse gating threshold of the composed model.")] = 0.0,
    n: Annotated[int, typer.Option(help="Generated images for the memorisation audit.")] = 1000,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 100,
    sampler: Annotated[str, typer.Option(help="ddpm or ddim.")] = "ddpm",
    holdout: Annotated[str | None, typer.Option(help="Non-members from a data set (digits, fashion-mnist:test, ...): its images outside the model's lineage.")] = None,
    mia_n: Annotated[int, typer.Option(help="Members and non-members per side for membership inference (at most).")] = 500,
    attacks: Annotated[list[str], typer.Option(help="Attacks, comma-separated: loss, pia, secmi.")] = ["loss,pia,secmi"],
    cosine_threshold: Annotated[float, typer.Option(help="Replicate when the feature cosine to a training image exceeds this.")] = 0.97,
    cosine_features: Annotated[str, typer.Option(help="Features of the replicate criterion: pixels or fld.")] = "pixels",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Audit how much a model copies (NN ratio, IET-AGC ratio, replicates) and leaks (loss, PIA, SecMI)."""
    import json

    from ..audit.report import run_audit, run_audits

    models = _names(model) or []
    options = dict(router=router, gate=gate, n=n, steps=steps, sampler=sampler, seed=seed, holdout=holdout, mia_n=mia_n,
                   attacks=tuple(_names(attacks) or ()), cosine_threshold=cosine_threshold,
                   cosine_features=cosine_features, device=device)
    st = _open(store)
    if len(models) == 1:
        report = run_audit(st, out, models[0], **options)
        summary = json.loads((report.parent / "report.json").read_text())
        rows = {"model": models[0], **_headline(summary)}
    else:
        report = run_audits(st, out, tuple(models), **options)
        rows = json.loads((report.parent / "report.json").read_text())["comparison"]
    if as_json:
        emit({"report": str(report), "results": rows}, True)
    else:
        emit(rows, False, title=f"report: {report}")  # one model: a key / value table; several: one row each


def _headline(summary: dict) -> dict:
    from ..audit.report import comparison

    (row,) = comparison({summary["model"]: summary})
    row.pop("model")
    return row
