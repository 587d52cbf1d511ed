"""Chunked data: ingest appends fixed-size chunks (all or nothing, even when killed), forgetting rewrites
only the chunk that holds the sample, the chunk sampler shuffles across chunks, and training streams a store
bigger than its memory growth allows."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from silodiff.data import ChunkBatches, SampleSet, load_digits
from silodiff.errors import SilodiffError
from silodiff.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _files(store: Store) -> dict[str, str]:
    """sha256 of every chunk file on disk, by its path under data/."""
    return {str(p.relative_to(store.data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.data_dir.rglob("*.safetensors"))}


def _random_rgb(n: int, seed: int, sources: list[str] | None = None) -> SampleSet:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    return SampleSet.from_arrays(pixels, labels, sources or ["s"] * n)


def test_ingest_appends_chunks_and_never_rewrites_old_ones(tmp_path):
    store = Store(tmp_path / "st")
    data = load_digits("random:2", limit=40)
    first, second = data.subset(data.sample_ids[:25]), data.subset(data.sample_ids[25:])
    store.ingest(first, "digits", chunk_size=8)
    chunks = store.catalog.chunks()
    assert all(c["n"] <= 8 for c in chunks) and sum(c["n"] for c in chunks) == 25
    assert set(_files(store)) == {c["chunk"] for c in chunks}  # every file registered, every chunk on disk
    before = _files(store)
    report = store.ingest_report(data, "digits", chunk_size=8)  # 25 already stored, 15 new
    assert report["added"] == 15 and report["already_stored"] == 25
    after = _files(store)
    assert {k: after[k] for k in before} == before  # old chunks untouched
    assert len(after) > len(before)
    got = store.dataset(data.sample_ids)  # read back from the chunks, in the order asked
    assert torch.equal(got.pixels, data.pixels) and got.sample_ids == data.sample_ids


def test_streamed_parts_and_lazy_reader_match_the_data(tmp_path):
    store = Store(tmp_path / "st")
    data = load_digits("random:3", limit=60)
    parts = (data.subset(data.sample_ids[k : k + 7]) for k in range(0, 60, 7))  # a generator: read once
    assert store.ingest(parts, "digits", chunk_size=16) == 60
    lazy = store.samples()
    assert len(lazy) == 60 and lazy.sample_ids == sorted(data.sample_ids)
    rows = torch.tensor([59, 0, 31, 17])
    pixels, labels, back = lazy[rows]
    ref = data.subset(lazy.ids_of(rows.tolist()))
    assert torch.equal(pixels, ref.pixels) and torch.equal(labels, ref.labels) and torch.equal(back, rows)


def test_failed_ingest_registers_nothing_and_leaves_no_chunk(tmp_path, monkeypatch):
    store = Store(tmp_path / "st")
    store.ingest(load_digits("single:a", limit=10), "digits", chunk_size=4)
    before, rows = _files(store), store.catalog.sample_rows()
    calls = {"n": 0}
    real = store.catalog.add_chunk

    def fail_second(*args, **kwargs):  # the chunks are on disk, half of them registered: the transaction fails
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store.catalog, "add_chunk", fail_second)
    with pytest.raises(RuntimeError, match="disk full"):
        store.ingest(load_digits("single:b", limit=30), "digits", chunk_size=4)
    assert _files(store) == before and store.catalog.sample_rows() == rows
    assert len(store.catalog.chunks()) == len(before)
    assert not list((store.root / "tmp").iterdir())


def test_an_unregistered_chunk_file_is_removed_when_the_store_opens(tmp_path):
    """What a writer killed between renaming a chunk into place and committing leaves behind."""
    store = Store(tmp_path / "st")
    store.ingest(load_digits("single:a", limit=10), "digits", chunk_size=4)
    stray = store.data_dir / "a" / "0123456789abcdef01234567.safetensors"
    stray.write_bytes(next((store.data_dir / "a").glob("*.safetensors")).read_bytes())
    Store(store.root)
    assert not stray.exists() and len(_files(store)) == 3


INGEST = textwrap.dedent("""
    import sys
    import numpy as np
    from silodiff.data import SampleSet
    from silodiff.store import Store

    rng = np.random.default_rng(1)
    def parts():
        for k in range(40):
            px = rng.integers(0, 256, size=(1000, 3, 16, 16), dtype=np.uint8)
            yield SampleSet.from_arrays(px, rng.integers(0, 10, size=1000), [f"s{k % 3}"] * 1000)
    print("start", flush=True)
    Store(sys.argv[1]).ingest(parts(), "synthetic", chunk_size=256)
    print("done", flush=True)
""")


@pytest.mark.parametrize("delay", [0.05, 0.4, 0.8, 1.2, 3.0])  # before, during and after the writes
def test_ingest_killed_at_any_point_leaves_all_or_nothing(tmp_path, delay):
    root = tmp_path / "st"
    Store(root).ingest(load_digits("single:base", limit=10), "digits")  # a store with data already
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", INGEST, str(root)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0]
    store = Store(root)  # opening removes what the killed writer left
    n = len(store.catalog.sample_rows())
    assert n in (10, 10 + 40000), n  # nothing of the killed ingest, or all of it
    if "done" in out:
        assert n > 10  # finished before the kill: all registered
    assert set(_files(store)) == {c["chunk"] for c in store.catalog.chunks()}  # no stray chunk file
    assert not list((root / "tmp").iterdir())
    assert len(store.dataset()) == n


def test_forgetting_rewrites_only_the_chunk_that_holds_the_sample(tmp_path):
    from silodiff.unlearning import forget, verify_certificate

    store = Store(tmp_path / "st")
    data = load_digits("single:alice", limit=40)
    store.ingest(data, "digits", chunk_size=8)
    before = _files(store)
    sid = data.sample_ids[13]
    holder = store.catalog.db.execute("SELECT chunk FROM sample_chunks WHERE sample_id = ?", (sid,)).fetchone()[0]
    cert = forget(store, sample_ids=[sid])
    after = _files(store)
    assert {k: v for k, v in before.items() if k != holder} == {k: v for k, v in after.items() if k in before}
    assert holder not in after and len(after) == len(before)  # one chunk replaced by its rewrite
    new = (set(after) - set(before)).pop()
    assert store.catalog.db.execute("SELECT n FROM chunks WHERE chunk = ?", (new,)).fetchone()[0] == 7
    assert sid not in store.samples().sample_ids and len(store.dataset()) == 39
    ok, problems = verify_certificate(store, cert)
    assert ok, problems


def test_chunk_batches_cover_every_row_once_and_mix_chunks():
    chunk = np.repeat(np.arange(10), 50)  # 10 chunks of 50 rows
    gen = torch.Generator().manual_seed(0)
    batches = iter(ChunkBatches(chunk, 32, gen, window=4))
    epoch = []
    while sum(len(b) for b in epoch) < len(chunk):
        epoch.append(next(batches))
    rows = torch.cat(epoch)
    assert sorted(rows.tolist()) == list(range(500))  # one epoch: every row exactly once
    assert len(set(chunk[epoch[0].numpy()])) > 1  # a batch mixes chunks
    nxt = torch.cat([next(batches) for _ in range(len(epoch))])
    assert sorted(nxt.tolist()) == list(range(500)) and not torch.equal(rows, nxt)  # the next epoch reorders


TRAIN = textwrap.dedent("""
    import resource, sys, json
    import torch
    from silodiff.nn import MLPDenoiser
    from silodiff.store import Store
    from silodiff.training import TrainConfig, new_state, train

    torch.set_num_threads(1)
    store = Store(sys.argv[1], create=False)
    data = store.samples()
    cfg = TrainConfig(epochs=1, batch_size=256, device="cpu", seed=0)
    state = new_state(MLPDenoiser(image_shape=(3, 32, 32), num_classes=10, hidden=32, depth=1), cfg)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    train(state, data, cfg, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak, "n": len(data), "nbytes": data.nbytes, "steps": state.step}))
""")


def test_training_streams_a_store_bigger_than_its_memory_growth(tmp_path):
    root = tmp_path / "big"
    store = Store(root)
    for k in range(6):  # 24,000 RGB 32×32 images: 74 MB of uint8, 295 MB as float
        store.ingest(_random_rgb(4000, k), "synthetic", chunk_size=1000)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", TRAIN, str(root)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["n"] == 24000 and r["steps"] == 94
    growth = r["peak"] - r["base"]
    assert growth < r["nbytes"] / 3, (growth, r)  # bounded by a few chunks, not by the store


def test_unknown_ids_and_empty_store_are_clear_errors(tmp_path):
    store = Store(tmp_path / "st")
    with pytest.raises(SilodiffError, match="holds no samples"):
        store.samples()
    store.ingest(load_digits("single:a", limit=5), "digits")
    with pytest.raises(SilodiffError, match="not live"):
        store.dataset(["0" * 64])
