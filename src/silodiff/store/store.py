"""A store directory: ``catalog.sqlite`` + ``artifacts/`` + ``data/`` (+ ``tmp/``).

Data are kept per source as fixed-size chunk files ``data/<source>/<name>.safetensors``
(uint8 pixels and labels; the sample ids in the file's metadata; the name a hash
of the bytes), listed in the catalog's ``chunks`` table, each sample's chunk and
row in ``sample_chunks``.  Ingest appends chunks; forgetting rewrites only the
chunks that hold forgotten samples.  The catalog is the authority: a sample
exists when the catalog lists it as live, so a crash between writing a chunk and
registering it leaves nothing visible (and the unlisted file is removed).  A
store of the old layout (one ``data/<source>.safetensors`` a source) is
migrated to chunks when it is opened.  A sample's pixels are stored once, with
the source that registered it; a forgotten sample is never stored again unless explicitly re-admitted
(``ingest_report``).  Opening a store removes what killed writers left in
``tmp/`` (``scratch.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SilodiffError
from .artifacts import ArtifactStore, _fsync_write
from .catalog import Catalog
from .locks import file_lock, try_file_lock
from .scratch import clean_stale, part_path

if TYPE_CHECKING:  # torch and the data package are imported where pixels are touched: catalog reads stay light
    import torch

    from ..data import ChunkedSamples, SampleSet

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
        self._tidy_data()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- data ----------------------------------------------------------------
    def _source_dir(self, source: str) -> Path:
        return self.data_dir / check_name(source, "source name")

    def chunk_path(self, chunk: str) -> Path:
        """The file of a registered chunk (``chunk`` is ``<source>/<name>.safetensors``)."""
        return self.data_dir / chunk

    def image_shape(self) -> tuple[int, ...] | None:
        """(c, h, w) of the stored images, from one chunk's header (no pixels read); None when nothing is stored."""
        from ..data.chunked import chunk_shape

        row = self.catalog.db.execute("SELECT chunk FROM chunks WHERE n > 0 LIMIT 1").fetchone()
        return None if row is None else chunk_shape(self.chunk_path(row[0]))[1:]

    def _stage_chunk(self, source: str, part: SampleSet) -> dict[str, Any]:
        """Write one chunk file into ``tmp/`` (renamed into ``data/<source>/`` by the caller)."""
        import hashlib

        from ..data.chunked import chunk_blob, chunk_name

        blob = chunk_blob(part.pixels, part.labels, part.sample_ids)
        name = chunk_name(blob)
        tmp = part_path(self.root / "tmp", f"{source}-{name}")
        _fsync_write(tmp, blob)
        return {"chunk": f"{source}/{name}", "tmp": tmp, "source": source, "ids": list(part.sample_ids),
                "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}

    def _place(self, staged: list[dict[str, Any]]) -> None:
        """Rename staged chunks into ``data/<source>/`` (not yet registered: the caller's transaction does that)."""
        for st in staged:
            final = self.chunk_path(st["chunk"])
            final.parent.mkdir(exist_ok=True)
            os.replace(st["tmp"], final)

    def _unplace(self, staged: list[dict[str, Any]]) -> None:
        for st in staged:
            st["tmp"].unlink(missing_ok=True)
            self.chunk_path(st["chunk"]).unlink(missing_ok=True)

    def clean_orphan_chunks(self) -> list[str]:
        """Remove chunk files the catalog does not list (left by a killed ingest or forget); call under the
        ingest lock.  Returns their names."""
        registered = {r[0] for r in self.catalog.db.execute("SELECT chunk FROM chunks")}
        removed = []
        for path in sorted(self.data_dir.glob("*/*.safetensors")):
            rel = f"{path.parent.name}/{path.name}"
            if rel not in registered:
                path.unlink(missing_ok=True)
                removed.append(rel)
        return removed

    def _tidy_data(self) -> None:
        """On open: remove orphan chunks if no writer is at work."""
        with try_file_lock(self.root / "ingest.lock") as mine:
            if mine:
                self.clean_orphan_chunks()

    def ingest(self, data: SampleSet | Iterable[SampleSet], dataset: str, **options: Any) -> int:
        """Store the pixels, then register the samples; returns the number of new samples (see ``ingest_report``)."""
        return self.ingest_report(data, dataset, **options)["added"]

    def ingest_report(self, data: SampleSet | Iterable[SampleSet], dataset: str, *, readmit_forgotten: bool = False,
                      num_classes: int | None = None, chunk_size: int | None = None) -> dict[str, Any]:
        """Store and register a data set, de-duplicated against the whole catalog; returns what happened.

        ``data`` is a ``SampleSet`` or an iterable of them (streamed: only one part and the
        unfinished chunks are held at a time).  Pixels are appended as new chunk files of
        ``chunk_size`` samples (default ``CHUNK_SIZE``) under ``data/<source>/``; existing
        chunks are never rewritten.  All or nothing: the chunks are staged in ``tmp/``,
        renamed into place and registered with the samples in one catalog transaction; on
        any error the new files are removed.

        Each sample id (a hash of pixels and label) is stored once, with the source that registered it:

        - unknown: stored in its source's chunks and registered (``added``);
        - live under the same source: nothing to do (``already_stored``);
        - live under another source: not stored again (``held_elsewhere``): it stays that
          source's sample, and forgetting it forgets the one copy;
        - forgotten: skipped (``skipped_forgotten``): a forgotten sample stays forgotten.
          ``readmit_forgotten=True`` stores it again under the incoming source
          (``readmitted``) and records the new consent as a ``readmit`` event.

        The class count is fixed by the first ingest (``num_classes``, default max label + 1)
        and recorded in the catalog; a later label outside it is an error.
        """
        import torch

        from ..data import SampleSet
        from ..data.chunked import CHUNK_SIZE

        size = int(chunk_size or CHUNK_SIZE)
        if size < 1:
            raise SilodiffError(f"chunk_size must be ≥ 1, got {size}")
        parts = [data] if isinstance(data, SampleSet) else data
        with file_lock(self.root / "ingest.lock"):  # one writer of data at a time
            self.clean_orphan_chunks()
            classes = self.catalog.num_classes
            fixed = classes is not None
            if fixed and num_classes is not None and int(num_classes) != classes:
                raise SilodiffError(f"the store's class count is fixed at {classes} (by its first ingest); "
                                    f"cannot change it to {num_classes}")
            limit = classes if fixed else (None if num_classes is None else int(num_classes))
            shape = self.image_shape()
            report = {"loaded": 0, "added": 0, "already_stored": 0, "held_elsewhere": 0,
                      "skipped_forgotten": 0, "readmitted": 0, "num_classes": classes}
            seen: set[str] = set()
            pending: dict[str, list[SampleSet]] = {}
            staged: list[dict[str, Any]] = []
            new_ids, new_labels, new_sources, again_ids, again_sources = [], [], [], [], []
            top = -1

            def flush(source: str, final: bool) -> None:
                held = pending.pop(source, [])
                if not held:
                    return
                merged = held[0] if len(held) == 1 else SampleSet(
                    torch.cat([p.pixels for p in held]), torch.cat([p.labels for p in held]),
                    [s for p in held for s in p.sample_ids], [s for p in held for s in p.sources])
                k = 0
                while len(merged) - k >= size or (final and k < len(merged)):
                    staged.append(self._stage_chunk(source, merged.subset(merged.sample_ids[k : k + size])))
                    k += size
                if k < len(merged):
                    pending[source] = [merged.subset(merged.sample_ids[k:])]

            try:
                for part in parts:
                    if len(part) == 0:
                        continue
                    if shape is not None and tuple(part.image_shape) != tuple(shape):
                        raise SilodiffError(f"images of shape {part.image_shape} do not match the store's {shape}")
                    shape = tuple(part.image_shape)
                    for source in sorted(set(part.sources)):  # validate every name before anything is registered
                        self._source_dir(source)
                    labels = part.labels.tolist()
                    if min(labels) < 0:
                        raise SilodiffError(f"label {min(labels)} is negative: labels are 0..C-1")
                    top = max(top, max(labels))
                    if limit is not None and top >= limit:
                        why = "fixed by its first ingest" if fixed else "as given"
                        raise SilodiffError(
                            f"label {top} is outside the store's {limit} classes (0..{limit - 1}, {why})")
                    fresh = [k for k, sid in enumerate(part.sample_ids) if sid not in seen]
                    known = self._registered([part.sample_ids[k] for k in fresh])
                    keep = []
                    for k in fresh:
                        sid, src = part.sample_ids[k], part.sources[k]
                        seen.add(sid)
                        report["loaded"] += 1
                        row = known.get(sid)
                        if row is None:
                            keep.append(k)
                            new_ids.append(sid)
                            new_labels.append(labels[k])
                            new_sources.append(src)
                        elif row["forgotten_at"] is not None:
                            if readmit_forgotten:
                                keep.append(k)
                                again_ids.append(sid)
                                again_sources.append(src)
                            else:
                                report["skipped_forgotten"] += 1
                        elif row["source"] == src:
                            report["already_stored"] += 1
                        else:
                            report["held_elsewhere"] += 1
                    stored = part.subset([part.sample_ids[k] for k in keep])
                    for source in sorted(set(stored.sources)):
                        pending.setdefault(source, []).append(stored.where([s == source for s in stored.sources]))
                        flush(source, final=False)
                if report["loaded"] == 0:
                    raise SilodiffError("nothing to ingest: the data set is empty")
                for source in sorted(pending):
                    flush(source, final=True)
                if limit is None:
                    classes = top + 1
                report["num_classes"] = classes if classes is not None else limit
                report["added"], report["readmitted"] = len(new_ids) + len(again_ids), len(again_ids)
                self._place(staged)
                with self.catalog.transaction():
                    if not fixed:
                        self.catalog.set_num_classes(report["num_classes"])
                    self.catalog.add_samples(new_ids, new_labels, new_sources, dataset)
                    self.catalog.readmit(again_ids, again_sources, dataset)
                    for st in staged:
                        self.catalog.add_chunk(st["chunk"], st["source"], st["ids"], st["bytes"], st["sha256"])
            except BaseException:
                self._unplace(staged)  # nothing half-registered: the new chunk files go
                raise
        return report

    def drop_dead_rows(self) -> dict[str, Any]:
        """Rewrite the chunks that store samples no longer live there (forgotten): only those chunks.

        Each affected chunk is written again without those rows (a new, content-named file),
        switched in the catalog in one transaction, then the old file is removed.  A crash
        leaves the old or the new file unregistered; ``clean_orphan_chunks`` (run here, by
        every ingest and when a store opens) removes it.  Returns the chunks rewritten and
        the bytes written.
        """
        from ..data.chunked import read_chunk

        out = {"chunks_rewritten": 0, "chunks_removed": 0, "bytes_written": 0}
        with file_lock(self.root / "ingest.lock"):
            self.clean_orphan_chunks()
            for chunk in self.catalog.chunks_holding_dead():
                path = self.chunk_path(chunk)
                source = chunk.split("/", 1)[0]
                live = self.catalog.live_in_chunk(chunk)
                old = read_chunk(path, source)
                keep = old.where([sid in live for sid in old.sample_ids])
                staged = [self._stage_chunk(source, keep)] if len(keep) else []
                try:
                    self._place(staged)
                    with self.catalog.transaction():
                        self.catalog.drop_chunk(chunk)
                        for st in staged:
                            self.catalog.add_chunk(st["chunk"], source, st["ids"], st["bytes"], st["sha256"])
                except BaseException:
                    self._unplace(staged)
                    raise
                path.unlink(missing_ok=True)
                out["chunks_rewritten" if staged else "chunks_removed"] += 1
                out["bytes_written"] += sum(st["bytes"] for st in staged)
        return out

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

    @property
    def num_classes(self) -> int | None:
        """The store's fixed class count (``None`` before the first ingest)."""
        return self.catalog.num_classes

    def clean_tmp(self) -> list[str]:
        """Remove what crashed writers left in ``tmp/`` (staging folders, ``.part`` files); returns their names."""
        return clean_stale(self.root / "tmp")

    def source_names(self) -> list[str]:
        return [s["name"] for s in self.catalog.sources()]

    def samples(self, ids: list[str] | None = None, source: str | None = None) -> ChunkedSamples:
        """Live samples (all, of one source, or exactly ``ids`` in that order), read lazily from their chunks."""
        import numpy as np
        import torch

        from ..data.chunked import ChunkedSamples

        chunk_index: dict[str, int] = {}
        chunk_col, row_col, label_col, id_blocks, block = [], [], [], [], []
        unknown, count = [], 0
        for _, sid, label, chunk, row in self.catalog.live_positions(ids, source):
            if chunk is None or (source is not None and ids is not None and not chunk.startswith(source + "/")):
                unknown.append(sid)
                continue
            c = chunk_index.setdefault(chunk, len(chunk_index))
            chunk_col.append(c)
            row_col.append(row)
            label_col.append(label)
            block.append(sid)
            count += 1
            if len(block) == 65536:
                id_blocks.append(np.asarray(block, dtype="S64"))
                block = []
        if ids is None and not count:
            raise SilodiffError(f"the store {self.root} holds no samples" + (f" of source {source!r}" if source else ""))
        if unknown:
            raise SilodiffError(f"{len(unknown)} sample id(s) are not live in the store, e.g. {unknown[0]}")
        id_blocks.append(np.asarray(block, dtype="S64"))
        shape = self.image_shape()
        if shape is None:
            raise SilodiffError(f"the store {self.root} holds no samples")
        paths = [self.chunk_path(c) for c in chunk_index]
        return ChunkedSamples(paths, [c.split("/", 1)[0] for c in chunk_index], np.asarray(chunk_col, dtype=np.int32),
                              np.asarray(row_col, dtype=np.int32), torch.as_tensor(label_col, dtype=torch.int64),
                              np.concatenate(id_blocks), shape)

    def dataset(self, ids: list[str] | None = None, source: str | None = None) -> SampleSet:
        """Live samples (all, of one source, or exactly ``ids`` in that order) as one in-memory ``SampleSet``."""
        return self.samples(ids, source).load()

    def training_set(self, ids: list[str] | None = None) -> SampleSet | ChunkedSamples:
        """What to train on: the samples in memory when their pixels fit in ``IN_MEMORY_BYTES``, else streamed."""
        from ..data.chunked import IN_MEMORY_BYTES

        data = self.samples(ids)
        return data.load() if data.nbytes <= IN_MEMORY_BYTES else data

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
