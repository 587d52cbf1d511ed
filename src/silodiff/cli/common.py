"""Shared pieces of the CLI: command groups, common options (the training options declared once), error handling
and output.

The convention every command follows (written on the docs site, ``docs/cli/conventions.md``):

- a list option takes a comma-separated value (``--allowed a,b``; repeating the flag adds values);
- a command that reports takes ``--json`` and then prints exactly one JSON document on stdout;
- every ``train`` sub-command takes ``--epochs --batch-size --lr --seed --device --log-dir`` (``train_options``);
- exit status: 0 success, 1 a verification that failed, 2 bad input (one ``error: …`` line),
  3 anything unexpected (one ``internal error: …`` line; ``silodiff --debug …`` shows the traceback).
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import SilodiffError


def sub_app(help: str) -> typer.Typer:
    """A command group. Plain help text (no Rich boxes): rendering help with Rich alone costs more than the rest
    of `silodiff --help`."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Store directory (catalog + artifacts + data).", envvar="SILODIFF_STORE")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
NOpt = Annotated[int, typer.Option(help="Number of generated images (the same default for sample and attribute).")]
DEFAULT_N = 16  # `sample --n` and `attribute --n`: same default, so `attribute --seed S` explains `sample --seed S`

EXIT_OK, EXIT_VERIFY_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
DEBUG = {"on": False}
# Typer's own exits and usage errors pass through (Typer ≥ 0.20 vendors click, so find its ClickException by name)
_PASS_THROUGH = (typer.Exit, typer.Abort, next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))  # `silodiff --debug`: let unexpected exceptions through with their traceback


DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.",
                                        envvar="SILODIFF_DEVICE")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32, bf16 or fp16 (autocast; weights stay fp32).")]
CombineOpt = Annotated[str, typer.Option("--combine", help="mixture (outputs weighted by the router) or soup (LoRA "
                                         "compartments of one base averaged into one model).")]
UnetConfigOpt = Annotated[str | None, typer.Option("--unet-config", help="A UNet preset (tiny, fashion-28, ddpm-cifar10) "
                                                   "or a JSON file of diffusers UNet2DModel settings (default: by image size).")]
InitFromOpt = Annotated[Path | None, typer.Option("--init-from", help="Start from a pretrained diffusers UNet2DModel "
                                                   "folder (local; a pipeline folder's unet/ too).")]
ProvenanceOpt = Annotated[str | None, typer.Option("--provenance", help="With --init-from: where the pretrained weights "
                                                   "come from (recorded in the catalog and in certificates).")]
DataParallelOpt = Annotated[int, typer.Option("--data-parallel", help="Train in N processes, one per GPU "
                                              "(gloo processes without GPUs), gradients summed across them.")]

# ----------------------------------------------------------------------------- training options
# Every TrainConfig field a `train` command sets from the command line, declared once: field -> (option, default).
TRAIN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "epochs": (Annotated[int, typer.Option(help="Training epochs (spread over the slices).")], 200),
    "batch_size": (Annotated[int, typer.Option(help="Batch size.")], 64),
    "lr": (Annotated[float, typer.Option(help="AdamW learning rate.")], 2e-3),
    "seed": (SeedOpt, 0),
    "device": (DeviceOpt, "auto"),
    "log_dir": (Annotated[str | None, typer.Option("--log-dir", metavar="DIR",
                                                   help="Write training curves for TensorBoard to DIR.")], None),
    "precision": (PrecisionOpt, "fp32"),
    "grad_accum": (Annotated[int, typer.Option("--grad-accum", help="Micro-batches per optimizer step (gradient "
                                               "accumulation).")], 1),
    "num_workers": (Annotated[int, typer.Option("--num-workers", help="DataLoader worker processes.")], 0),
    "hflip": (Annotated[bool, typer.Option("--hflip/--no-hflip", help="Random horizontal flips of training images.")],
              False),
    "compile": (Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model (pays on GPUs "
                                             "for long runs).")], False),
    "val_fraction": (Annotated[float | None, typer.Option("--val-fraction", help="Hold out this share of each model's "
                     "samples and stop early when their loss stops improving (default: 0.1 for a full fine-tune from "
                     "a base, else off; 0 turns it off).")], None),
    "patience": (Annotated[int, typer.Option("--patience", help="Early stopping: held-out evaluations without a new "
                                             "best before stopping.")], 8),
}
TRAINING = ("epochs", "batch_size", "lr", "seed", "device", "log_dir")  # every `train` command
SLICE_JOB = (*TRAINING, "precision", "grad_accum", "num_workers", "hflip", "compile", "val_fraction", "patience")


def train_options(*fields: str, **defaults: Any):
    """Decorator of a ``train`` command: adds the options of these ``TrainConfig`` fields (``TRAIN_OPTIONS``;
    ``defaults`` overrides a default) to its signature, and passes their values as one ``TrainConfig`` in its
    ``config`` parameter.  The config is not checked here: the library function checks it."""

    def wrap(fn):
        namespace = fn.__globals__
        own = [p.replace(annotation=eval(p.annotation, namespace) if isinstance(p.annotation, str) else p.annotation)
               for p in inspect.signature(fn).parameters.values() if p.name != "config"]  # what `eval_str` does
        added = [inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, annotation=TRAIN_OPTIONS[f][0],
                                   default=defaults.get(f, TRAIN_OPTIONS[f][1])) for f in fields]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            from ..training import TrainConfig

            return fn(*args, config=TrainConfig(**{f: kwargs.pop(f) for f in fields}), **kwargs)

        command.__signature__ = inspect.Signature([*own, *added])
        command.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return command

    return wrap


def device_arg(spec: str) -> str:
    """Check ``--device`` before anything runs, for the commands whose library resolves it late (a forget mid-way,
    the service on its first request); returns the resolved device as a string."""
    from ..devices import resolve_device

    return str(resolve_device(spec))


def cli_errors(fn):
    """The exit-code rule: bad input (``SilodiffError``, unreadable files) is one ``error:`` line and status 2;
    anything unexpected is one ``internal error:`` line and status 3 (``--debug`` re-raises it with its traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SilodiffError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if DEBUG["on"]:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            typer.echo(f"internal error: {type(exc).__name__}: {first} (run `silodiff --debug …` for the traceback)",
                       err=True)
            raise typer.Exit(EXIT_INTERNAL) from None

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


def _names(values: str | list[str] | None) -> list[str] | None:
    """A list option's names: comma-separated (a repeated flag adds its values, as click collects them)."""
    if not values:
        return None
    if isinstance(values, str):
        values = [values]
    return [s.strip() for v in values for s in v.split(",") if s.strip()] or None
