"""Memorisation: how close generated images come to training images (METHODS.md §6).

Three criteria, all from an exact nearest-neighbour search in pixel space [0, 1]:

- **NN ratio** (Gu et al. 2023, "On Memorization in Diffusion Models"):
  ``r(x̂) = d(x̂, NN1) / d(x̂, NN2)``, memorised when ``r < 1/3`` (d = Euclidean).
- **IET-AGC / Carlini-style ratio** (Liu et al. 2024, arXiv 2407.15328; after
  Carlini et al. 2023): ``c(x̂) = d²(x̂, NN1) / mean_{j ≤ 50} d²(x̂, NN_j)``; the
  table counts generations with ``c`` strictly below 0.15, 0.20, 0.30, …, 0.90
  (the thresholds of the reference code).
- **Replicate rate** (as in CPSample, Kazdan et al. 2024): the largest cosine
  similarity between x̂'s features and any training image's features, a
  replicate when above a threshold (0.97 for CIFAR-10 there, on copy-detection
  features).  Features are centred on the training mean before the cosine
  (copy detection compares deviations from the typical image, not the shared
  background).  Default features: the [0, 1] pixels; any network with
  ``features(x)`` (e.g. the store's FLD net) can be passed.  Our choice, measured
  on digits (1,000 training / 400 fresh held-out images, threshold 0.97): centred
  pixels flag 1% of fresh images and 99.5% of noisy copies (σ = 0.05 in [0, 1]);
  FLD-net features, trained to collapse a class, flag 94% (raw) / 60% (centred)
  of *fresh* images, so they do not detect copies.

The search runs on faiss when it is installed (``nn_search``: exact flat search
streamed in batches, an IVF index above ``APPROX_ABOVE`` training images, the GPU
when present), else in torch (``_search``); both return identical top-1 results.
The training set may be a store's ``ChunkedSamples``: it is then streamed chunk
by chunk and never held in memory (faiss needed).

Images are silodiff tensors in [-1, 1] (or uint8 in [0, 255]); both are mapped
to [0, 1] before distances are taken.  An exact duplicate pair (0 / 0) counts
as memorised: its ratio is defined as 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import ChunkedSamples
from ..devices import device_of, resolve_device
from ..errors import SilodiffError
from . import nn_search

NN_RATIO_THRESHOLD = 1 / 3
CARLINI_K = 50
CARLINI_THRESHOLDS = (0.15, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90)


def unit_pixels(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(n, c, h, w) images → (n, c·h·w) float32 in [0, 1]; uint8 is /255, float is taken as [-1, 1]."""
    x = torch.as_tensor(images)
    if x.ndim < 2:
        raise SilodiffError(f"images must be (n, ...) arrays, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.flatten(1).float().div_(255.0)
    if not torch.is_floating_point(x):
        raise SilodiffError(f"images must be uint8 or float in [-1, 1], got {x.dtype}")
    if len(x) and (x.min() < -1.001 or x.max() > 1.001):
        raise SilodiffError("float images must lie in [-1, 1] (silodiff's convention)")
    return x.flatten(1).float().add(1.0).div_(2.0).clamp_(0.0, 1.0)


def _search(
    query: torch.Tensor, base: torch.Tensor, k: int, *, metric: str, batch_size: int, base_chunk: int,
    progress: bool | str, device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-nearest search of (n, d) ``query`` rows among (m, d) ``base`` rows, on ``device``
    (default: the query's); results on the CPU.

    ``metric="l2"``: Euclidean distance, ascending.  ``metric="cosine"``: cosine
    similarity of the rows as given (callers normalise), descending.
      1. candidates: per query block (b rows) and base chunk (≤ base_chunk rows),
         ‖q‖² + ‖x‖² − 2 q·x by one float32 matmul, (b, chunk); keep the k + 8 best,
         merged across chunks;
      2. refinement (l2 only): the candidates' distances again from direct
         differences (no cancellation), then the exact top k.
    Memory stays O(batch_size · base_chunk) whatever n and m are.
    """
    n, m = len(query), len(base)
    if k < 1 or k > m:
        raise SilodiffError(f"k must be in 1..{m} (the number of training images), got {k}")
    extra = min(m, k + 8) if metric == "l2" else k
    device = torch.device(device) if device is not None else query.device
    base = base.to(device)
    base_sq = base.pow(2).sum(1)  # (m,)
    dists, index = [], []
    blocks = range(0, n, batch_size)
    desc = progress if isinstance(progress, str) else "nn search"
    for start in tqdm(blocks, desc=desc, disable=not progress, leave=False):
        q = query[start : start + batch_size].to(device)  # (b, d)
        best_v = best_i = None
        for c0 in range(0, m, base_chunk):
            chunk = base[c0 : c0 + base_chunk]
            # 1. fast scores of the whole chunk, (b, chunk); smaller is better for both metrics
            prod = q @ chunk.T
            if metric == "l2":
                score = (q.pow(2).sum(1, keepdim=True) + base_sq[c0 : c0 + base_chunk] - 2 * prod).clamp_(min=0)
            else:
                score = prod.neg_()
            v, i = score.topk(min(extra, len(chunk)), dim=1, largest=False)
            i = i + c0
            if best_v is not None:
                v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
                v, pos = v.topk(min(extra, v.shape[1]), dim=1, largest=False)
                i = i.gather(1, pos)
            best_v, best_i = v, i
        if metric == "l2":
            # 2. exact distances of the candidates, (b, extra), then the true top k
            exact = (q[:, None, :] - base[best_i]).pow(2).sum(-1).sqrt_()
            v, pos = exact.topk(k, dim=1, largest=False)
            dists.append(v.cpu())
            index.append(best_i.gather(1, pos).cpu())
        else:
            dists.append(best_v[:, :k].neg().cpu())
            index.append(best_i[:, :k].cpu())
    return torch.cat(dists), torch.cat(index)


def _pick_backend(backend: str | None) -> str:
    if backend not in (None, "faiss", "torch"):
        raise SilodiffError(f"backend must be faiss or torch, got {backend!r}")
    if backend == "faiss" and nn_search.faiss_module() is None:
        raise SilodiffError("faiss is not installed: pip install 'silodiff[search]'")
    return backend or ("faiss" if nn_search.faiss_module() is not None else "torch")


@torch.no_grad()
def nearest_neighbours(
    generated: torch.Tensor | np.ndarray,
    training: torch.Tensor | np.ndarray | ChunkedSamples,
    k: int = CARLINI_K,
    *,
    batch_size: int = 512,
    base_chunk: int = 16384,
    progress: bool | str = False,
    device: torch.device | str | None = None,
    backend: str | None = None,
    approximate: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest training images of each generated image in pixel space [0, 1] (exact unless
    ``approximate``, or above ``nn_search.APPROX_ABOVE`` training images).

    Returns ``dist`` (n, k) Euclidean distances, ascending, and ``idx`` (n, k)
    row indices into ``training``.  ``backend``: faiss (default when installed) or
    torch.  ``training`` may be a store's ``ChunkedSamples`` (streamed; faiss).
    """
    q = unit_pixels(generated)
    dev = resolve_device(device) if device is not None else None
    if isinstance(training, ChunkedSamples) or _pick_backend(backend) == "faiss":
        base = training if isinstance(training, ChunkedSamples) else unit_pixels(training)
        dist, idx, _ = nn_search.knn(q, base, k, approximate=approximate, device=dev, progress=progress)
        return dist, idx
    base = unit_pixels(training)
    if q.shape[1] != base.shape[1]:
        raise SilodiffError(f"generated images have {q.shape[1]} values each, training images {base.shape[1]}")
    dist, idx = _search(q, base, k, metric="l2", batch_size=batch_size, base_chunk=base_chunk, progress=progress, device=dev)
    return dist.numpy(), idx.numpy()


def nn_ratio(dist: np.ndarray) -> np.ndarray:
    """Gu et al.: d(x̂, NN1) / d(x̂, NN2) from sorted distances (n, k ≥ 2); 0 / 0 := 0."""
    d1, d2 = dist[:, 0].astype(np.float64), dist[:, 1].astype(np.float64)
    return np.divide(d1, d2, out=np.zeros_like(d1), where=d2 > 0)


def carlini_ratio(dist: np.ndarray, k: int = CARLINI_K) -> np.ndarray:
    """IET-AGC: d²(x̂, NN1) / mean of the k smallest d² (the nearest included); 0 / 0 := 0."""
    sq = dist[:, :k].astype(np.float64) ** 2
    mean = sq.mean(1)
    return np.divide(sq[:, 0], mean, out=np.zeros_like(mean), where=mean > 0)


@torch.no_grad()
def _embed(images: torch.Tensor | np.ndarray, feature_net: torch.nn.Module | None, batch_size: int) -> torch.Tensor:
    """Feature-net features of the images (fed in [-1, 1]), or the [0, 1] pixels; (n, d) float32."""
    if feature_net is None:
        return unit_pixels(images)
    from .frechet import features

    x = unit_pixels(images).mul(2).sub(1).view(len(images), *torch.as_tensor(images).shape[1:])
    return torch.from_numpy(features(feature_net, x, batch_size)).float()


class MemorizationAuditor:
    """NN ratio, IET-AGC ratio table and replicate rate of generated images against a training set.

    >>> auditor = MemorizationAuditor(feature_net=net).fit(training_images)
    >>> auditor.report(generated)["nn_ratio_memorised"]
    """

    def __init__(
        self,
        cosine_threshold: float = 0.97,
        feature_net: torch.nn.Module | None = None,
        *,
        nn_ratio_threshold: float = NN_RATIO_THRESHOLD,
        k: int = CARLINI_K,
        carlini_thresholds: tuple[float, ...] = CARLINI_THRESHOLDS,
        batch_size: int = 512,
        progress: bool = False,
        device: str | torch.device | None = None,
        backend: str | None = None,
    ):
        self.backend = backend  # the pixel search: faiss (default when installed) or torch
        self.device = device  # the NN searches' device (default: the feature net's, else the CPU)
        self.cosine_threshold = cosine_threshold
        self.feature_net = feature_net
        self.nn_ratio_threshold = nn_ratio_threshold
        self.k = k
        self.carlini_thresholds = carlini_thresholds
        self.batch_size = batch_size
        self.progress = progress

    def fit(self, training_images: torch.Tensor | np.ndarray | ChunkedSamples) -> "MemorizationAuditor":
        """Keep the training images (as [0, 1] pixels) and their unit-norm features; a store's
        ``ChunkedSamples`` is kept as is (streamed at each search, only the feature mean computed here)."""
        if not -1 <= self.cosine_threshold <= 1:
            raise SilodiffError(f"cosine_threshold must be in [-1, 1], got {self.cosine_threshold}")
        if len(training_images) < 2:
            raise SilodiffError("memorisation needs at least two training images (the NN ratio uses NN2)")
        self.device_ = resolve_device(self.device) if self.device is not None else device_of(self.feature_net)
        self.backend_ = _pick_backend("faiss" if isinstance(training_images, ChunkedSamples) else self.backend)
        if isinstance(training_images, ChunkedSamples):
            self.training_, self.image_shape_ = training_images, tuple(training_images.image_shape)
            self.k_ = min(self.k, len(training_images))
            total, n = 0.0, 0
            for _, rows in nn_search.base_batches(training_images)[2]():  # one streamed pass: the feature mean
                feats = self._features_of(rows)
                total, n = total + feats.sum(0, dtype=np.float64), n + len(feats)
            self.feature_mean_ = torch.from_numpy(total / n).float()
            self.features_ = None
            return self
        self.training_ = unit_pixels(training_images).to(self.device_)  # (m, d), kept where the search runs
        self.image_shape_ = tuple(torch.as_tensor(training_images).shape[1:])
        self.k_ = min(self.k, len(self.training_))
        feats = _embed(training_images, self.feature_net, self.batch_size)  # (m, f)
        self.feature_mean_ = feats.mean(0)
        self.features_ = torch.nn.functional.normalize(feats - self.feature_mean_, dim=1).to(self.device_)  # centred, unit rows
        return self

    def _features_of(self, rows: np.ndarray) -> np.ndarray:
        """Features of [0, 1] pixel rows (the rows themselves without a feature net), float32."""
        if self.feature_net is None:
            return rows
        images = torch.from_numpy(rows).mul(2).sub(1).view(len(rows), *self.image_shape_)
        return _embed(images, self.feature_net, self.batch_size).numpy()

    @torch.no_grad()
    def score(self, generated: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Per generated image: ``nn_ratio``, ``carlini_ratio``, ``cosine`` (best feature match),
        ``nn_index``/``nn_distance`` (pixel NN1), ``cosine_index`` (its best feature match), and the
        boolean ``memorised``
        (NN ratio below its threshold) and ``replicate`` (cosine above its threshold)."""
        if not hasattr(self, "training_"):
            raise SilodiffError("call fit(training_images) before score()")
        if tuple(torch.as_tensor(generated).shape[1:]) != self.image_shape_:
            raise SilodiffError(f"generated images of shape {tuple(torch.as_tensor(generated).shape[1:])} "
                                f"do not match the training images' {self.image_shape_}")
        q = unit_pixels(generated)
        progress = "nn search" if self.progress else False
        if self.backend_ == "faiss":
            dist, idx, _ = nn_search.knn(q, self.training_, self.k_, device=self.device_, progress=progress)
        else:
            dist, idx = _search(q, self.training_, self.k_, metric="l2", batch_size=self.batch_size, base_chunk=16384,
                                progress=progress, device=self.device_)
            dist, idx = dist.numpy(), idx.numpy()
        feats = _embed(generated, self.feature_net, self.batch_size) - self.feature_mean_
        feats = torch.nn.functional.normalize(feats, dim=1)  # centred on the training mean, unit rows
        if self.features_ is None:  # streamed training set: the training features batch by batch
            best, best_idx = nn_search.cosine_top1(
                np.ascontiguousarray(feats.numpy(), dtype=np.float32), nn_search.base_batches(self.training_)[2],
                self.feature_mean_.numpy(), self._features_of, self.device_)
            cos, cos_idx = torch.from_numpy(best.astype(np.float32))[:, None], torch.from_numpy(best_idx)[:, None]
        else:
            cos, cos_idx = _search(feats, self.features_, 1, metric="cosine", batch_size=self.batch_size,
                                   base_chunk=16384, progress=False, device=self.device_)
        ratio, carlini = nn_ratio(dist), carlini_ratio(dist, self.k_)
        return {
            "nn_ratio": ratio, "carlini_ratio": carlini, "cosine": cos[:, 0].numpy().astype(np.float64),
            "nn_index": idx[:, 0], "nn_distance": dist[:, 0].astype(np.float64), "cosine_index": cos_idx[:, 0].numpy(),
            "memorised": ratio < self.nn_ratio_threshold, "replicate": cos[:, 0].numpy() > self.cosine_threshold,
        }

    def summarize(self, scores: dict[str, np.ndarray]) -> dict[str, Any]:
        """Fractions from ``score``'s output (so a report need not search twice)."""
        return {
            "n": int(len(scores["nn_ratio"])),
            "nn_ratio_threshold": self.nn_ratio_threshold,
            "nn_ratio_memorised": float(scores["memorised"].mean()),
            "carlini_k": self.k_,
            "carlini_below": {f"{c:.2f}": float((scores["carlini_ratio"] < c).mean()) for c in self.carlini_thresholds},
            "cosine_threshold": self.cosine_threshold,
            "cosine_features": "pixels" if self.feature_net is None else type(self.feature_net).__name__,
            "replicate_rate": float(scores["replicate"].mean()),
            "median_nn_ratio": float(np.median(scores["nn_ratio"])),
            "median_nn_distance": float(np.median(scores["nn_distance"])),
        }

    def report(self, generated: torch.Tensor | np.ndarray) -> dict[str, Any]:
        """The memorised fraction under each criterion."""
        return self.summarize(self.score(generated))
