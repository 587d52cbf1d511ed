"""Shared pieces of the CLI: the Typer apps, common options, error handling and output."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ..errors import SilodiffError


class TrainGroup(TyperGroup):
    """``silodiff train``: the sub-command may also be spelled as a method flag.

    ``train --method M …`` is ``train M …`` (``--method iet`` is ``iet-agc --no-agc``) and
    ``train --protection-classifier …`` is ``train protection-classifier …``.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        if "--protection-classifier" in args:
            args.remove("--protection-classifier")
            args.insert(0, "protection-classifier")
        for flag in ("--method", "-m"):
            spelled = [i for i, a in enumerate(args) if a == flag or a.startswith(flag + "=")]
            if not spelled:
                continue
            i = spelled[0]
            given = args.pop(i)
            method = given.partition("=")[2] if "=" in given else (args.pop(i) if i < len(args) else "")
            methods = [*self.list_commands(ctx), "iet"]
            if method not in methods:
                raise typer.BadParameter(f"unknown training method {method!r}: use one of {', '.join(methods)}",
                                         ctx=ctx, param_hint="--method")
            args[:0] = ["iet-agc", "--no-agc"] if method == "iet" else [method]
        return super().parse_args(ctx, args)


app = typer.Typer(help="silodiff: training-data protection for image diffusion models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Ingest and inspect training data.", no_args_is_help=True)
train_app = typer.Typer(help="Train compartments, the paragon, the router and the memorisation defences "
                        "(`train M` or `train --method M`).", no_args_is_help=True, cls=TrainGroup)
catalog_app = typer.Typer(help="Query the catalog: sources, compartments, artifacts, lineage, events.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(catalog_app, name="catalog")

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Store directory (catalog + artifacts + data).", envvar="SILODIFF_STORE")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
EpochsOpt = Annotated[int, typer.Option(help="Training epochs (spread over the slices).")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.",
                                        envvar="SILODIFF_DEVICE")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32, bf16 or fp16 (autocast; weights stay fp32).")]
UnetConfigOpt = Annotated[str | None, typer.Option("--unet-config", help="A UNet preset (tiny, fashion-28, ddpm-cifar10) "
                                                   "or a JSON file of diffusers UNet2DModel settings (default: by image size).")]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", help="Micro-batches per optimizer step (gradient accumulation).")]
WorkersOpt = Annotated[int, typer.Option("--num-workers", help="DataLoader worker processes.")]
HflipOpt = Annotated[bool, typer.Option("--hflip/--no-hflip", help="Random horizontal flips of training images.")]
CompileOpt = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model (pays on GPUs for long runs).")]


def device_arg(spec: str, precision: str = "fp32") -> str:
    """Check ``--device`` (and ``--precision``) before anything runs; returns the resolved device as a string."""
    from ..devices import check_precision, resolve_device

    device = resolve_device(spec)
    check_precision(precision, device)
    return str(device)


def cli_errors(fn):
    """Turn ``SilodiffError`` (and unreadable files) into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SilodiffError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _open(store: Path, create: bool = False):
    from ..store import Store

    return Store(store, create=create)


def emit(rows: Any, as_json: bool, columns: list[str] | None = None, title: str | None = None) -> None:
    """Print rows as JSON or as a table."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    if isinstance(rows, dict):
        rows = [{"key": k, "value": v} for k, v in rows.items()]
    columns = columns or (list(rows[0]) if rows else [])
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_short(r.get(c)) for c in columns])
    Console().print(table)


def _short(v: Any) -> str:
    if isinstance(v, str) and len(v) == 64 and all(ch in "0123456789abcdef" for ch in v):
        return v[:12]
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _names(csv: str | None) -> list[str] | None:
    return [s.strip() for s in csv.split(",") if s.strip()] if csv else None
