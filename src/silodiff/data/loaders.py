"""Loaders: every source of images ends up as a ``SampleSet``.

- ``digits``: scikit-learn's 1,797 8×8 digits, shipped inside scikit-learn (no download).
- ``fashion-mnist`` / any IDX pair: ``*-images-idx3-ubyte[.gz]`` + ``*-labels-idx1-ubyte[.gz]``,
  by default from Debian's ``dataset-fashion-mnist`` install path.
- an image folder ``root/<source>/<label>/*.png``: the folder names give source and label.

Bad input raises ``SilodiffError`` naming the offending file.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import SilodiffError
from .dataset import SampleSet, sample_id
from .sources import assign_sources

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
MAX_LABEL = 65535  # label folders are whole numbers 0..MAX_LABEL
MAX_IMAGE_PIXELS = 4096 * 4096  # larger images are refused from their header, before any pixel is decoded


def _with_sources(pixels: np.ndarray, labels: np.ndarray, scheme: str) -> SampleSet:
    ids = [sample_id(p, y) for p, y in zip(pixels, labels)]
    return SampleSet.from_arrays(pixels, labels, assign_sources(scheme, labels, ids))


def load_digits(sources: str = "random:4", limit: int | None = None) -> SampleSet:
    """scikit-learn digits as (n, 1, 8, 8) uint8, pixel values 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    return _with_sources(pixels, labels, sources)


def _open_maybe_gz(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SilodiffError(f"cannot read {path}: {exc}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) of unsigned bytes."""
    path = Path(path)
    data = _open_maybe_gz(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise SilodiffError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SilodiffError(f"{path} is truncated (header)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(shape)  # Python ints: a hostile header cannot overflow it
    if len(data) - header != count:
        raise SilodiffError(f"{path} is truncated or corrupt: expected {count} bytes of data, found {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).exists():
            return directory / name
    raise SilodiffError(f"no {stem}[.gz] in {directory}")


def load_idx(images: str | Path, labels: str | Path, sources: str = "random:4", limit: int | None = None) -> SampleSet:
    """An IDX image file (n, h, w) and its label file (n,)."""
    pixels, y = read_idx(images), read_idx(labels)
    if pixels.ndim != 3 or y.ndim != 1 or len(pixels) != len(y):
        raise SilodiffError(f"{images} and {labels} do not form an (n, h, w) / (n,) pair")
    if limit is not None:
        pixels, y = pixels[:limit], y[:limit]
    return _with_sources(pixels[:, None], y.astype(np.int64), sources)


def load_fashion_mnist(
    split: str = "train", root: str | Path = FASHION_MNIST_DIR, sources: str = "random:4", limit: int | None = None
) -> SampleSet:
    """Fashion-MNIST (train: 60,000, test: 10,000) from IDX files under ``root``."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise SilodiffError(f"fashion-mnist split must be train or test, not {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise SilodiffError(f"{root} not found: install Debian's dataset-fashion-mnist or pass --root")
    return load_idx(
        _find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte"), sources, limit
    )


def folder_label(path: Path) -> int:
    """The label an image's folder names: a whole number 0..MAX_LABEL in ASCII digits (no sign, no spaces)."""
    name = path.parent.name
    if not (name.isascii() and name.isdigit()) or len(name) > len(str(MAX_LABEL)) or int(name) > MAX_LABEL:
        raise SilodiffError(
            f"{path}: label folder {name!r} is not an integer in 0..{MAX_LABEL} (ASCII digits, no sign)")
    return int(name)


def _folder_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise SilodiffError(f"image folder {root} does not exist")
    files = sorted(p for p in root.glob("*/*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SilodiffError(f"no images under {root} (expected root/<source>/<label>/*.png)")
    return files


def _read_image(path: Path) -> np.ndarray:
    """One image file as uint8 (c, h, w): grey levels as one channel, anything else as RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise SilodiffError(f"{path}: image of {im.width}×{im.height} pixels is too large "
                                    f"(at most {MAX_IMAGE_PIXELS} pixels)")
            im.load()
            arr = np.asarray(im.convert("L") if im.mode in ("L", "1", "P", "I", "I;16") else im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SilodiffError(f"{path}: unreadable image ({exc})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def stream_image_folder(root: str | Path, batch: int | None = None, progress: bool = False) -> Iterator[SampleSet]:
    """``root/<source>/<label>/*.png`` read ``batch`` files at a time (default: a chunk), with a progress bar.

    Only one batch of decoded images is held at a time, so a folder of any size streams into a store.
    The folder is listed at once (a missing or empty folder is an error here, before any image is read).
    """
    from .chunked import CHUNK_SIZE

    return _folder_parts(_folder_files(Path(root)), batch or CHUNK_SIZE, progress)


def _folder_parts(files: list[Path], batch: int, progress: bool) -> Iterator[SampleSet]:
    from tqdm.auto import tqdm

    shape = None
    # the bar shows on a terminal only (None: tqdm disables itself when stderr is not a TTY)
    with tqdm(total=len(files), desc="reading images", unit="img", disable=None if progress else True, leave=False) as bar:
        for start in range(0, len(files), batch):
            pixels, labels, sources = [], [], []
            for path in files[start : start + batch]:
                label = folder_label(path)
                arr = _read_image(path)
                if shape is None:
                    shape = arr.shape
                elif arr.shape != shape:
                    raise SilodiffError(f"{path}: image of shape {arr.shape} differs from the first image's {shape}")
                pixels.append(arr)
                labels.append(label)
                sources.append(path.parent.parent.name)
                bar.update(1)
            yield SampleSet.from_arrays(np.stack(pixels), labels, sources)


def load_image_folder(root: str | Path) -> SampleSet:
    """``root/<source>/<label>/*.png``; labels are integer folder names; all images one size and mode."""
    parts = list(stream_image_folder(root))
    if len(parts) == 1:
        return parts[0]
    import torch

    merged = SampleSet(torch.cat([p.pixels for p in parts]), torch.cat([p.labels for p in parts]),
                       [s for p in parts for s in p.sample_ids], [s for p in parts for s in p.sources])
    keep, seen = [], set()
    for sid in merged.sample_ids:  # exact duplicates across batches are kept once
        if sid not in seen:
            seen.add(sid)
            keep.append(sid)
    return merged if len(keep) == len(merged) else merged.subset(keep)


def stream_dataset(name: str, *, sources: str = "random:4", limit: int | None = None, path: str | None = None,
                   progress: bool = False) -> Iterator[SampleSet]:
    """``load_dataset`` as an iterator of ``SampleSet`` parts: a folder streams batch by batch (its listing
    checked at once), the rest is loaded whole."""
    if name.partition(":")[0] == "folder":
        if not path:
            raise SilodiffError("folder data needs --path ROOT")
        return stream_image_folder(path, progress=progress)
    return iter([load_dataset(name, sources=sources, limit=limit, path=path)])


def load_dataset(name: str, *, sources: str = "random:4", limit: int | None = None, path: str | None = None) -> SampleSet:
    """Load by name: ``digits``, ``fashion-mnist[:train|test]``, ``idx`` (path = "images,labels"), ``folder`` (path)."""
    kind, _, split = name.partition(":")
    if kind == "digits":
        return load_digits(sources, limit)
    if kind == "fashion-mnist":
        return load_fashion_mnist(split or "train", path or FASHION_MNIST_DIR, sources, limit)
    if kind == "idx":
        if not path or "," not in path:
            raise SilodiffError("idx data needs --path IMAGES,LABELS")
        images, labels = path.split(",", 1)
        return load_idx(images, labels, sources, limit)
    if kind == "folder":
        if not path:
            raise SilodiffError("folder data needs --path ROOT")
        return load_image_folder(path)
    raise SilodiffError(f"unknown dataset {name!r}: use digits, fashion-mnist[:test], idx or folder")
