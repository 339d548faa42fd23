"""Image helpers every stage shares: the one float [-1, 1] <-> uint8 mapping, grids and PNGs.

No Dagster and no torch: the cores (dicom, model, metrics, report) and the assets all use it.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from PIL import Image

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


def to_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 passes through; floats are taken to be in [-1, 1] and packed by :func:`pack_images`."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return pack_images(images)


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile N x H x W grayscale images into one uint8 image (padding drawn black)."""
    images = to_uint8(images)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"image_grid needs a non-empty N x H x W batch, got shape {images.shape}")
    n, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y:y + h, x:x + w] = image
    return grid


def png_bytes(image: np.ndarray) -> bytes:
    """One grayscale (H x W) or RGB (H x W x 3) image as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def grid_png(images: np.ndarray, columns: int | None = None) -> bytes:
    return png_bytes(image_grid(images, columns))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows the PNG inline in the Dagster UI's metadata panel."""
    return f"![{alt}]({data_uri(png)})"


def preview_grid_png(images: np.ndarray, max_images: int = 16, max_side: int = 48) -> bytes:
    """A small grid PNG (first ``max_images``, each at most ``max_side`` px) to embed in JSON."""
    images = to_uint8(images)[:max_images]
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"preview_grid_png needs a non-empty N x H x W batch, got shape {images.shape}")
    if images.shape[1] > max_side or images.shape[2] > max_side:
        images = np.stack([
            np.asarray(Image.fromarray(image).resize((max_side, max_side), Image.Resampling.BILINEAR))
            for image in images
        ])
    return grid_png(images)
