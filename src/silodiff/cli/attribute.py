"""``silodiff train encoded`` and ``silodiff attribute``: which compartment / training units an image drew on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    DEFAULT_N, TRAINING, DeviceOpt, JsonOpt, NOpt, StoreOpt, _names, _open, cli_errors, emit,
    train_options,
)

if TYPE_CHECKING:
    from ..training import TrainConfig


@cli_errors
@train_options(*TRAINING)
def train_encoded_cmd(
    store: StoreOpt,
    members: Annotated[
        int, typer.Option(help="Ensemble members M (even); each unit gets a unique code with M/2 ones.")
    ] = 16,
    unit: Annotated[
        str, typer.Option(help="Unit of attribution: sample, source or column:NAME (with --groups).")
    ] = "sample",
    groups: Annotated[
        Path | None, typer.Option(help="CSV with columns sample_id and NAME, for --unit column:NAME.")
    ] = None,
    slices: Annotated[int, typer.Option(help="SISA slices per member (checkpoint after each).")] = 1,
    backend: Annotated[str, typer.Option(help="serial, process or ray.")] = "serial",
    as_json: JsonOpt = False,
    *,
    config: TrainConfig,
) -> None:
    """Train an encoded ensemble for unit attribution (member m trains on the units with a 1 at m)."""
    from ..attribution import train_encoded

    plan, results = train_encoded(
        _open(store),
        members=members,
        unit=unit,
        groups=groups,
        slices=slices,
        seed=config.seed,
        backend=backend,
        config=config,
    )
    rows = [
        {
            "member": r.name,
            "samples": len(plan.member_ids(m)),
            "final": r.artifacts[-1] if r.artifacts else None,
            "steps": r.steps,
            "seconds": round(r.seconds, 2),
        }
        for m, r in enumerate(results)
    ]
    emit({"plan": plan.hash, "units": len(plan.units), "unit": unit, "members": rows} if as_json else rows, as_json)


@cli_errors
def attribute_cmd(
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="Output folder for the JSON and PNGs.")] = Path("attribution"),
    seed: Annotated[int | None, typer.Option(help="Attribute the images `silodiff sample --seed S` generates.")] = None,
    labels: Annotated[
        str, typer.Option(help="Labels as in `sample`: all, none, 3 or 0,1,2 (with --image: its label or none).")
    ] = "all",
    n: NOpt = DEFAULT_N,
    image: Annotated[
        Path | None, typer.Option(help="Attribute an image file instead (PNG of the store's size).")
    ] = None,
    ensemble: Annotated[
        bool, typer.Option("--ensemble", help="Attribute to training units with the encoded ensemble.")
    ] = False,
    allowed: Annotated[list[str] | None, typer.Option(help="Compartments, comma-separated (default: all).")] = None,
    router: Annotated[str, typer.Option(help="classifier, trajectory or uniform.")] = "classifier",
    sampler: Annotated[str, typer.Option(help="ddpm or ddim.")] = "ddpm",
    steps: Annotated[int, typer.Option(help="Sampling steps (the same default as `sample`).")] = 100,
    top_k: Annotated[int, typer.Option(help="Most influential units to show (--ensemble).")] = 5,
    loo: Annotated[bool, typer.Option("--loo/--no-loo", help="Exact leave-one-compartment-out resampling.")] = True,
    first_order: Annotated[
        bool, typer.Option("--first-order", help="Also the jvp shortcut and its rank agreement (--ensemble).")
    ] = False,
    contrast: Annotated[
        str,
        typer.Option(help="Unit influence: the members that saw the unit against those that never did ('matched'), "
                          "the full ensemble against those that never did ('full'), or the loss of the half that "
                          "never saw it minus the half that did ('signed')."),
    ] = "matched",
    method: Annotated[
        str | None,
        typer.Option(help="Attribute to training units with: ensemble (the encoded ensemble, as --ensemble), "
                          "dtrak or trak (gradient features of the composed model, or of one --allowed compartment)."),
    ] = None,
    models: Annotated[
        str,
        typer.Option(help="dtrak/trak: whose gradient features: single (one model), ensemble (the encoded "
                          "ensemble's members) or compartments (each --allowed compartment); scores averaged."),
    ] = "single",
    unit: Annotated[
        str, typer.Option(help="Units for dtrak/trak: sample, source or column:NAME (with --groups).")
    ] = "sample",
    groups: Annotated[
        Path | None, typer.Option(help="CSV with columns sample_id and NAME, for --unit column:NAME.")
    ] = None,
    proj_dim: Annotated[int, typer.Option(help="dtrak/trak: random projection dimension d.")] = 512,
    timesteps: Annotated[int, typer.Option(help="dtrak/trak: timesteps K the gradients are averaged over.")] = 10,
    lam: Annotated[
        float, typer.Option(help="dtrak/trak: ridge λ relative to the mean eigenvalue of ΦᵀΦ (tune it on held-out data).")
    ] = 1e-2,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Which compartment (router weights, leave-one-out, posterior) or training units (--method) an image drew on."""
    from ..attribution.report import run_attribute

    result = run_attribute(
        _open(store),
        out,
        seed=seed,
        labels=labels,
        n=n,
        image=image,
        device=device,
        ensemble=ensemble,
        allowed=_names(allowed),
        router=router,
        sampler=sampler,
        steps=steps,
        top_k=top_k,
        leave_one_out=loo,
        first_order=first_order,
        contrast=contrast,
        method=method,
        models=models,
        unit=unit,
        groups=groups,
        timesteps=timesteps,
        proj_dim=proj_dim,
        lam=lam,
    )
    if as_json:
        emit(result, True)
        return
    if "posterior" in result:
        emit(
            [
                {
                    "compartment": c,
                    "posterior": result["posterior"][c],
                    "prior": result["prior"][c],
                    "nll_bound": result["nll_bound"][c],
                }
                for c in result["compartments"]
            ],
            False,
            title=f"posterior for {result['image']}",
        )
    elif ensemble or method is not None:
        emit(
            [
                {"image": im["index"], "rank": r + 1, **{k: v for k, v in t.items()}}
                for im in result["images"]
                for r, t in enumerate(im["top"])
            ],
            False,
            title=f"top units ({result['unit']}) by {result.get('method', 'influence')}",
        )
    else:
        rows = []
        for im in result["images"]:
            for c in result["compartments"]:
                rows.append(
                    {
                        "image": im["index"],
                        "label": im["label"],
                        "compartment": c,
                        "weight_mean": im["weights_mean"][c],
                        "weight_last": im["weights_last"][c],
                        "loo_distance": im.get("loo_distance", {}).get(c),
                        "loo_loss_change": im.get("loo_loss_change", {}).get(c),
                    }
                )
        emit(rows, False, title="compartment attribution")
    typer.echo(f"wrote {result['json']}")
