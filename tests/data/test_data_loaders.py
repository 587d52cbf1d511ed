"""Data: sample ids, source schemes, IDX and image-folder loaders, bad input, atomic ingest."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from silodiff.data import (
    SampleSet, assign_sources, load_dataset, load_digits, load_idx, load_image_folder, read_idx, sample_id,
)
from silodiff.errors import SilodiffError
from silodiff.store import Store


# ----------------------------------------------------------------------------- ids and sources
def test_sample_id_is_sha256_of_pixel_bytes_and_label(digits32):
    for i in (0, 7, 31):
        pixels = digits32.pixels[i].numpy()
        label = int(digits32.labels[i])
        expected = hashlib.sha256(pixels.astype(np.uint8).tobytes() + str(label).encode()).hexdigest()
        assert digits32.sample_ids[i] == expected
        assert sample_id(pixels, label) == expected


def test_sample_id_depends_on_label_and_pixels():
    pixels = np.zeros((1, 2, 2), np.uint8)
    other = pixels.copy()
    other[0, 0, 0] = 1
    assert sample_id(pixels, 1) != sample_id(pixels, 2)
    assert sample_id(pixels, 1) != sample_id(other, 1)


def test_digits_are_stable_and_in_range(digits32):
    again = load_digits("random:2", limit=32)
    assert again.sample_ids == digits32.sample_ids and again.sources == digits32.sources
    assert digits32.pixels.shape == (32, 1, 8, 8) and digits32.pixels.dtype == torch.uint8
    x, y, sid, src = digits32[3]
    assert x.min() >= -1 and x.max() <= 1 and isinstance(y, int) and sid == digits32.sample_ids[3]
    assert src in {"source-0", "source-1"}


def test_source_schemes_are_deterministic(digits32):
    labels, ids = digits32.labels.tolist(), digits32.sample_ids
    assert assign_sources("by-class", labels, ids) == [f"class-{y}" for y in labels]
    random3 = assign_sources("random:3", labels, ids)
    assert random3 == assign_sources("random:3", labels, ids)
    assert random3 == [f"source-{int(s[:8], 16) % 3}" for s in ids]
    # stable on subsets: a sample's source depends only on its own id
    assert assign_sources("random:3", labels[5:9], ids[5:9]) == random3[5:9]
    assert set(assign_sources("single", labels, ids)) == {"public"}
    assert set(assign_sources("single:acme", labels, ids)) == {"acme"}
    for bad in ("random:0", "random:x", "by-owner"):
        with pytest.raises(SilodiffError, match="source scheme"):
            assign_sources(bad, labels, ids)


def test_subset_keeps_order_and_rejects_unknown_ids(digits32):
    ids = [digits32.sample_ids[5], digits32.sample_ids[2]]
    sub = digits32.subset(ids)
    assert sub.sample_ids == ids
    assert torch.equal(sub.pixels[0], digits32.pixels[5])
    with pytest.raises(SilodiffError, match="unknown sample id"):
        digits32.subset(["nope"])


def test_unknown_dataset_is_an_error():
    with pytest.raises(SilodiffError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


# ----------------------------------------------------------------------------- IDX
def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_pair(folder, images: np.ndarray, labels: np.ndarray, gz: bool, prefix: str = "train"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        blob = _idx_bytes(arr)
        path = folder / (stem + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(blob) if gz else blob)
        paths.append(path)
    return paths


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 3, size=12).astype(np.uint8)
    img_path, lab_path = _write_idx_pair(tmp_path, images, labels, gz)
    assert np.array_equal(read_idx(img_path), images)
    assert np.array_equal(read_idx(lab_path), labels)
    data = load_idx(img_path, lab_path, sources="single")
    assert data.pixels.shape == (12, 1, 5, 4)
    assert np.array_equal(data.pixels[:, 0].numpy(), images)
    assert data.labels.tolist() == labels.astype(int).tolist()
    assert data.sample_ids[0] == sample_id(images[0][None], int(labels[0]))
    # the fashion-mnist loader finds the same files by name in a folder, and load_dataset by path
    fm = load_dataset("fashion-mnist", sources="single", path=str(tmp_path))
    assert fm.sample_ids == data.sample_ids
    via_idx = load_dataset("idx", sources="single", path=f"{img_path},{lab_path}", limit=5)
    assert via_idx.sample_ids == data.sample_ids[:5]


def test_truncated_idx_names_the_file(tmp_path):
    images = np.zeros((4, 3, 3), np.uint8)
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(images)[:-5])
    with pytest.raises(SilodiffError, match=f"{path}.*truncated"):
        read_idx(path)
    header_only = tmp_path / "h-idx3-ubyte"
    header_only.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(SilodiffError, match=f"{header_only}.*truncated"):
        read_idx(header_only)


def test_corrupt_idx_names_the_file(tmp_path):
    bad_magic = tmp_path / "magic-idx3-ubyte"
    bad_magic.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(SilodiffError, match=f"{bad_magic} is not an IDX"):
        read_idx(bad_magic)
    bad_gz = tmp_path / "broken-idx3-ubyte.gz"
    bad_gz.write_bytes(gzip.compress(_idx_bytes(np.zeros((2, 2, 2), np.uint8)))[:-8])
    with pytest.raises(SilodiffError, match=f"cannot read {bad_gz}"):
        read_idx(bad_gz)
    with pytest.raises(SilodiffError, match="missing-idx"):
        read_idx(tmp_path / "missing-idx")


def test_idx_pair_of_different_lengths_is_an_error(tmp_path):
    img, _ = _write_idx_pair(tmp_path, np.zeros((4, 2, 2), np.uint8), np.zeros(4, np.uint8), gz=False)
    _, lab = _write_idx_pair(tmp_path / "b", np.zeros((3, 2, 2), np.uint8), np.zeros(3, np.uint8), gz=False)
    with pytest.raises(SilodiffError, match="do not form"):
        load_idx(img, lab)


def test_fashion_mnist_missing_folder_is_an_error(tmp_path):
    with pytest.raises(SilodiffError, match="not found"):
        load_dataset("fashion-mnist", path=str(tmp_path / "nowhere"))
    with pytest.raises(SilodiffError, match="no train-images"):
        load_dataset("fashion-mnist", path=str(tmp_path))
    with pytest.raises(SilodiffError, match="split"):
        load_dataset("fashion-mnist:val", path=str(tmp_path))


# ----------------------------------------------------------------------------- image folder
def _png(path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_reads_sources_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for source in ("alice", "bob"):
        for label in (0, 3):
            for k in range(2):
                arr = rng.integers(0, 256, size=(6, 5), dtype=np.uint8)
                _png(tmp_path / source / str(label) / f"{k}.png", arr)
                written[sample_id(arr[None], label)] = (source, label, arr)
    data = load_image_folder(tmp_path)
    assert len(data) == 8 and data.image_shape == (1, 6, 5)
    for i, sid in enumerate(data.sample_ids):
        source, label, arr = written[sid]
        assert data.sources[i] == source and int(data.labels[i]) == label
        assert np.array_equal(data.pixels[i, 0].numpy(), arr)
    assert load_dataset("folder", path=str(tmp_path)).sample_ids == data.sample_ids


def test_image_folder_rgb(tmp_path):
    _png(tmp_path / "s" / "1" / "a.png", np.full((4, 4, 3), 200, np.uint8))
    assert load_image_folder(tmp_path).image_shape == (3, 4, 4)


def test_image_folder_mixed_sizes_names_the_file(tmp_path):
    _png(tmp_path / "s" / "0" / "a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "s" / "0" / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(SilodiffError, match="b.png.*differs"):
        load_image_folder(tmp_path)


def test_image_folder_corrupt_file_names_the_file(tmp_path):
    _png(tmp_path / "s" / "0" / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "s" / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(SilodiffError, match="broken.png.*unreadable"):
        load_image_folder(tmp_path)


def test_image_folder_empty_or_missing(tmp_path):
    with pytest.raises(SilodiffError, match="no images under"):
        load_image_folder(tmp_path)
    with pytest.raises(SilodiffError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(SilodiffError, match="needs --path"):
        load_dataset("folder")


def test_image_folder_non_integer_label_names_the_file(tmp_path):
    _png(tmp_path / "s" / "cat" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(SilodiffError, match="a.png.*'cat' is not an integer"):
        load_image_folder(tmp_path)


# ----------------------------------------------------------------------------- atomic ingest
def test_failed_ingest_registers_nothing(tmp_path, digits32):
    store = Store(tmp_path / "store")
    sources = ["good"] * 16 + ["zz bad name"] * 16  # the second source's shard write fails
    bad = SampleSet(digits32.pixels, digits32.labels, digits32.sample_ids, sources)
    with pytest.raises(SilodiffError, match="bad source name"):
        store.ingest(bad, "digits")
    assert store.catalog.sample_rows() == [] and store.catalog.sources() == []
    with pytest.raises(SilodiffError, match="holds no samples"):
        store.dataset()


def test_ingest_of_a_different_image_size_is_refused(tmp_store):
    before = len(tmp_store.catalog.sample_rows())
    pixels = np.zeros((2, 1, 4, 4), np.uint8) + np.arange(2, dtype=np.uint8)[:, None, None, None]
    other = SampleSet.from_arrays(pixels, [0, 1], ["x", "x"])
    with pytest.raises(SilodiffError, match="do not match"):
        tmp_store.ingest(other, "other")
    assert len(tmp_store.catalog.sample_rows()) == before
    assert "x" not in tmp_store.source_names()


def test_ingest_is_idempotent_and_round_trips(tmp_store, digits32):
    assert tmp_store.ingest(digits32, "digits") == 0
    back = tmp_store.dataset(digits32.sample_ids)
    assert torch.equal(back.pixels, digits32.pixels) and torch.equal(back.labels, digits32.labels)
    assert back.sources == digits32.sources


def test_image_folder_streams_in_parts_into_a_store(tmp_path):
    from silodiff.data import stream_image_folder
    from silodiff.store import Store

    rng = np.random.default_rng(2)
    for k in range(7):
        _png(tmp_path / "img" / ("alice" if k % 2 else "bob") / str(k % 3) / f"{k}.png",
             rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8))
    parts = list(stream_image_folder(tmp_path / "img", batch=3))
    assert [len(p) for p in parts] == [3, 3, 1]  # never more than one batch of decoded images at a time
    store = Store(tmp_path / "st")
    assert store.ingest(stream_image_folder(tmp_path / "img", batch=3), "folder", chunk_size=2) == 7
    assert sorted(store.dataset().sample_ids) == sorted(s for p in parts for s in p.sample_ids)
    assert sum(c["n"] for c in store.catalog.chunks()) == 7
