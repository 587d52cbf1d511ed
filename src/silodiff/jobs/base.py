"""A shared base model, and compartments that start from it (full fine-tunes or LoRA adapters).

The base trains, with the one loop, on sources declared *public* (every key may
use them).  A compartment built on it starts from the base's EMA weights:

- ``adapter="none"``: a full fine-tune, every weight trainable;
- ``adapter="lora"``: the base frozen, peft LoRA adapters trained
  (:class:`silodiff.nn.lora.LoraDenoiser`); a checkpoint holds the adapter only.

Either way the compartment's **effective lineage** is its own sample ids ∪ the
base's: its checkpoints link the base's sample sets too, so ``saw``, lineage,
rights, audits and certificates all see the base's data without a special case.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import SilodiffError
from ..store import Store
from ..store.lineage import BASE
from ..training import TrainConfig
from ..training.plan import split_slices
from .backends import run_jobs
from .pretrained import init_model
from .slices import JobResult, slice_jobs


def train_base(
    store: Store, sources: Sequence[str], *, config: TrainConfig | None = None, model: dict | None = None,
    slices: int = 1, seed: int = 0, progress: bool = True, public: bool = True,
    init_from: str | None = None, provenance: str | None = None, data_parallel: int = 1,
) -> JobResult:
    """Train the base on the live samples of ``sources`` (an artifact of kind ``base``).

    ``public=True`` declares those sources public: every key may use them, so any key may be served a
    compartment built on this base.  ``public=False`` keeps them licensed: a compartment built on the base is
    then served only to keys whose rights cover the base's sources too (its effective lineage includes them).
    ``init_from``/``provenance``: start the base from a local diffusers ``UNet2DModel`` folder (a pretrained model,
    registered as an external artifact; see ``silodiff.jobs.pretrained``).
    ``data_parallel = N``: like the paragon, the one job that cannot be split by compartment trains in N processes,
    one per GPU (gloo processes on a CPU-only machine), gradients summed across them.
    """
    config = (config or TrainConfig()).check()
    if config.replay:
        raise SilodiffError("replay is for a compartment fine-tuned from a base, not the base itself")
    if data_parallel < 1:
        raise SilodiffError(f"data_parallel must be ≥ 1, got {data_parallel}")
    sources = sorted(set(sources))
    if not sources:
        raise SilodiffError("a base needs at least one public source (--sources public,...)")
    known = {r["name"] for r in store.catalog.sources()}
    if set(sources) - known:
        raise SilodiffError(f"unknown source(s): {', '.join(sorted(set(sources) - known))}")
    ids = [r["sample_id"] for s in sources for r in store.catalog.sample_rows(s)]
    if not ids:
        raise SilodiffError(f"source(s) {', '.join(sources)} hold no live samples")
    model, external = init_model(store, init_from, provenance, model)  # checked (and registered) first
    if public:
        store.catalog.declare_public(sources)
    (job,) = slice_jobs(store, BASE, {BASE: split_slices(sorted(ids), slices, seed)}, config, model, progress,
                        sources=sources, init_from=external, data_parallel=data_parallel)
    (result,) = run_jobs([job], "serial")
    store.catalog.log_event("train", {"kind": BASE, "sources": sources, "public": public,
                                      "seconds": round(result.seconds, 2)})
    return result
