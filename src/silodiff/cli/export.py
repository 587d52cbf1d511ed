"""``silodiff export``: a trained model out of the store, as folders diffusers (or peft) load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, StoreOpt, _names, _open, cli_errors, emit


@cli_errors
def export_cmd(
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="Folder to write (must be empty or absent unless --force).")],
    artifact: Annotated[str | None, typer.Option(help="An artifact hash (or prefix).")] = None,
    compartment: Annotated[str | None, typer.Option(help="A trained compartment (its final checkpoint).")] = None,
    paragon: Annotated[bool, typer.Option("--paragon", help="The paragon's final checkpoint.")] = False,
    base: Annotated[bool, typer.Option("--base", help="The active base model.")] = False,
    composition: Annotated[list[str] | None, typer.Option(
        help="A composition: 'all' or compartments, comma-separated; every member, the router and composition.json.")] = None,
    format_: Annotated[str, typer.Option("--format", help="diffusers (UNet2DModel + DDPMPipeline) or peft "
                                                         "(a LoRA compartment's adapter).")] = "diffusers",
    router: Annotated[str, typer.Option(help="With --composition: classifier, trajectory or uniform.")] = "classifier",
    gate: Annotated[float, typer.Option(help="With --composition: sparse gating threshold.")] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a model for diffusers: a DDPMPipeline folder + the class-conditional UNet2DModel (or a peft adapter)."""
    from ..interop import export_model

    names = _names(composition)
    chosen = None if names is None else (True if names == ["all"] else names)
    report = export_model(_open(store), out, artifact=artifact, compartment=compartment, paragon=paragon, base=base,
                          composition=chosen, format=format_, router=router, gate=gate, force=force)
    if as_json:
        emit(report, True)
    else:
        typer.echo(f"wrote {report['out']} ({report['format']}): " + ", ".join(
            report.get("folders", {}) or report.get("members", {})))
