"""The demo's base + LoRA step: the same owners as LoRA adapters on a base trained on the public source."""

from __future__ import annotations

from pathlib import Path

from ..composition import train_router
from ..data import SampleSet
from ..jobs import plan_compartments, train_base, train_compartments
from ..store import Store
from ..training import TrainConfig


def base_and_adapters(root: Path, data: SampleSet, config: TrainConfig, backend: str,
                       router_config: TrainConfig | None) -> Store:
    """A store where the base trains on the public source and each owner is a rank-4 LoRA adapter on it;
    with ``router_config``, a learned router over the adapters and the base."""
    store = Store(root)
    store.ingest(data, "digits")
    train_base(store, ["public"], config=config, progress=False)
    plan_compartments(store, by="source", slices=2)
    train_compartments(store, config=config, backend=backend, progress=False, from_base=True, adapter="lora",
                       lora={"rank": 4})
    if router_config is not None:
        train_router(store, config=router_config, progress=False, with_base=True)
    return store
