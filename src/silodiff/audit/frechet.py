"""Quality: FLD, the Fréchet distance in the features of a CNN silodiff trains itself.

Inception weights cannot be downloaded here, so (METHODS.md §6) the feature
space is the penultimate layer of a small classifier trained, seeded and
deterministically, on the store's real data and cached as an artifact.  We call
the distance FLD, never FID:

    FLD = ‖μ_g − μ_r‖² + Tr(Σ_g + Σ_r − 2 (Σ_g Σ_r)^{1/2})

The same network's accuracy on class-conditional samples says whether a
generated "7" looks like a 7.  Any module with ``features(x)`` and
``forward(x) -> logits`` can be passed instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import linalg

from ..data import ChunkedSamples, to_unit_range
from ..devices import device_of
from ..errors import SilodiffError
from ..nn import FeatureCNN
from ..store import Store
from ..store.lineage import num_classes
from ..training import TrainConfig, new_state, train

FEATURE_NET = "fld-cnn"


def _clean_classifier_loss(targets: torch.Tensor):
    def loss_fn(model, batch: dict[str, Any], scheduler) -> torch.Tensor:
        logits = model(batch["x0"]).float()
        return torch.nn.functional.cross_entropy(logits, targets[batch["rows"]].to(logits.device), reduction="none")

    return loss_fn


def feature_net(store: Store, *, epochs: int = 30, seed: int = 0, progress: bool = True,
                device: str | torch.device | None = None) -> torch.nn.Module:
    """The cached FLD network of this store, trained on all live data on first use (on ``device``, default auto)."""
    rows = store.active("feature-net", FEATURE_NET)
    if rows:
        return store.load(rows[-1]["hash"], device=device or "auto")
    data = store.training_set()  # streamed from the chunks when large
    config = TrainConfig(epochs=epochs, batch_size=128, lr=2e-3, label_dropout=0.0, ema_decay=0.99, seed=seed,
                         device=str(device or "auto"))
    torch.manual_seed(seed)
    net = FeatureCNN(image_shape=data.image_shape, num_classes=num_classes(store))
    state = new_state(net, config)
    train(state, data, config, loss_fn=_clean_classifier_loss(data.labels), progress="fld-net" if progress else False)
    net = state.ema.model
    probe = data if len(data) <= 20000 else data.subset(data.sample_ids[:: len(data) // 20000 + 1])
    accuracy = class_accuracy(net, probe.x(), probe.labels)
    set_id = store.catalog.add_sample_set(data.sample_ids)
    digest = store.save(net, "feature-net", FEATURE_NET, [set_id], metrics={"train_accuracy": accuracy})
    return store.load(digest, device=device or "auto")


@torch.no_grad()
def features(net: torch.nn.Module, images: torch.Tensor | ChunkedSamples, batch_size: int = 1024) -> np.ndarray:
    """Penultimate features of images in [-1, 1], (n, d) float64; a store's ``ChunkedSamples`` is read
    chunk by chunk (its rows then come in chunk order)."""
    net.eval()
    device = device_of(net)
    if isinstance(images, ChunkedSamples):
        batches = (to_unit_range(px) for _, px in images.batches_in_order(batch_size))
    else:
        batches = images.split(batch_size)
    return torch.cat([net.features(b.to(device)).float().cpu() for b in batches]).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n, d)."""
    if len(a) < 2 or len(b) < 2:
        raise SilodiffError("FLD needs at least two images on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)  # (d, d); `disp=` is deprecated in SciPy ≥ 1.16, gone in 1.18
    if not np.isfinite(root).all():  # near-singular product: regularise (as pytorch-fid does)
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def fld(net: torch.nn.Module, generated: torch.Tensor, reference: torch.Tensor | ChunkedSamples) -> float:
    """FLD between generated and reference images (both in [-1, 1]; the reference may be streamed)."""
    return frechet_distance(features(net, generated), features(net, reference))


@torch.no_grad()
def class_accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images the feature network classifies as their label."""
    net.eval()
    device = device_of(net)
    pred = torch.cat([net(b.to(device)).argmax(1).cpu() for b in images.split(1024)])
    return float((pred == labels.cpu()).float().mean())
