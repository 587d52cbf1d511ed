"""Lean serving checkpoints: the inference weights apart from the training state; sampling reads only the first."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

import silodiff as sd
from silodiff.errors import SilodiffError
from silodiff.store.artifacts import CONFIG, TRAIN, WEIGHTS, canonical_json
from silodiff.training.state import model_tensors


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    from silodiff.jobs.models import model_config

    store = sd.Store(tmp_path_factory.mktemp("lean") / "st")
    store.ingest(sd.load_digits(sources="single", limit=32), "digits")
    sd.train_paragon(store, config=sd.TrainConfig(epochs=1, batch_size=16, device="cpu"), model=model_config(store, "tiny"),
                     slices=2, progress=False)
    return store


def _final(store):
    return max(store.catalog.artifacts("paragon"), key=lambda a: a["slice"])["hash"]


def _flip(path):
    blob = bytearray(path.read_bytes())
    blob[-2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_the_model_file_holds_the_inference_weights_only(unet_run):
    folder = unet_run.artifacts.path(_final(unet_run))
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("train/")]
    with safe_open(str(folder / TRAIN), "pt") as f:
        assert "train/step" in f.keys() and any(k.startswith("train/opt.") for k in f.keys())
    config = json.loads((folder / CONFIG).read_text())
    assert config["train_state"]["sha256"] == hashlib.sha256((folder / TRAIN).read_bytes()).hexdigest()
    sizes = unet_run.artifacts.bytes_on_disk(_final(unet_run))
    assert (sizes[WEIGHTS] + sizes[CONFIG]) / sum(sizes.values()) <= 0.5  # raw + EMA + two Adam moments


def test_sampling_never_reads_the_training_state_and_resume_checks_it(unet_run, tmp_path):
    import shutil

    digest = _final(unet_run)
    store = sd.Store(tmp_path / "copy")
    shutil.copytree(unet_run.artifacts.path(digest), store.artifacts.path(digest))
    _flip(store.artifacts.path(digest) / TRAIN)  # a damaged training state: sampling must not notice it
    model = store.artifacts.load_module(digest)
    assert model.artifact_hash == digest
    with pytest.raises(SilodiffError, match="train.safetensors was modified"):
        store.artifacts.get(digest)  # what resuming reads
    with pytest.raises(SilodiffError, match="was modified"):
        store.artifacts.verify(digest)
    (store.artifacts.path(digest) / TRAIN).unlink()
    assert store.artifacts.load_module(digest).artifact_hash == digest
    with pytest.raises(SilodiffError, match="lost its training state"):
        store.artifacts.get(digest)


def test_resume_reads_both_files(unet_run):
    from silodiff.training import TrainConfig, new_state

    tensors, config = unet_run.artifacts.get(_final(unet_run))
    state = new_state(sd.load_denoiser(unet_run, _final(unet_run)), TrainConfig(device="cpu"))
    state.load_tensors(tensors)
    assert state.step == int(tensors["train/step"][0]) > 0 and state.optimizer.state


def test_a_file_changed_after_a_cached_check_is_hashed_again(unet_run, tmp_path):
    import shutil

    digest = _final(unet_run)
    store = sd.Store(tmp_path / "copy")
    shutil.copytree(unet_run.artifacts.path(digest), store.artifacts.path(digest))
    store.artifacts.load_module(digest)  # verified once (and cached)
    _flip(store.artifacts.path(digest) / WEIGHTS)
    with pytest.raises(SilodiffError, match="failed its hash check"):
        store.artifacts.load_module(digest)


def test_an_artifact_from_before_the_split_still_loads_and_resumes(unet_run, tmp_path):
    """The old layout: train/ tensors inside model.safetensors, no train file, hash = sha256(config + weights)."""
    tensors, config = unet_run.artifacts.get(_final(unet_run))
    config = {k: v for k, v in config.items() if k != "train_state"}
    cfg, weights = canonical_json(config), st_save(tensors)
    digest = hashlib.sha256(cfg + weights).hexdigest()
    store = sd.Store(tmp_path / "old")
    folder = store.artifacts.path(digest)
    folder.mkdir()
    (folder / WEIGHTS).write_bytes(weights)
    (folder / CONFIG).write_bytes(cfg)
    model = store.artifacts.load_module(digest)
    want = sd.load_denoiser(unet_run, _final(unet_run))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 500])
    with torch.no_grad():
        assert torch.equal(model(x, t, None), want(x, t, None))
    old, _ = store.artifacts.get(digest)
    assert int(old["train/step"][0]) == int(tensors["train/step"][0])
    assert model_tensors(old).keys() == model_tensors(tensors).keys()
    store.artifacts.verify(digest)
