"""The one mapping between float images in [-1, 1] and the compact uint8 stored form."""

from __future__ import annotations

from typing import Any

import numpy as np

UINT8_SCALE = 127.5
UINT8_OFFSET = -1.0


def pack_images(images: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> uint8 (u = round((x + 1) * 127.5)); values outside are clipped."""
    images = np.asarray(images, dtype=np.float32)
    # NaN would silently become an arbitrary byte (usually 0): a diverged model or a bad
    # rescale upstream must fail here, not be stored as plausible-looking black pixels.
    nan_count = int(np.count_nonzero(np.isnan(images)))
    if nan_count:
        raise ValueError(f"pack_images: {nan_count} NaN value(s) in images of shape {images.shape}")
    scaled = (np.clip(images, -1.0, 1.0) + 1.0) * UINT8_SCALE
    return np.rint(scaled).astype(np.uint8)


def unpack_images(packed: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1] (x = u / 127.5 - 1), the inverse of :func:`pack_images`."""
    return packed.astype(np.float32) / UINT8_SCALE + UINT8_OFFSET


def encoding_attrs() -> dict[str, Any]:
    """Recorded beside packed images so a reader can invert the mapping without this code."""
    return {"encoding": "uint8", "decode": "x = u / 127.5 - 1", "scale": UINT8_SCALE, "offset": UINT8_OFFSET}
