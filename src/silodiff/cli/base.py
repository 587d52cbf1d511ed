"""``silodiff train base``: a shared base model on sources declared public.

``--from-base`` on ``train compartments`` (in ``cli/main.py``) starts each
compartment from it, as a full fine-tune or LoRA adapters.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import (
    BatchSizeOpt, DeviceOpt, EpochsOpt, InitFromOpt, JsonOpt, LrOpt, PatienceOpt, PrecisionOpt, ProvenanceOpt, SeedOpt,
    StoreOpt, ValFractionOpt, _names, _open, cli_errors, emit, train_app,
)


@train_app.command("base")
@cli_errors
def train_base_cmd(
    store: StoreOpt,
    sources: Annotated[list[str], typer.Option(help="Sources every key may use, comma-separated: they become public.")],
    slices: Annotated[int, typer.Option(help="Slices (checkpoint after each).")] = 1,
    epochs: EpochsOpt = 200,
    batch_size: BatchSizeOpt = 64,
    lr: LrOpt = 2e-3,
    public: Annotated[bool, typer.Option("--public/--licensed", help="Declare the sources public (every key may use "
                                         "them), or keep them licensed: compartments on the base then need rights "
                                         "on its sources too.")] = True,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    val_fraction: ValFractionOpt = None,
    patience: PatienceOpt = 8,
    init_from: InitFromOpt = None,
    provenance: ProvenanceOpt = None,
    data_parallel: Annotated[int, typer.Option("--data-parallel", help="Train in N processes, one per GPU "
                                               "(gloo processes without GPUs), gradients summed across them.")] = 1,
) -> None:
    """Train the base model on public sources; compartments may then start from it (`train compartments --from-base`)."""
    from ..jobs import train_base
    from ..training import TrainConfig

    st = _open(store)
    r = train_base(st, _names(sources, "--sources") or [], config=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                   seed=seed, device=device, precision=precision, val_fraction=val_fraction, patience=patience).check(),
                   slices=slices, seed=seed, public=public, init_from=init_from, provenance=provenance,
                   data_parallel=data_parallel)
    emit({"base": r.artifacts[-1] if r.artifacts else None, "public_sources": st.catalog.public_sources(),
          "steps": r.steps, "seconds": round(r.seconds, 2)}, as_json)
