"""A store directory: ``catalog.sqlite`` + ``artifacts/`` + ``data/`` (+ ``tmp/``).

Data are kept per source as ``data/<source>.safetensors`` (uint8 pixels and
labels; the sample ids in the file's metadata), written atomically.  The
catalog is the authority: a sample exists when the catalog lists it as live,
so a crash between writing a shard and registering it leaves nothing visible.
A sample's pixels are stored once, in the shard of the source that registered
it; a forgotten sample is never stored again unless explicitly re-admitted
(``ingest_report``).  Opening a store removes what killed writers left in
``tmp/`` (``scratch.py``).
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
from .locks import file_lock
from .scratch import clean_stale, part_path

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
        self.clean_tmp()  # what a killed writer left (weights or pixels that may hold forgotten samples)

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

    def shard_ids(self, source: str) -> set[str]:
        """The sample ids a data shard on disk lists (its metadata alone; empty when absent)."""
        from safetensors import safe_open

        path = self._shard(source)
        if not path.exists():
            return set()
        try:
            with safe_open(str(path), framework="pt") as f:
                return set(json.loads(f.metadata()["sample_ids"]))
        except Exception as exc:
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
        tmp = part_path(self.root / "tmp", path.name)
        blob = st_save(
            {"pixels": data.pixels.contiguous(), "labels": data.labels.contiguous()},
            metadata={"sample_ids": json.dumps(data.sample_ids)},
        )
        _fsync_write(tmp, blob)
        os.replace(tmp, path)

    def ingest(self, data: SampleSet, dataset: str, **options: Any) -> int:
        """Store the pixels, then register the samples; returns the number of new samples (see ``ingest_report``)."""
        return self.ingest_report(data, dataset, **options)["added"]

    def ingest_report(self, data: SampleSet, dataset: str, *, readmit_forgotten: bool = False,
                      num_classes: int | None = None) -> dict[str, Any]:
        """Store and register a data set, de-duplicated against the whole catalog; returns what happened.

        Each sample id (a hash of pixels and label) is stored once, in the shard of the
        source that registered it:

        - unknown: stored in its source's shard and registered (``added``);
        - live under the same source: nothing to do (``already_stored``);
        - live under another source: not stored again (``held_elsewhere``): it stays that
          source's sample, and forgetting it forgets the one copy;
        - forgotten: skipped (``skipped_forgotten``): a forgotten sample stays forgotten.
          ``readmit_forgotten=True`` stores it again under the incoming source
          (``readmitted``) and records the new consent as a ``readmit`` event.

        The class count is fixed by the first ingest (``num_classes``, default max label + 1)
        and recorded in the catalog; a later label outside it is an error.
        """
        if len(data) == 0:
            raise SilodiffError("nothing to ingest: the data set is empty")
        import torch

        from ..data import SampleSet

        shapes = {shape for n in self.source_names() if (shape := self._shard_image_shape(n))}
        if shapes and tuple(data.image_shape) not in shapes:
            raise SilodiffError(f"images of shape {data.image_shape} do not match the store's {shapes.pop()}")
        for source in sorted(set(data.sources)):  # validate every name before anything is written
            self._shard(source)
        labels = data.labels.tolist()
        if min(labels) < 0:
            raise SilodiffError(f"label {min(labels)} is negative: labels are 0..C-1")
        with file_lock(self.root / "ingest.lock"):  # shards are read, extended and replaced: one writer at a time
            classes = self.catalog.num_classes
            if classes is None:
                classes = max(labels) + 1 if num_classes is None else int(num_classes)
                fixed = False
            else:
                fixed = True
                if num_classes is not None and int(num_classes) != classes:
                    raise SilodiffError(f"the store's class count is fixed at {classes} (by its first ingest); "
                                        f"cannot change it to {num_classes}")
            if max(labels) >= classes:
                why = "fixed by its first ingest" if fixed else "as given"
                raise SilodiffError(
                    f"label {max(labels)} is outside the store's {classes} classes (0..{classes - 1}, {why})")
            known = self._registered(data.sample_ids)
            report = {"loaded": len(data), "added": 0, "already_stored": 0, "held_elsewhere": 0,
                      "skipped_forgotten": 0, "readmitted": 0, "num_classes": classes}
            admit, readmit = [], []
            for sid, src in zip(data.sample_ids, data.sources):
                row = known.get(sid)
                if row is None:
                    admit.append(sid)
                elif row["forgotten_at"] is not None:
                    if readmit_forgotten:
                        readmit.append(sid)
                    else:
                        report["skipped_forgotten"] += 1
                elif row["source"] == src:
                    report["already_stored"] += 1
                else:
                    report["held_elsewhere"] += 1
            report["added"], report["readmitted"] = len(admit) + len(readmit), len(readmit)
            stored = data.subset(admit + readmit)
            sources = sorted(set(stored.sources))
            previous = {source: self._read_shard(source) for source in sources}
            try:
                for source in sources:
                    self.write_shard(source, self._merged_shard(source, previous[source], stored))
                with self.catalog.transaction():
                    if not fixed:
                        self.catalog.set_num_classes(classes)
                    new = stored.subset(admit)
                    self.catalog.add_samples(new.sample_ids, new.labels.tolist(), new.sources, dataset)
                    again = stored.subset(readmit)
                    self.catalog.readmit(again.sample_ids, again.sources, dataset)
            except BaseException:
                # nothing half-registered: put every shard back as it was (or remove the new ones)
                for source, old in previous.items():
                    if old is None:
                        self._shard(source).unlink(missing_ok=True)
                    else:
                        self.write_shard(source, old)
                raise
        return report

    def _registered(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Catalog rows (source, forgotten_at) of the given ids that are registered, live or forgotten."""
        out = {}
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.catalog.db.execute(
                f"SELECT sample_id, source, forgotten_at FROM samples WHERE sample_id IN ({marks})", chunk)
            out.update({r[0]: {"source": r[1], "forgotten_at": r[2]} for r in rows})
        return out

    def _merged_shard(self, source: str, old: SampleSet | None, stored: SampleSet) -> SampleSet:
        """A source's shard: its live registered rows already on disk, plus this ingest's samples of the source."""
        import torch

        from ..data import SampleSet

        new = stored.where([s == source for s in stored.sources])
        if old is None:
            return new
        live, incoming = {r["sample_id"] for r in self.catalog.sample_rows(source)}, set(new.sample_ids)
        old = old.where([sid in live and sid not in incoming for sid in old.sample_ids])
        return SampleSet(torch.cat([old.pixels, new.pixels]), torch.cat([old.labels, new.labels]),
                         old.sample_ids + new.sample_ids, old.sources + new.sources)

    @property
    def num_classes(self) -> int | None:
        """The store's fixed class count (``None`` before the first ingest)."""
        return self.catalog.num_classes

    def clean_tmp(self) -> list[str]:
        """Remove what crashed writers left in ``tmp/`` (staging folders, ``.part`` files); returns their names."""
        return clean_stale(self.root / "tmp")

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
