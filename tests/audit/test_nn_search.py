"""The faiss nearest-neighbour search: the same top-1 as the exact torch search, in memory and streamed from a
store's chunks; the approximate (IVF) index finds most true neighbours; the auditor works on a streamed set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from silodiff.audit import MemorizationAuditor, nearest_neighbours
from silodiff.audit import nn_search
from silodiff.data import SampleSet
from silodiff.store import Store

pytest.importorskip("faiss")


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(8, 3, 8, 8))  # a few prototypes: neighbours are close, not random
    pick = rng.integers(0, 8, size=n)
    return np.clip(base[pick] + rng.normal(0, 30, size=(n, 3, 8, 8)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    train = _images(3000, 0)
    store = Store(tmp_path_factory.mktemp("nn") / "st")
    store.ingest(SampleSet.from_arrays(train, [0] * len(train), ["a"] * len(train)), "synthetic", chunk_size=500)
    return store


def test_faiss_exact_matches_the_torch_search(chunked):
    data = chunked.dataset()
    generated = _images(200, 1)
    generated[:5] = data.pixels[[3, 70, 900, 1500, 2999]].numpy()  # exact copies: distance 0, found first
    d_t, i_t = nearest_neighbours(generated, data.pixels, k=5, backend="torch")
    d_f, i_f = nearest_neighbours(generated, data.pixels, k=5, backend="faiss")
    assert np.array_equal(i_t[:, 0], i_f[:, 0])
    np.testing.assert_allclose(d_t, d_f, rtol=1e-5, atol=1e-6)
    assert np.all(d_f[:5, 0] == 0) and i_f[:5, 0].tolist() == [3, 70, 900, 1500, 2999]
    # streamed from the store's chunks (each read once), indices into the same order
    d_s, i_s = nearest_neighbours(generated, chunked.samples(), k=5)
    assert np.array_equal(i_s[:, 0], i_t[:, 0])
    np.testing.assert_allclose(d_s, d_t, rtol=1e-5, atol=1e-6)


def test_the_approximate_index_finds_most_true_neighbours(chunked):
    generated = torch.as_tensor(_images(200, 2))
    exact = nearest_neighbours(generated, chunked.samples(), k=1, approximate=False)[1][:, 0]
    d, idx, info = nn_search.knn(generated.flatten(1).float() / 255, chunked.samples(), 1, approximate=True, nprobe=8)
    assert info["index"] == "ivf-sq8"
    assert (idx[:, 0] == exact).mean() >= 0.8


def test_auditor_on_a_streamed_training_set_equals_the_in_memory_one(chunked):
    generated = torch.as_tensor(_images(50, 3))
    streamed = MemorizationAuditor(k=10).fit(chunked.samples()).score(generated)
    in_memory = MemorizationAuditor(k=10, backend="torch").fit(chunked.dataset().pixels).score(generated)
    assert np.array_equal(streamed["nn_index"], in_memory["nn_index"])
    np.testing.assert_allclose(streamed["nn_ratio"], in_memory["nn_ratio"], rtol=1e-5)
    np.testing.assert_allclose(streamed["cosine"], in_memory["cosine"], atol=1e-5)
    assert np.array_equal(streamed["cosine_index"], in_memory["cosine_index"])


def test_fld_features_of_a_streamed_reference_equal_the_in_memory_ones(chunked):
    from silodiff.audit.frechet import features
    from silodiff.nn import FeatureCNN

    torch.manual_seed(0)
    net = FeatureCNN(image_shape=(3, 8, 8), num_classes=1)
    streamed = features(net, chunked.samples(), batch_size=256)
    in_memory = features(net, chunked.dataset().x())
    assert streamed.shape == in_memory.shape  # the same rows, in chunk order instead of id order
    np.testing.assert_allclose(np.sort(streamed, axis=0), np.sort(in_memory, axis=0), rtol=1e-5, atol=1e-6)
