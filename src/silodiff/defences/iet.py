"""Iterative ensemble training (IET), with or without anti-gradient control (IET-AGC).

Liu, Guan, Wu, Miao, ECCV 2024 (arXiv 2407.15328; code liuxiao-guan/IET_AGC); METHODS.md §2.

  1. split the training set into K class-balanced shards (sizes n_k, N = Σ n_k);
  2. for each of R rounds, for each shard k: load the global raw weights θ and
     EMA weights θ̄ into shard model k, train it E local epochs on shard k with the
     one training loop (its own AdamW state kept across rounds; AGC hook per shard);
  3. average separately, weighted by shard size:
     ``θ ← Σ_k (n_k/N) θ_k``,  ``θ̄ ← Σ_k (n_k/N) θ̄_k``, and start the next round.

The result is ONE artifact (kind ``iet-agc`` or ``iet``) whose lineage is the
union of all shards (plus the starting artifact's lineage in fine-tune mode):
parameter averaging mixes every shard, so it is NOT compartmentalised — the
catalog metrics say ``compartmentalised: false``.  It is a memorisation
defence, not an unlearning method.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import build
from ..data import SampleSet
from ..errors import SilodiffError
from ..jobs.models import default_model_config
from ..store import Store
from ..training import TrainConfig, new_state, steps_for, train
from ..training.plan import derive_seed
from ..training.state import PREFIX, TrainState, model_tensors
from .agc import AntiGradientControl


def class_balanced_shards(ids: Sequence[str], labels: Sequence[int], k: int, seed: int = 0) -> list[list[str]]:
    """K shards with (as nearly as possible) equal class counts: sort by (label, sha256(seed:id)), deal round-robin."""
    if k < 1:
        raise SilodiffError(f"shards must be ≥ 1, got {k}")
    if len(ids) < k:
        raise SilodiffError(f"cannot split {len(ids)} samples into {k} shards")
    order = sorted(zip(labels, ids), key=lambda p: (int(p[0]), hashlib.sha256(f"{seed}:{p[1]}".encode()).hexdigest()))
    return [sorted(sid for _, sid in order[r::k]) for r in range(k)]


@torch.no_grad()
def average_weights(state_dicts: Sequence[dict[str, torch.Tensor]], sizes: Sequence[int]) -> dict[str, torch.Tensor]:
    """``Σ_k (n_k / N) θ_k`` per floating-point tensor; integer buffers are taken from the first model."""
    if not state_dicts or len(state_dicts) != len(sizes):
        raise SilodiffError("average_weights needs one size per state dict")
    total = float(sum(sizes))
    out = {}
    for key, first in state_dicts[0].items():
        if first.is_floating_point():
            out[key] = sum(sd[key].double() * (n / total) for sd, n in zip(state_dicts, sizes)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def iet_round(
    states: Sequence[TrainState], subsets: Sequence[SampleSet], configs: Sequence[TrainConfig], raw: dict, ema: dict, *,
    local_epochs: float, hooks: Sequence[Any | None] = (), progress: bool | str = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One IET round: every shard model starts from the global (raw, EMA) weights and trains E local
    epochs on its shard; returns the new global (raw, EMA), each averaged separately by shard size."""
    sizes = [len(s) for s in subsets]
    hooks = list(hooks) or [None] * len(states)
    for k, state in enumerate(states):
        # 2. start from the global weights (optimizer state of shard k is kept), train E local epochs
        state.model.load_state_dict(raw)
        state.ema.model.load_state_dict(ema)
        train(state, subsets[k], configs[k], steps=steps_for(sizes[k], configs[k], local_epochs),
              hooks=[hooks[k]] if hooks[k] is not None else (), progress=f"{progress} shard {k + 1}" if progress else False)
    # 3. size-weighted averages, raw and EMA kept separate
    return (average_weights([s.model.state_dict() for s in states], sizes),
            average_weights([s.ema.model.state_dict() for s in states], sizes))


def _start_weights(store: Store, init: str | None, model: dict | None, seed: int) -> tuple[dict, dict, dict, str | None]:
    """(model config, raw weights, EMA weights, init hash): fresh, or from a trained artifact (fine-tune mode)."""
    if init is None:
        cfg = model or default_model_config(store)
        torch.manual_seed(seed)
        net = build(cfg)
        sd = {k: v.clone() for k, v in net.state_dict().items()}
        return cfg, sd, {k: v.clone() for k, v in sd.items()}, None
    digest = store.catalog.artifact(init)["hash"]
    tensors, config = store.artifacts.get(digest)
    if "model" not in config:
        raise SilodiffError(f"artifact {digest[:12]} is not a model")
    ema = model_tensors(tensors)
    raw = {k[len(PREFIX) + 4 :]: v for k, v in tensors.items() if k.startswith(PREFIX + "raw.")} or dict(ema)
    return config["model"], raw, ema, digest


def train_iet(
    store: Store,
    *,
    shards: int = 10,
    rounds: int = 10,
    local_epochs: float = 100,
    agc: dict[str, float] | None = None,
    config: TrainConfig | None = None,
    model: dict | None = None,
    init: str | None = None,
    ids: Sequence[str] | None = None,
    name: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train IET (``agc=None``) or IET-AGC (``agc={"lam": 2.0, "decay": 0.8}``) and register one artifact.

    ``init``: an artifact hash (prefix) to fine-tune from.  ``ids``: the training set
    (default: every live sample).  Returns a summary with the artifact hash.
    """
    config = (config or TrainConfig()).check()
    if rounds < 1 or local_epochs <= 0:
        raise SilodiffError(f"rounds must be ≥ 1 and local epochs > 0, got {rounds} and {local_epochs}")
    kind = "iet-agc" if agc is not None else "iet"
    name = name or kind
    data = store.dataset(list(ids) if ids is not None else None)
    parts = class_balanced_shards(data.sample_ids, data.labels.tolist(), shards, config.seed)
    cfg, raw, ema, init_hash = _start_weights(store, init, model, config.seed)
    # one model, optimizer, generator and AGC bank per shard, kept across rounds
    configs = [TrainConfig(**{**config.to_dict(), "seed": derive_seed(config.seed, f"shard-{k}")}) for k in range(shards)]
    states = [new_state(build(cfg), c) for c in configs]
    hooks = [AntiGradientControl(**agc, num_train_timesteps=config.num_train_timesteps) if agc is not None else None
             for _ in range(shards)]
    subsets = [data.subset(p) for p in parts]  # (n_k images each)
    t0 = time.perf_counter()
    for _ in tqdm(range(rounds), desc=f"{kind} rounds ({shards} shards)", disable=not progress, leave=False):
        raw, ema = iet_round(states, subsets, configs, raw, ema, local_epochs=local_epochs, hooks=hooks)
    seconds = time.perf_counter() - t0
    return _register(store, kind, name, cfg, raw, ema, parts, init_hash, hooks, seconds,
                     {"shards": shards, "rounds": rounds, "local_epochs": local_epochs, "agc": agc, "train": config.to_dict()})


def _register(store: Store, kind: str, name: str, cfg: dict, raw: dict, ema: dict, parts: list[list[str]], init_hash: str | None,
              hooks: list, seconds: float, options: dict[str, Any]) -> dict[str, Any]:
    """One artifact: EMA weights for sampling + raw weights under ``train/raw.``; lineage = ∪ shards (∪ init)."""
    tensors = {k: v.cpu().contiguous().clone() for k, v in ema.items()}
    tensors.update({f"{PREFIX}raw.{k}": v.cpu().contiguous().clone() for k, v in raw.items()})
    merged = None
    for h in hooks:
        if h is not None:
            merged = AntiGradientControl(h.lam, h.decay, h.num_train_timesteps).merge(h) if merged is None else merged.merge(h)
    info: dict[str, Any] = {"kind": kind, "name": name, **options, "init": init_hash, "shard_sizes": [len(p) for p in parts],
                            "compartmentalised": False}
    if merged is not None:
        info["hooks"] = {"agc": merged.report()}
    digest = store.artifacts.put(tensors, {"model": cfg, "info": info})
    metrics: dict[str, Any] = {"compartmentalised": False, "lineage": "union of all shards", "shards": len(parts),
                               "rounds": options["rounds"], "local_epochs": options["local_epochs"],
                               "train_seconds": round(seconds, 2), "n": sum(len(p) for p in parts)}
    if merged is not None:
        metrics.update({f"agc_{k}": v for k, v in merged.summary().items()})
    with store.catalog.transaction():
        sets = [store.catalog.add_sample_set(p) for p in parts]
        if init_hash is not None:
            sets += store.catalog.lineage_sets(init_hash)  # fine-tuning keeps what the start had seen
        store.catalog.set_active([r["hash"] for r in store.active(kind, name) if r["hash"] != digest], False)
        store.catalog.add_artifact(digest, kind, name, cfg, sets, metrics=metrics)
        store.catalog.log_event("train", {"kind": kind, "name": name, "artifact": digest, "compartmentalised": False,
                                          "shards": len(parts), "rounds": options["rounds"], "init": init_hash})
    return {"artifact": digest, "kind": kind, "name": name, "compartmentalised": False,
            "n": metrics["n"], "shard_sizes": info["shard_sizes"], "seconds": round(seconds, 2),
            **({"agc_skipped_fraction": round(merged.skipped_fraction(), 5),
                "top_skipped": merged.top_skipped(5)} if merged is not None else {})}
