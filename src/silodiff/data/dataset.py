"""The one way silodiff holds training data: a ``SampleSet``.

Every item is ``(x in [-1, 1], label, sample_id, source)``.  Pixels are kept as
uint8 so that ``sample_id = sha256(pixel bytes + label)`` is stable across runs
and machines, and converted to float only in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SilodiffError
from ..ids import sample_id


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1]."""
    return pixels.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] → uint8 [0, 255] (clamped)."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


@dataclass
class SampleSet(torch.utils.data.Dataset):
    """Images with labels, sample ids and sources, indexable like a torch dataset."""

    pixels: torch.Tensor  # (n, c, h, w) uint8
    labels: torch.Tensor  # (n,) int64
    sample_ids: list[str]
    sources: list[str]

    def __post_init__(self) -> None:
        n = len(self.pixels)
        if self.pixels.dtype != torch.uint8 or self.pixels.ndim != 4:
            raise SilodiffError("SampleSet pixels must be a uint8 tensor of shape (n, c, h, w)")
        if not (len(self.labels) == len(self.sample_ids) == len(self.sources) == n):
            raise SilodiffError("SampleSet fields have different lengths")
        self._index = {sid: i for i, sid in enumerate(self.sample_ids)}

    @classmethod
    def from_arrays(cls, pixels: np.ndarray, labels: Sequence[int], sources: Sequence[str]) -> "SampleSet":
        """Build from uint8 (n, c, h, w) pixels, computing sample ids; exact duplicates are kept once."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        ids = [sample_id(p, y) for p, y in zip(pixels, labels)]
        keep, seen = [], set()
        for i, sid in enumerate(ids):
            if sid not in seen:
                seen.add(sid)
                keep.append(i)
        return cls(
            pixels=torch.from_numpy(pixels[keep]),
            labels=torch.as_tensor(np.asarray(labels)[keep], dtype=torch.int64),
            sample_ids=[ids[i] for i in keep],
            sources=[str(sources[i]) for i in keep],
        )

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str, str]:
        return to_unit_range(self.pixels[i]), int(self.labels[i]), self.sample_ids[i], self.sources[i]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self) else 0

    def pixels_at(self, positions: Sequence[int] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 pixels of these rows (as ``ChunkedSamples.pixels_at`` reads them from chunk files)."""
        return self.pixels[torch.as_tensor(np.asarray(positions), dtype=torch.long)]

    def load(self) -> "SampleSet":
        """Itself: already in memory (``ChunkedSamples.load`` reads a streamed set into one)."""
        return self

    def x(self) -> torch.Tensor:
        """All images as float in [-1, 1], (n, c, h, w)."""
        return to_unit_range(self.pixels)

    def subset(self, ids: Sequence[str]) -> "SampleSet":
        """The samples with these ids, in the given order; unknown ids are an error."""
        missing = [s for s in ids if s not in self._index]
        if missing:
            raise SilodiffError(f"{len(missing)} unknown sample id(s), e.g. {missing[0]}")
        rows = torch.as_tensor([self._index[s] for s in ids], dtype=torch.long)
        return SampleSet(
            self.pixels[rows], self.labels[rows], [self.sample_ids[i] for i in rows.tolist()],
            [self.sources[i] for i in rows.tolist()],
        )

    def where(self, mask: Sequence[bool]) -> "SampleSet":
        return self.subset([s for s, keep in zip(self.sample_ids, mask) if keep])

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Index tensors of one shuffled epoch (the last batch may be short)."""
        order = torch.randperm(len(self), generator=generator)
        yield from order.split(batch_size)
