"""Issue 19, items 13 and 14: hostile or broken input gives one clear ``SilodiffError``, never a traceback.

- label folders must be whole numbers 0..MAX_LABEL (``-3`` and a 20-digit name are refused);
- a decompression-bomb PNG (a huge size in its header) is refused before decoding;
- an IDX header whose dimensions overflow 64 bits reports the true size, not a negative one.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from silodiff.data import load_image_folder, read_idx
from silodiff.errors import SilodiffError


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.mark.parametrize("name", ["-3", "+3", "12345678901234567890", "３", "1e3"])
def test_bad_label_folders_are_refused(tmp_path, name):
    _png(tmp_path / "s" / "0" / "a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "s" / name / "b.png", np.ones((4, 4), np.uint8))
    with pytest.raises(SilodiffError, match="is not an integer in 0.."):
        load_image_folder(tmp_path)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


@pytest.mark.parametrize("side", [100_000, 5_000])  # beyond PIL's own bomb limit, and beyond silodiff's
def test_decompression_bomb_png_is_refused(tmp_path, side):
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    blob = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    path = tmp_path / "s" / "0" / "bomb.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(blob)
    with pytest.raises(SilodiffError, match="bomb.png.*(too large|decompression bomb)"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("dims", [(2**31, 2**31, 4), (2**31, 2**31, 3)])  # 2**64 wraps to 0; 3·2**62 to a negative
def test_idx_header_with_huge_dimensions_is_refused(tmp_path, dims):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims))  # and no data
    with pytest.raises(SilodiffError, match=r"expected \d+ bytes"):
        read_idx(path)
