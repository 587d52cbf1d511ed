"""A store directory: ``catalog.sqlite`` + ``artifacts/`` + ``data/`` (+ ``tmp/``).

Data are kept per source as ``data/<source>.safetensors`` (uint8 pixels and
labels; the sample ids in the file's metadata), written atomically.  The
catalog is the authority: a sample exists when the catalog lists it as live,
so a crash between writing a shard and registering it leaves nothing visible.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SilodiffError
from .artifacts import ArtifactStore, _fsync_write
from .catalog import Catalog

if TYPE_CHECKING:  # torch and the data package are imported where pixels are touched: catalog reads stay light
    import torch

    from ..data import SampleSet

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str, what: str = "name") -> str:
    if not _SAFE_NAME.match(name):
        raise SilodiffError(f"bad {what} {name!r}: use letters, digits, '.', '_' or '-' (max 128)")
    return name


class Store:
    """Everything silodiff keeps about one project, in one folder."""

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            if not create:
                raise SilodiffError(f"store {self.root} does not exist (run `silodiff data ingest` first)")
            self.root.mkdir(parents=True)
        elif not self.root.is_dir():
            raise SilodiffError(f"store {self.root} is not a directory")
        self.catalog = Catalog(self.root / "catalog.sqlite")
        self.artifacts = ArtifactStore(self.root / "artifacts")
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- data ----------------------------------------------------------------
    def _shard(self, source: str) -> Path:
        return self.data_dir / f"{check_name(source, 'source name')}.safetensors"

    def _read_shard(self, source: str) -> SampleSet | None:
        from safetensors import safe_open

        from ..data import SampleSet

        path = self._shard(source)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                ids = json.loads(f.metadata()["sample_ids"])
                return SampleSet(f.get_tensor("pixels"), f.get_tensor("labels"), ids, [source] * len(ids))
        except Exception as exc:  # safetensors raises its own error type for a damaged file
            raise SilodiffError(f"{path}: damaged data shard ({type(exc).__name__}: {exc})") from None

    def _shard_image_shape(self, source: str) -> tuple[int, ...] | None:
        """(c, h, w) of a stored shard from its header alone (no pixels read); None if absent or empty."""
        from safetensors import safe_open

        path = self._shard(source)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                shape = tuple(f.get_slice("pixels").get_shape())
        except Exception as exc:
            raise SilodiffError(f"{path}: damaged data shard ({type(exc).__name__}: {exc})") from None
        return shape[1:] if shape[0] else None

    def write_shard(self, source: str, data: SampleSet) -> None:
        """Atomically replace the stored copy of one source's samples."""
        from safetensors.torch import save as st_save

        path = self._shard(source)
        tmp = self.root / "tmp" / f"{path.name}.{os.getpid()}.part"
        blob = st_save(
            {"pixels": data.pixels.contiguous(), "labels": data.labels.contiguous()},
            metadata={"sample_ids": json.dumps(data.sample_ids)},
        )
        _fsync_write(tmp, blob)
        os.replace(tmp, path)

    def ingest(self, data: SampleSet, dataset: str) -> int:
        """Store the pixels, then register the samples; returns the number of new samples."""
        if len(data) == 0:
            raise SilodiffError("nothing to ingest: the data set is empty")
        import torch

        from ..data import SampleSet

        shapes = {shape for n in self.source_names() if (shape := self._shard_image_shape(n))}
        if shapes and tuple(data.image_shape) not in shapes:
            raise SilodiffError(f"images of shape {data.image_shape} do not match the store's {shapes.pop()}")
        sources = sorted(set(data.sources))
        for source in sources:  # validate every name before anything is written
            self._shard(source)
        previous = {source: self._read_shard(source) for source in sources}
        try:
            for source in sources:
                new = data.where([s == source for s in data.sources])
                old = previous[source]
                if old is not None:
                    known = set(old.sample_ids)
                    new = new.where([sid not in known for sid in new.sample_ids])
                    new = SampleSet(
                        torch.cat([old.pixels, new.pixels]), torch.cat([old.labels, new.labels]),
                        old.sample_ids + new.sample_ids, old.sources + new.sources,
                    )
                self.write_shard(source, new)
            return self.catalog.add_samples(data.sample_ids, data.labels.tolist(), data.sources, dataset)
        except BaseException:
            # nothing half-registered: put every shard back as it was (or remove the new ones)
            for source, old in previous.items():
                if old is None:
                    self._shard(source).unlink(missing_ok=True)
                else:
                    self.write_shard(source, old)
            raise

    def source_names(self) -> list[str]:
        return [s["name"] for s in self.catalog.sources()]

    def dataset(self, ids: list[str] | None = None, source: str | None = None) -> SampleSet:
        """Live samples (all, of one source, or exactly ``ids`` in that order) as one ``SampleSet``."""
        import torch

        from ..data import SampleSet

        rows = self.catalog.sample_rows(source)
        if not rows:
            raise SilodiffError(f"the store {self.root} holds no samples" + (f" of source {source!r}" if source else ""))
        live = {r["sample_id"]: r["source"] for r in rows}
        wanted = ids if ids is not None else sorted(live)
        unknown = [s for s in wanted if s not in live]
        if unknown:
            raise SilodiffError(f"{len(unknown)} sample id(s) are not live in the store, e.g. {unknown[0]}")
        needed = sorted({live[sid] for sid in wanted}) or sorted(set(live.values()))[:1]  # one shard gives an empty set its shape
        parts = [self._read_shard(s) for s in needed]  # only the shards the ids live in
        parts = [p for p in parts if p is not None]
        merged = SampleSet(
            torch.cat([p.pixels for p in parts]), torch.cat([p.labels for p in parts]),
            [sid for p in parts for sid in p.sample_ids], [src for p in parts for src in p.sources],
        )
        return merged.subset(wanted)

    # -- models ----------------------------------------------------------------
    def save(self, module: torch.nn.Module, kind: str, name: str, lineage_sets: list[str], **fields: Any) -> str:
        """Write a module's weights and register it with its lineage; returns its hash."""
        info = fields.pop("info", {})
        digest = self.artifacts.save_module(module, kind=kind, name=name, **info)
        self.catalog.add_artifact(digest, kind, name, module.config, lineage_sets, **fields)
        return digest

    def load(self, digest: str, device: str | torch.device | None = None) -> torch.nn.Module:
        """Rebuild an artifact's module (on ``device``: auto | cpu | cuda[:N] | mps; default the CPU)."""
        module = self.artifacts.load_module(self.catalog.artifact(digest)["hash"])
        if device is not None:
            from ..devices import resolve_device

            module = module.to(resolve_device(device))
        return module

    def active(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return self.catalog.artifacts(kind, active=True, name=name)
