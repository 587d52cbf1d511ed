"""``silodiff train compartments | paragon | router``: the compartments, the monolithic baseline and the router.

The other ``train`` commands live beside their features (``cli/base.py``, ``cli/defences.py``, ``cli/attribute.py``);
``cli/main.py`` registers them all under ``train``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    SLICE_JOB, TRAINING, DataParallelOpt, InitFromOpt, JsonOpt, ProvenanceOpt, StoreOpt, UnetConfigOpt, _names, _open,
    cli_errors, emit, train_options,
)

if TYPE_CHECKING:
    from ..training import TrainConfig


@cli_errors
@train_options(*SLICE_JOB)
def train_compartments_cmd(
    store: StoreOpt,
    plan: Annotated[str, typer.Option(help="Compartments by 'source' or 'shards:K'.")] = "source",
    slices: Annotated[int, typer.Option(help="SISA slices per compartment (checkpoint after each).")] = 2,
    backend: Annotated[str, typer.Option(help="serial, process or ray.")] = "serial",
    ray_address: Annotated[str | None, typer.Option(help="Ray: join this cluster ('auto', host:port, ray://host:10001; "
                                                         "default: start a local one). Workers open the same store path.")] = None,
    num_cpus: Annotated[float | None, typer.Option(help="Ray: CPUs per job (default 1).")] = None,
    num_gpus: Annotated[float | None, typer.Option(help="Ray: GPUs per job, fractions share a GPU (default 0).")] = None,
    max_retries: Annotated[int | None, typer.Option(help="Ray: re-runs of a failed job, each resuming after its last slice (default 2).")] = None,
    ray_timeout: Annotated[float | None, typer.Option(help="Ray: seconds to wait for all jobs before cancelling the rest.")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Compartments to train, comma-separated (default: all).")] = None,
    replan: Annotated[bool, typer.Option(help="Re-plan compartments even if a plan exists.")] = False,
    agc: Annotated[bool, typer.Option(help="Anti-gradient control hook (memorisation defence, IET-AGC paper).")] = False,
    agc_lam: Annotated[float, typer.Option(help="AGC λ: skip a sample when loss·λ < the bank's loss at its t.")] = 2.0,
    from_base: Annotated[bool, typer.Option(help="Start each compartment from the base model (`train base`).")] = False,
    adapter: Annotated[str, typer.Option(help="With --from-base: none (full fine-tune) or lora (peft adapters, base frozen).")] = "none",
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 4,
    lora_alpha: Annotated[float | None, typer.Option(help="LoRA α (scale α/r; default r).")] = None,
    target_modules: Annotated[list[str] | None, typer.Option(help="LoRA: regexes of layer names, comma-separated (default: every linear, conv and embedding layer).")] = None,
    replay: Annotated[float, typer.Option(help="With --from-base: share of each batch drawn from the base's samples, "
                                                "in [0, 1) (keeps what the base knows; same steps).")] = 0.0,
    as_json: JsonOpt = False,
    unet_config: UnetConfigOpt = None,
    init_from: InitFromOpt = None,
    provenance: ProvenanceOpt = None,
    *,
    config: TrainConfig,
) -> None:
    """Train one model per compartment, each on its own samples only (from scratch, or from the base)."""
    from ..jobs import train_compartments
    from ..jobs.models import model_config

    ray = {k: v for k, v in {"address": ray_address, "num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": max_retries,
                             "timeout": ray_timeout}.items() if v is not None}
    targets = _names(target_modules)
    lora = {"rank": rank, "alpha": lora_alpha, "targets": targets} \
        if adapter == "lora" or rank != 4 or lora_alpha is not None or targets else None
    st = _open(store)
    results = train_compartments(st, _names(only), config=replace(config, replay=replay),
                                 model=model_config(st, unet_config) if unet_config else None,
                                 plan=plan if replan or not st.catalog.compartments() else None, slices=slices,
                                 backend=backend, hooks=_agc(agc, agc_lam), from_base=from_base, adapter=adapter,
                                 lora=lora, init_from=init_from, provenance=provenance, **ray)
    rows = [{"compartment": r.name, "checkpoints": len(r.artifacts), "final": r.artifacts[-1] if r.artifacts else None,
             "steps": r.steps, "seconds": round(r.seconds, 2), "resumed_from_slice": r.resumed_from} for r in results]
    emit(rows, as_json)


@cli_errors
@train_options(*SLICE_JOB)
def train_paragon_cmd(
    store: StoreOpt, slices: Annotated[int, typer.Option(help="Slices (same schedule as compartments).")] = 2,
    agc: Annotated[bool, typer.Option(help="Anti-gradient control hook (memorisation defence).")] = False,
    agc_lam: Annotated[float, typer.Option(help="AGC λ.")] = 2.0,
    as_json: JsonOpt = False,
    unet_config: UnetConfigOpt = None,
    data_parallel: DataParallelOpt = 1,
    init_from: InitFromOpt = None,
    provenance: ProvenanceOpt = None,
    *,
    config: TrainConfig,
) -> None:
    """Train the monolithic paragon on all data (the baseline)."""
    from ..jobs import train_paragon
    from ..jobs.models import model_config

    st = _open(store)
    model = model_config(st, unet_config) if unet_config else None
    r = train_paragon(st, config=config, model=model, slices=slices, seed=config.seed, hooks=_agc(agc, agc_lam),
                      data_parallel=data_parallel, init_from=init_from, provenance=provenance)
    emit({"paragon": r.artifacts[-1] if r.artifacts else None, "steps": r.steps, "seconds": round(r.seconds, 2)}, as_json)


def _agc(on: bool, lam: float) -> list[dict] | None:
    from ..defences.agc import agc_hooks

    return agc_hooks(lam) if on else None


@cli_errors
@train_options(*TRAINING, epochs=100)
def train_router_cmd(store: StoreOpt, as_json: JsonOpt = False,
                     heads: Annotated[bool, typer.Option(
                         "--heads", help="one head per compartment against the public data: a forget retrains "
                                         "only the heads that saw it")] = False,
                     with_base: Annotated[bool, typer.Option(
                         "--with-base", help="the base is one more class (its public data the heads' reference)")]
                     = False, *, config: TrainConfig) -> None:
    """Train the router over all trained compartments: a shard classifier, or one head per compartment."""
    from ..composition import train_router

    emit({"router": train_router(_open(store), config=config, heads=heads, with_base=with_base)}, as_json)
