"""``silodiff``: one sub-command per noun; each command calls one library function.

Each ``cli/<noun>.py`` defines its commands (and its group, where it has one); this module builds the app and
registers them, explicitly, at the bottom.  The conventions (list options, ``--json``, training flags, exit codes)
are in ``cli/common.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SilodiffError
from . import attribute, audit, base, catalog, data, defences, export, forget, keys, sample, serve, train
from .common import DEBUG, EXIT_BAD_INPUT, JsonOpt, _names, cli_errors, emit, sub_app

app = typer.Typer(help="silodiff: training-data protection for image diffusion models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", envvar="SILODIFF_DEBUG",
                                               help="Show the traceback of an unexpected error.")] = False) -> None:
    """silodiff: training-data protection for image diffusion models."""
    DEBUG["on"] = debug


# ----------------------------------------------------------------------------- demo
@cli_errors
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the store and the report.")] = Path("demo-out"),
    quick: Annotated[bool, typer.Option(help="A smaller, faster run (for tests).")] = False,
    full: Annotated[bool, typer.Option(help="The longer run: every router, the soup, three defences, three audits, two "
                                            "forgets, longer schedules.")] = False,
    ray: Annotated[bool, typer.Option(help="Also replay a compartment on a local Ray cluster.")] = False,
    skip: Annotated[list[str] | None, typer.Option(help="Feature steps to leave out, comma-separated.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The main job end to end on the embedded digits data; writes a Markdown + PNG report."""
    from ..demo import demo_plan, run_demo

    report = run_demo(out, plan=demo_plan(quick=quick, full=full), extra=("ray",) if ray else (),
                      skip=tuple(_names(skip) or ()))
    emit({"report": str(report)}, True) if as_json else typer.echo(f"report: {report}")


# ----------------------------------------------------------------------------- registration
train_app = sub_app("Train compartments, the paragon, the router, the encoded ensemble and the memorisation defences.")
for name, command in (("compartments", train.train_compartments_cmd), ("paragon", train.train_paragon_cmd),
                      ("router", train.train_router_cmd), ("encoded", attribute.train_encoded_cmd),
                      ("iet-agc", defences.train_iet_cmd), ("protection-classifier", defences.train_protection_cmd),
                      ("base", base.train_base_cmd)):
    train_app.command(name)(command)
for name, command in (("sample", sample.sample_cmd), ("quality", sample.quality_cmd), ("demo", demo_cmd),
                      ("forget", forget.forget_cmd), ("add-source", forget.add_source_cmd),
                      ("attribute", attribute.attribute_cmd), ("serve", serve.serve_cmd), ("audit", audit.audit_cmd),
                      ("export", export.export_cmd)):
    app.command(name)(command)
for name, group in (("data", data.data_app), ("train", train_app), ("catalog", catalog.catalog_app),
                    ("certificate", forget.certificate_app), ("keys", keys.keys_app)):
    app.add_typer(group, name=name)


def main(argv: list[str] | None = None) -> None:
    try:
        app(sys.argv[1:] if argv is None else argv, prog_name="silodiff")
    except SilodiffError as exc:  # defensive: commands already convert these
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
