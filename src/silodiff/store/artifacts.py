"""Content-addressed artifacts: ``<hash>/model.safetensors`` + ``<hash>/config.json`` (+ ``train.safetensors``).

A checkpoint is split in two files: ``model.safetensors`` holds what sampling
needs (the EMA weights), ``train.safetensors`` the state only resuming needs (raw
weights, optimizer moments, generator: the ``train/`` tensors), about three times
as many bytes.  ``config.json`` records the train file's sha256 and size, and the
hash is ``sha256(config.json bytes + model.safetensors bytes)``, so it covers both:
serving reads and verifies the config and the model file only; resuming (and
``verify``) also checks the train file against the sha256 the config records.
Artifacts written before the split (train state inside ``model.safetensors``, no
train file) load as they are.

Hashes are computed by streaming the files in 1 MiB chunks, and a file verified
once is not re-hashed in the same process while its (path, size, mtime) stay the
same; ``verify`` always re-hashes.  Writes go to a
temporary folder ``tmp/<hash12>.<pid>@<host>.<random>`` that is renamed into
place, so a crash never leaves a half-written artifact, and the folder a crash
leaves behind is removed when the store is next opened (``scratch.py``).  Never
pickle: weights are safetensors, everything else is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SilodiffError
from .scratch import owner_tag

if TYPE_CHECKING:  # torch is imported where tensors are touched, so reading the catalog stays light
    import torch

WEIGHTS, CONFIG, TRAIN = "model.safetensors", "config.json", "train.safetensors"
TRAIN_PREFIX, TRAIN_KEY = "train/", "train_state"  # tensors that go to the train file; its record in config.json
CHUNK = 1 << 20
_VERIFIED: dict[tuple, str] = {}  # (files' path, size, mtime_ns) -> sha256 hex, for this process


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def stream_sha256(*paths: Path, cached: bool = True) -> str:
    """sha256 over the files' bytes, in order, read in chunks (cached by path, size and mtime unless ``cached=False``)."""
    key = tuple(_stamp(p) for p in paths)
    if cached and key in _VERIFIED:
        return _VERIFIED[key]
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
    _VERIFIED[key] = digest = h.hexdigest()
    return digest


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default).encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def tensors_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state as contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


class ArtifactStore:
    """A folder of artifacts addressed by content hash."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root.parent / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest

    def exists(self, digest: str) -> bool:
        return (self.path(digest) / WEIGHTS).exists()

    def put(self, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
        """Write tensors + config atomically; returns the content hash (idempotent).

        ``train/`` tensors (the resume state) go to ``train.safetensors``, the rest to ``model.safetensors``.
        """
        from safetensors.torch import save as st_save

        config = {k: v for k, v in config.items() if k != TRAIN_KEY}
        train = {k: v for k, v in tensors.items() if k.startswith(TRAIN_PREFIX)}
        blob = st_save(train) if train else None
        if blob is not None:
            config[TRAIN_KEY] = {"file": TRAIN, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        cfg, weights = canonical_json(config), st_save({k: v for k, v in tensors.items() if k not in train})
        digest = hashlib.sha256(cfg + weights).hexdigest()
        final = self.path(digest)
        if final.exists():
            return digest
        staging = Path(tempfile.mkdtemp(prefix=f"{digest[:12]}.{owner_tag()}.", dir=self.tmp))
        _fsync_write(staging / WEIGHTS, weights)
        if blob is not None:
            _fsync_write(staging / TRAIN, blob)
        _fsync_write(staging / CONFIG, cfg)
        try:
            os.rename(staging, final)
        except OSError:  # a concurrent writer got there first with the same content
            shutil.rmtree(staging, ignore_errors=True)
        return digest

    def save_module(self, module: torch.nn.Module, **info: Any) -> str:
        """Save a registered module (its ``config`` rebuilds it) plus free-form ``info``."""
        return self.put(tensors_of(module), {"model": module.config, "info": info})

    def config(self, digest: str, *, cached: bool = True) -> dict[str, Any]:
        """An artifact's config, after checking ``config.json`` + ``model.safetensors`` against the hash."""
        folder = self.path(digest)
        try:
            if stream_sha256(folder / CONFIG, folder / WEIGHTS, cached=cached) != digest:
                raise SilodiffError(f"artifact {digest[:12]} failed its hash check: the files were modified")
            return json.loads((folder / CONFIG).read_bytes())
        except FileNotFoundError:
            raise SilodiffError(f"artifact {digest[:12]} is missing from the store") from None

    def _check_train(self, digest: str, config: dict[str, Any], cached: bool = True) -> Path | None:
        record = config.get(TRAIN_KEY)
        if record is None:
            return None  # no resume state, or an artifact from before the split (state inside model.safetensors)
        path = self.path(digest) / record["file"]
        try:
            ok = stream_sha256(path, cached=cached) == record["sha256"]
        except FileNotFoundError:
            raise SilodiffError(f"artifact {digest[:12]} lost its training state ({record['file']})") from None
        if not ok:
            raise SilodiffError(f"artifact {digest[:12]} failed its hash check: {record['file']} was modified")
        return path

    def verify(self, digest: str) -> None:
        """Re-hash every file of an artifact (no cache); raises ``SilodiffError`` on a missing or modified one."""
        self._check_train(digest, self.config(digest, cached=False), cached=False)

    def get(self, digest: str, *, train: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Read and verify one artifact: (tensors, config).  ``train=False``: the inference weights only (the
        training state's file is neither read nor hashed; an artifact from before the split still holds it)."""
        from safetensors.torch import load_file

        config = self.config(digest)
        tensors = load_file(str(self.path(digest) / WEIGHTS))
        if train:
            path = self._check_train(digest, config)
            if path is not None:
                tensors.update(load_file(str(path)))
        return tensors, config

    def get_some(self, digest: str, keep: Callable[[str], bool]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Verify one artifact, then read only its inference tensors whose key ``keep`` accepts: (tensors,
        config).  The others are hashed with the file but never become tensors."""
        from safetensors import safe_open

        config = self.config(digest)
        with safe_open(str(self.path(digest) / WEIGHTS), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep(k)}, config

    def bytes_on_disk(self, digest: str) -> dict[str, int]:
        """Each file's size."""
        return {p.name: p.stat().st_size for p in self.path(digest).iterdir() if p.is_file()}

    def load_module(self, digest: str, device: str | torch.device | None = None) -> torch.nn.Module:
        from ..config import build
        from ..training.state import model_tensors

        tensors, config = self.get(digest, train=False)  # sampling needs the inference weights only
        module = build(config["model"])
        base_hash = getattr(module, "base_hash", None)
        if base_hash:  # an adapter: the frozen base's weights come from its own artifact first
            if not self.exists(base_hash):
                raise SilodiffError(f"artifact {digest[:12]} is an adapter whose base {base_hash[:12]} is missing")
            module.load_base(model_tensors(self.get(base_hash, train=False)[0]))
        module.load_state_dict(model_tensors(tensors))  # an artifact from before the split has train/ state inside
        if device is not None:
            from ..devices import resolve_device

            module = module.to(resolve_device(device))
        module.artifact_hash = digest
        module.info = config.get("info", {})
        return module.eval()

    def delete(self, digest: str) -> None:
        shutil.rmtree(self.path(digest), ignore_errors=True)

    def list(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())
