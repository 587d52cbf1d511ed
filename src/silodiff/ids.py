"""The identity of a sample, without torch: ``sample_id = sha256(pixel bytes + decimal label)``.

It lives apart from ``data`` so that reading and verifying a store (certificates, the catalog commands)
never imports torch.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_id(pixels: np.ndarray, label: int) -> str:
    """``sha256(pixel bytes + decimal label)``: the identity of a sample everywhere."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return hashlib.sha256(pixels.tobytes() + str(int(label)).encode()).hexdigest()
