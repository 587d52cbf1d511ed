"""A small store of 8×8 digits with tiny-UNet compartments, a base and LoRA adapters on it (built once per module)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="package")
def unet_store(tmp_path_factory):
    import silodiff as sd
    from silodiff.jobs import train_base
    from silodiff.jobs.models import model_config

    store = sd.Store(tmp_path_factory.mktemp("interop") / "st")
    store.ingest(sd.load_digits(sources="random:3", limit=60), "digits")
    config = sd.TrainConfig(epochs=1, batch_size=16, device="cpu")
    model = model_config(store, "tiny")
    train_base(store, ["source-0"], config=config, model=model, progress=False)
    sd.plan_compartments(store, by="source", slices=1)
    sd.train_compartments(store, ["source-1"], config=config, model=model, progress=False)
    sd.train_compartments(store, ["source-2"], config=config, from_base=True, adapter="lora", lora={"rank": 2},
                          progress=False)
    return store


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 1, 8, 8, generator=g), torch.tensor([3, 250, 600, 999]), torch.tensor([0, 4, 9, 10])
