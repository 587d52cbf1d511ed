"""Samples read lazily from fixed-size chunk files: data larger than memory.

A store keeps each source's pixels as safetensors *chunks* of at most
``CHUNK_SIZE`` samples (``pixels`` uint8 (n, c, h, w), ``labels`` int64 (n,),
the sample ids in the metadata).  ``ChunkedSamples`` is a torch ``Dataset``
over a list of samples given as (chunk, row) positions: it reads a chunk only
when a batch needs it and keeps a few decoded chunks per process (LRU), so a
store of any size trains in bounded memory.  ``ChunkBatches`` shuffles for such
a reader: each epoch visits the chunks in a random order, a window of chunks
at a time, and permutes the rows of each window (so a batch mixes several
chunks, and consecutive batches reuse the cached ones).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import SilodiffError
from .dataset import SampleSet, to_unit_range

CHUNK_SIZE = int(os.environ.get("SILODIFF_CHUNK_SIZE", 4096))  # samples per chunk file
# a set of training samples up to this many bytes of uint8 pixels is read into memory; a larger one is streamed
IN_MEMORY_BYTES = int(float(os.environ.get("SILODIFF_IN_MEMORY_MB", 256)) * 2**20)
FEW_ROWS = 32  # a read of at most this many rows of an uncached chunk reads just those rows
WINDOW = 4  # chunks whose rows are shuffled together (ChunkBatches)


def chunk_blob(pixels: torch.Tensor, labels: torch.Tensor, sample_ids: Sequence[str]) -> bytes:
    """The bytes of one chunk file."""
    from safetensors.torch import save as st_save

    return st_save({"pixels": pixels.contiguous(), "labels": labels.to(torch.int64).contiguous()},
                   metadata={"sample_ids": json.dumps(list(sample_ids))})


def chunk_name(blob: bytes) -> str:
    """A chunk's file name: content-addressed, so a rewritten chunk never overwrites the one it replaces."""
    return hashlib.sha256(blob).hexdigest()[:24] + ".safetensors"


def read_chunk(path: str | Path, source: str = "") -> SampleSet:
    """One chunk file as a ``SampleSet`` (sources all ``source``)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            ids = json.loads(f.metadata()["sample_ids"])
            return SampleSet(f.get_tensor("pixels"), f.get_tensor("labels"), ids, [source] * len(ids))
    except SilodiffError:
        raise
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise SilodiffError(f"{path}: damaged data shard ({type(exc).__name__}: {exc})") from None


def chunk_pixels(path: str | Path) -> torch.Tensor:
    """The uint8 pixels of one chunk file (the whole chunk, read at once; the file is closed after)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("pixels")
    except Exception as exc:
        raise SilodiffError(f"{path}: damaged data shard ({type(exc).__name__}: {exc})") from None


def chunk_shape(path: str | Path) -> tuple[int, ...]:
    """(n, c, h, w) of a chunk file from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return tuple(f.get_slice("pixels").get_shape())
    except Exception as exc:
        raise SilodiffError(f"{path}: damaged data shard ({type(exc).__name__}: {exc})") from None


def _chunk_rows(path: str | Path, rows: Sequence[int]) -> torch.Tensor:
    """Some rows of a chunk's pixels, each read on its own (``get_slice``)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            pixels = f.get_slice("pixels")
            return torch.cat([pixels[r : r + 1] for r in rows])
    except Exception as exc:
        raise SilodiffError(f"{path}: damaged data shard ({type(exc).__name__}: {exc})") from None


class ChunkedSamples(torch.utils.data.Dataset):
    """Samples held in chunk files, read lazily; position ``p`` is ``chunk_paths[chunk[p]]``, row ``row[p]``.

    Indexed by a tensor of positions, it returns a whole batch ``(uint8 pixels, labels, positions)``
    (the training loop's convention); by an int, one item like ``SampleSet``.  ``load()`` reads
    everything into a ``SampleSet`` (for sets that fit in memory).
    """

    def __init__(self, chunk_paths: Sequence[str | Path], chunk_sources: Sequence[str], chunk: np.ndarray,
                 row: np.ndarray, labels: torch.Tensor, sample_ids: np.ndarray, image_shape: tuple[int, ...],
                 cache_chunks: int = WINDOW + 2):
        self.chunk_paths = [str(p) for p in chunk_paths]
        self.chunk_sources = list(chunk_sources)
        self.chunk, self.row = np.asarray(chunk, dtype=np.int32), np.asarray(row, dtype=np.int32)
        self.labels = labels
        self._ids = np.asarray(sample_ids, dtype="S64")  # fixed-width bytes: a few dozen bytes a sample
        self._shape = tuple(image_shape)
        self.cache_chunks = cache_chunks
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.chunk)

    def __getstate__(self) -> dict:  # a DataLoader worker starts with an empty cache
        return {**self.__dict__, "_cache": OrderedDict()}

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def nbytes(self) -> int:
        """Bytes of uint8 pixels the samples take in memory."""
        return len(self) * int(np.prod(self._shape))

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self) else 0

    @property
    def sample_ids(self) -> list[str]:
        return [s.decode() for s in self._ids.tolist()]

    def ids_of(self, positions: Sequence[int]) -> list[str]:
        return [s.decode() for s in self._ids[np.asarray(positions, dtype=np.int64)].tolist()]

    @property
    def sources(self) -> list[str]:
        return [self.chunk_sources[c] for c in self.chunk.tolist()]

    def _pixels_of(self, c: int) -> torch.Tensor:
        hit = self._cache.get(c)
        if hit is not None:
            self._cache.move_to_end(c)
            return hit
        pixels = chunk_pixels(self.chunk_paths[c])
        self._cache[c] = pixels
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return pixels

    def pixels_at(self, positions: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """uint8 pixels of these positions, (b, c, h, w), reading each chunk they touch once."""
        pos = np.asarray(positions, dtype=np.int64)
        out = torch.empty((len(pos), *self._shape), dtype=torch.uint8)
        chunks, rows = self.chunk[pos], self.row[pos]
        for c in np.unique(chunks).tolist():
            where = np.nonzero(chunks == c)[0]
            if c not in self._cache and len(where) <= FEW_ROWS:  # a few rows: read them alone, not the chunk
                out[torch.from_numpy(where)] = _chunk_rows(self.chunk_paths[c], rows[where].tolist())
            else:
                out[torch.from_numpy(where)] = self._pixels_of(c)[torch.from_numpy(rows[where].astype(np.int64))]
        return out

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return to_unit_range(self.pixels_at([int(i)])[0]), int(self.labels[i]), self.ids_of([i])[0], \
                self.chunk_sources[self.chunk[i]]
        rows = torch.as_tensor(i, dtype=torch.long)
        return self.pixels_at(rows), self.labels[rows], rows

    def subset(self, ids: Sequence[str]) -> "ChunkedSamples":
        """The samples with these ids, in the given order; unknown ids are an error."""
        index = {s: k for k, s in enumerate(self._ids.tolist())}
        wanted = [s.encode() for s in ids]
        missing = [s for s in wanted if s not in index]
        if missing:
            raise SilodiffError(f"{len(missing)} unknown sample id(s), e.g. {missing[0].decode()}")
        pos = np.asarray([index[s] for s in wanted], dtype=np.int64)
        return ChunkedSamples(self.chunk_paths, self.chunk_sources, self.chunk[pos], self.row[pos],
                              self.labels[torch.from_numpy(pos)], self._ids[pos], self._shape, self.cache_chunks)

    def batches_in_order(self, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(positions, uint8 pixels) over all samples, chunk by chunk (each chunk read once, whole chunks
        joined up to ``batch_size`` rows; a chunk wholly in the set is used without a gather): for scans."""
        order = np.lexsort((self.row, self.chunk))
        keys, starts = np.unique(self.chunk[order], return_index=True)
        held_pos, held_px, n = [], [], 0
        for c, group in zip(keys.tolist(), np.split(order, starts[1:])):
            pixels = chunk_pixels(self.chunk_paths[c])
            rows = self.row[group]
            if not (len(rows) == len(pixels) and np.array_equal(rows, np.arange(len(pixels)))):
                pixels = pixels[torch.from_numpy(rows.astype(np.int64))]
            held_pos.append(group)
            held_px.append(pixels)
            n += len(group)
            if n >= batch_size:
                yield np.concatenate(held_pos), (held_px[0] if len(held_px) == 1 else torch.cat(held_px))
                held_pos, held_px, n = [], [], 0
        if held_pos:
            yield np.concatenate(held_pos), (held_px[0] if len(held_px) == 1 else torch.cat(held_px))

    def load(self) -> SampleSet:
        """Everything in memory, as a ``SampleSet``."""
        return SampleSet(self.pixels_at(np.arange(len(self))), self.labels.clone(), self.sample_ids, self.sources)

    def x(self) -> torch.Tensor:
        return self.load().x()


class ChunkBatches(torch.utils.data.Sampler):
    """Endless shuffled epochs for a chunked reader, batches of positions, drawn from ``generator``.

    Per epoch: a random order of the chunks; the rows of each window of ``window`` consecutive
    chunks (in that order) permuted together; the resulting order split into batches (the
    last one of an epoch may be short).  A batch mixes the window's chunks; a reader caching
    ``window + 2`` chunks reads each chunk once per epoch.
    """

    def __init__(self, chunk: np.ndarray, batch_size: int, generator: torch.Generator, window: int = WINDOW):
        self.batch_size, self.generator, self.window = batch_size, generator, window
        chunk = np.asarray(chunk)
        order = np.argsort(chunk, kind="stable")
        ids, starts = np.unique(chunk[order], return_index=True)
        self.groups = [torch.from_numpy(g.astype(np.int64)) for g in np.split(order, starts[1:])] if len(order) else []

    def __iter__(self) -> Iterator[torch.Tensor]:
        if not self.groups:
            return
        while True:
            chunks = torch.randperm(len(self.groups), generator=self.generator, device=self.generator.device).cpu()
            carry = torch.zeros(0, dtype=torch.long)
            for w in range(0, len(chunks), self.window):
                rows = torch.cat([self.groups[c] for c in chunks[w : w + self.window].tolist()])
                perm = torch.randperm(len(rows), generator=self.generator, device=self.generator.device).cpu()
                carry = torch.cat([carry, rows[perm]])
                while len(carry) >= self.batch_size:
                    yield carry[: self.batch_size]
                    carry = carry[self.batch_size :]
            if len(carry):
                yield carry
