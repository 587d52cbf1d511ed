"""Content-addressed artifacts: ``<hash>/model.safetensors`` + ``<hash>/config.json``.

The hash is ``sha256(config.json bytes + safetensors bytes)``.  Writes go to a
temporary folder ``tmp/<hash12>.<pid>@<host>.<random>`` that is renamed into
place, so a crash never leaves a half-written artifact, and the folder a crash
leaves behind is removed when the store is next opened (``scratch.py``); loads
re-hash the files and refuse a mismatch.  Never
pickle: weights are safetensors, everything else is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SilodiffError
from .scratch import owner_tag

if TYPE_CHECKING:  # torch is imported where tensors are touched, so reading the catalog stays light
    import torch

WEIGHTS, CONFIG = "model.safetensors", "config.json"


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
        """Write tensors + config atomically; returns the content hash (idempotent)."""
        from safetensors.torch import save as st_save

        cfg, weights = canonical_json(config), st_save(tensors)
        digest = hashlib.sha256(cfg + weights).hexdigest()
        final = self.path(digest)
        if final.exists():
            return digest
        staging = Path(tempfile.mkdtemp(prefix=f"{digest[:12]}.{owner_tag()}.", dir=self.tmp))
        _fsync_write(staging / WEIGHTS, weights)
        _fsync_write(staging / CONFIG, cfg)
        try:
            os.rename(staging, final)
        except OSError:  # a concurrent writer got there first with the same content
            shutil.rmtree(staging, ignore_errors=True)
        return digest

    def save_module(self, module: torch.nn.Module, **info: Any) -> str:
        """Save a registered module (its ``config`` rebuilds it) plus free-form ``info``."""
        return self.put(tensors_of(module), {"model": module.config, "info": info})

    def get(self, digest: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Read and verify one artifact: (tensors, config)."""
        from safetensors.torch import load as st_load

        folder = self.path(digest)
        try:
            cfg, weights = (folder / CONFIG).read_bytes(), (folder / WEIGHTS).read_bytes()
        except FileNotFoundError:
            raise SilodiffError(f"artifact {digest[:12]} is missing from the store") from None
        if hashlib.sha256(cfg + weights).hexdigest() != digest:
            raise SilodiffError(f"artifact {digest[:12]} failed its hash check: the files were modified")
        return st_load(weights), json.loads(cfg)

    def load_module(self, digest: str, device: str | torch.device | None = None) -> torch.nn.Module:
        from ..config import build
        from ..training.state import model_tensors

        tensors, config = self.get(digest)
        module = build(config["model"])
        base_hash = getattr(module, "base_hash", None)
        if base_hash:  # an adapter: the frozen base's weights come from its own artifact first
            if not self.exists(base_hash):
                raise SilodiffError(f"artifact {digest[:12]} is an adapter whose base {base_hash[:12]} is missing")
            module.load_base(model_tensors(self.get(base_hash)[0]))
        module.load_state_dict(model_tensors(tensors))  # checkpoints also carry train/ state
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
