"""k-nearest-neighbour search over training images with faiss, streamed from memory or from a store's chunks.

- **Exact** (default up to ``APPROX_ABOVE`` training images): the training rows
  arrive in batches (``BASE_BATCH`` rows); each batch is searched exactly with
  faiss (``faiss.knn``: the same kernels as ``IndexFlatL2``) and the best
  ``k + 8`` candidates are merged across batches (``faiss.ResultHeap``).  Memory
  is O(batch), whatever the size of the training set.
- **Approximate** (above ``APPROX_ABOVE``, or ``approximate=True``): an IVF index
  with 8-bit scalar quantisation (``IndexIVFScalarQuantizer``, ``QT_8bit_direct``:
  uint8 pixels are stored losslessly, one byte a value) trained on a random
  sample, ``nprobe`` lists probed.  Its recall@1 against the exact search is
  measured by ``bench/data_scale.py``.
- On a CUDA device, with a faiss built with GPU support, the flat searches run
  on the GPU (``faiss.StandardGpuResources``).

The candidates' distances are computed again from direct differences (exact,
no cancellation: an exact duplicate has distance 0) and the best ``k`` kept:
for the exact search while each batch is in memory (one pass over the data),
for the IVF index afterwards, reading the training rows chunk by chunk.
Without faiss installed (``pip install 'silodiff[search]'``) an in-memory
training set falls back to the torch search of ``memorization``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..data import ChunkedSamples
from ..errors import SilodiffError

APPROX_ABOVE = int(os.environ.get("SILODIFF_NN_APPROX_ABOVE", 2_000_000))  # training images; see the guide
BASE_BATCH = 16384  # training rows per exact faiss batch
EXTRA = 8  # candidates kept beyond k, re-ranked by exact distances


def faiss_module():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _gpu(faiss, device: torch.device | None):
    if device is None or device.type != "cuda" or not hasattr(faiss, "StandardGpuResources"):
        return None
    return faiss.StandardGpuResources()


Batches = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


def base_batches(base: torch.Tensor | ChunkedSamples, size: int = BASE_BATCH) -> tuple[int, int, Batches]:
    """(m, d, a function giving (positions, float32 rows in [0, 1]) batches) for a tensor of [0, 1] rows
    or a chunked store reader (uint8 pixels / 255, read chunk by chunk).  A batch's rows are valid until
    the next batch is drawn (one buffer is reused)."""
    if isinstance(base, ChunkedSamples):
        d = int(np.prod(base.image_shape))

        def gen():
            buf = None  # one float32 buffer reused for every batch (fresh 200 MB arrays cost page faults)
            for pos, pixels in base.batches_in_order(size):
                src = pixels.flatten(1).numpy()
                if buf is None or len(buf) < len(src):
                    buf = np.empty(src.shape, dtype=np.float32)
                rows = buf[: len(src)]
                np.copyto(rows, src, casting="unsafe")
                yield pos, np.divide(rows, np.float32(255.0), out=rows)

        return len(base), d, gen
    rows = base.detach().float().cpu()

    def gen():
        for start in range(0, len(rows), size):
            yield np.arange(start, min(start + size, len(rows))), rows[start : start + size].numpy()

    return len(rows), rows.shape[1], gen


def _rows_at(base: torch.Tensor | ChunkedSamples, positions: np.ndarray) -> np.ndarray:
    """float32 [0, 1] rows of the training set at these positions."""
    if isinstance(base, ChunkedSamples):
        rows = base.pixels_at(positions).flatten(1).numpy().astype(np.float32)
        return np.divide(rows, np.float32(255.0), out=rows)
    return base[torch.from_numpy(positions)].float().cpu().numpy()


def _refine(query: np.ndarray, base: torch.Tensor | ChunkedSamples, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean distances of each query to its candidates (read chunk by chunk), best k ascending."""
    n, c = cand.shape
    flat = cand.reshape(-1)
    dist = np.full(flat.shape, np.inf, dtype=np.float64)
    valid = flat >= 0
    if isinstance(base, ChunkedSamples):
        chunk_of = np.where(valid, base.chunk[np.clip(flat, 0, None)], -1)
        order = np.argsort(chunk_of, kind="stable")
        keys, starts = np.unique(chunk_of[order], return_index=True)
        groups = [g for key, g in zip(keys, np.split(order, starts[1:])) if key >= 0]
    else:
        idx = np.nonzero(valid)[0]
        groups = [idx[s : s + 65536] for s in range(0, len(idx), 65536)]
    for g in groups:
        rows = _rows_at(base, flat[g])
        diff = query[g // c].astype(np.float64) - rows.astype(np.float64)
        dist[g] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    dist = dist.reshape(n, c)
    best = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, best, 1), np.take_along_axis(cand, best, 1)


def _exact_distances(query: np.ndarray, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Euclidean distances of each query to its candidate rows ``rows[idx]`` (n, c), from direct differences."""
    out = np.empty(idx.shape, dtype=np.float32)
    for s in range(0, len(query), 128):
        diff = query[s : s + 128, None, :] - rows[np.clip(idx[s : s + 128], 0, None)]
        out[s : s + 128] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return np.where(idx >= 0, out, np.inf)


def _exact_search(faiss, query: np.ndarray, batches: Batches, k: int, kk: int, gpu,
                  progress: bool | str) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest over all batches in one pass: per batch, faiss's best ``kk`` re-ranked by direct
    differences while the batch is in memory; merged across batches (``faiss.ResultHeap``)."""
    from tqdm.auto import tqdm

    heap = faiss.ResultHeap(len(query), k)
    desc = progress if isinstance(progress, str) else "nn search"
    for pos, rows in tqdm(batches(), desc=desc, disable=not progress, leave=False):
        rows = np.ascontiguousarray(rows)
        c = min(kk, len(rows))
        if gpu is not None:
            idx = faiss.knn_gpu(gpu, query, rows, c)[1]
        else:
            idx = faiss.knn(query, rows, c)[1]
        dist = _exact_distances(query, rows, idx)
        order = np.argsort(dist, axis=1, kind="stable")[:, : min(k, c)]
        dist, idx = np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
        ids = np.where(idx >= 0, pos[np.clip(idx, 0, None)], -1).astype(np.int64)
        if dist.shape[1] < k:  # a batch smaller than k: pad with empty results
            pad = k - dist.shape[1]
            dist = np.hstack([dist, np.full((len(query), pad), np.inf, np.float32)])
            ids = np.hstack([ids, np.full((len(query), pad), -1, np.int64)])
        heap.add_result(np.ascontiguousarray(dist * dist, dtype=np.float32), np.ascontiguousarray(ids))
    heap.finalize()
    return np.sqrt(heap.D), heap.I


def ivf_index(faiss, d: int, m: int, base: torch.Tensor | ChunkedSamples, *, nlist: int | None = None,
              nprobe: int = 16, seed: int = 0):
    """An IVF index with lossless 8-bit storage of [0, 1] rows (×255), trained on a random sample of ``base``."""
    nlist = nlist or max(16, int(math.sqrt(m)))
    sample = np.sort(np.random.default_rng(seed).choice(m, size=min(m, 30 * nlist), replace=False))
    nlist = min(nlist, max(1, len(sample) // 39))  # faiss wants ≥ 39 training points a list
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit_direct, faiss.METRIC_L2)
    index.by_residual = False  # the pixels themselves are stored (residuals are not bytes: they would be clipped)
    index.train(np.ascontiguousarray(_rows_at(base, sample) * 255.0))
    index.nprobe = nprobe
    return index


def build_ivf(base: torch.Tensor | ChunkedSamples, nprobe: int = 16):
    """The approximate index of ``base`` (trained on a sample, every row added, streamed), for ``knn(ivf=)``."""
    faiss = faiss_module()
    if faiss is None:
        raise SilodiffError("the approximate nearest-neighbour index needs faiss: pip install 'silodiff[search]'")
    m, d, batches = base_batches(base)
    index = ivf_index(faiss, d, m, base, nprobe=nprobe)
    for pos, rows in batches():
        index.add_with_ids(np.ascontiguousarray(rows * 255.0), pos.astype(np.int64))
    return index


def knn(query: torch.Tensor | np.ndarray, base: torch.Tensor | ChunkedSamples, k: int, *,
        approximate: bool | None = None, device: torch.device | None = None, progress: bool | str = False,
        nprobe: int = 16, ivf=None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The ``k`` nearest training rows of each query row (all in [0, 1]): Euclidean distances ascending
    (n, k), their positions in ``base`` (n, k), and what ran (``{"index": "flat"|"ivf-sq8", "gpu": bool}``).
    ``ivf``: an index from ``build_ivf(base)`` to search (approximate; built here when not given)."""
    faiss = faiss_module()
    m, d, batches = base_batches(base)
    q = np.ascontiguousarray(torch.as_tensor(query).float().cpu().numpy(), dtype=np.float32)
    if q.shape[1] != d:
        raise SilodiffError(f"query rows have {q.shape[1]} values each, training rows {d}")
    if k < 1 or k > m:
        raise SilodiffError(f"k must be in 1..{m} (the number of training images), got {k}")
    if faiss is None:
        raise SilodiffError("the streamed nearest-neighbour search needs faiss: pip install 'silodiff[search]'")
    kk = min(m, k + EXTRA)
    approximate = (m > APPROX_ABOVE if approximate is None else approximate) or ivf is not None
    gpu = _gpu(faiss, device)
    if approximate:
        index = ivf if ivf is not None else build_ivf(base, nprobe)
        index.nprobe = nprobe
        if gpu is not None:
            index = faiss.index_cpu_to_gpu(gpu, device.index or 0, index)
        cand = index.search(q * 255.0, kk)[1]
        info = {"index": "ivf-sq8", "nlist": int(faiss.extract_index_ivf(index).nlist) if gpu is None else None,
                "nprobe": nprobe}
    else:
        dist, idx = _exact_search(faiss, q, batches, k, kk, gpu, progress)
        return dist.astype(np.float32), idx, {"index": "flat", "gpu": gpu is not None}
    dist, idx = _refine(q, base, cand, k)
    return dist.astype(np.float32), idx, {**info, "gpu": gpu is not None}


def cosine_top1(query: np.ndarray, rows: Batches, mean: np.ndarray, transform: Callable[[np.ndarray], np.ndarray],
                device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine similarity of each (centred, unit) query row to the centred, unit training rows,
    which are computed batch by batch by ``transform`` (exact inner-product search, merged)."""
    faiss = faiss_module()
    gpu = _gpu(faiss, device)

    def feats():
        for pos, r in rows():
            f = transform(r) - mean
            f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
            yield pos, f.astype(np.float32)

    heap = faiss.ResultHeap(len(query), 1, keep_max=True)
    for pos, f in feats():
        fn = faiss.knn_gpu if gpu is not None else None
        dist, idx = (fn(gpu, query, f, 1, metric=faiss.METRIC_INNER_PRODUCT) if fn
                     else faiss.knn(query, f, 1, metric=faiss.METRIC_INNER_PRODUCT))
        heap.add_result(np.ascontiguousarray(dist), np.ascontiguousarray(pos[idx].astype(np.int64)))
    heap.finalize()
    return heap.D[:, 0], heap.I[:, 0]
