"""``silodiff sample`` and ``silodiff quality``: generate images from a model, and score them against the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    DEFAULT_N, CombineOpt, DeviceOpt, JsonOpt, NOpt, PrecisionOpt, SeedOpt, StoreOpt, _names, _open, cli_errors, emit,
)


@cli_errors
def sample_cmd(
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="Output folder for samples.png and samples.npz.")] = Path("samples"),
    model: Annotated[str, typer.Option(help="composed, paragon, a compartment name or an artifact hash.")] = "composed",
    allowed: Annotated[list[str] | None, typer.Option(help="Compartments to compose, comma-separated (default: all).")] = None,
    router: Annotated[str, typer.Option(help="classifier, trajectory or uniform.")] = "classifier",
    gate: Annotated[float, typer.Option(help="Sparse gating threshold on the weights.")] = 0.0,
    n: NOpt = DEFAULT_N,
    labels: Annotated[str, typer.Option(help="'all' (balanced), 'none' (unconditional) or comma-separated labels.")] = "all",
    sampler: Annotated[str, typer.Option(help="ddpm or ddim.")] = "ddpm",
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 100,
    eta: Annotated[float, typer.Option(help="DDIM eta (0 = deterministic).")] = 0.0,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    cpsample: Annotated[bool, typer.Option(help="Classifier-protected sampling (needs protection classifiers).")] = False,
    alpha: Annotated[float, typer.Option(help="CPSample: guide when max(p, 1-p) > 1 - alpha.")] = 0.25,
    scale: Annotated[float, typer.Option(help="CPSample guidance scale s.")] = 1000.0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    with_base: Annotated[bool, typer.Option(
        "--with-base", help="The base model is one more member of the composition, weighted by the router.")] = False,
    combine: CombineOpt = "mixture",
) -> None:
    """Generate images: a PNG grid and an .npz (uint8 images, labels, per-image weights)."""
    from ..sample_files import run_sample

    emit(run_sample(_open(store), out, model=model, allowed=_names(allowed), router=router, gate=gate, n=n, labels=labels,
                    sampler=sampler, steps=steps, eta=eta, seed=seed,
                    cpsample={"alpha": alpha, "scale": scale} if cpsample else None, device=device, precision=precision,
                    with_base=with_base, combine=combine), as_json)


@cli_errors
def quality_cmd(
    store: StoreOpt,
    model: Annotated[str, typer.Option(help="composed, paragon, a compartment or a hash.")] = "composed",
    router: Annotated[str, typer.Option(help="classifier, trajectory or uniform.")] = "classifier",
    gate: Annotated[float, typer.Option(help="Sparse gating threshold.")] = 0.0,
    n: Annotated[int, typer.Option(help="Generated images.")] = 1000,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 100,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    combine: CombineOpt = "mixture",
) -> None:
    """FLD and class accuracy of a model's class-conditional samples against the store's data."""
    from ..audit.quality import evaluate_quality

    emit(evaluate_quality(_open(store), model, router=router, gate=gate, n=n, steps=steps, seed=seed, device=device,
                          combine=combine), as_json)
