"""``silodiff train base``: a shared base model on sources declared public.

``--from-base`` on ``train compartments`` (in ``cli/train.py``) starts each
compartment from it, as a full fine-tune or LoRA adapters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    SLICE_JOB, DataParallelOpt, InitFromOpt, JsonOpt, ProvenanceOpt, StoreOpt, _names, _open, cli_errors, emit,
    train_options,
)

if TYPE_CHECKING:
    from ..training import TrainConfig


@cli_errors
@train_options(*SLICE_JOB)
def train_base_cmd(
    store: StoreOpt,
    sources: Annotated[list[str], typer.Option(help="Sources every key may use, comma-separated: they become public.")],
    slices: Annotated[int, typer.Option(help="Slices (checkpoint after each).")] = 1,
    public: Annotated[bool, typer.Option("--public/--licensed", help="Declare the sources public (every key may use "
                                         "them), or keep them licensed: compartments on the base then need rights "
                                         "on its sources too.")] = True,
    as_json: JsonOpt = False,
    init_from: InitFromOpt = None,
    provenance: ProvenanceOpt = None,
    data_parallel: DataParallelOpt = 1,
    *,
    config: TrainConfig,
) -> None:
    """Train the base model on public sources; compartments may then start from it (`train compartments --from-base`)."""
    from ..jobs import train_base

    st = _open(store)
    r = train_base(st, _names(sources) or [], config=config, slices=slices, seed=config.seed, public=public,
                   init_from=init_from, provenance=provenance, data_parallel=data_parallel)
    emit({"base": r.artifacts[-1] if r.artifacts else None, "public_sources": st.catalog.public_sources(),
          "steps": r.steps, "seconds": round(r.seconds, 2)}, as_json)
