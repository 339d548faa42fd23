"""Per-file resource limits of ingest, checked before any pixel is decoded.

A landing zone may hold any file, written by anyone: a 132 KB file can declare a 30000 x 2
image (padded to a 30000 x 30000 square), a deflated file can inflate to gigabytes, a decoder
can spin on a crafted stream. Every header number is read through :func:`bounded_int`, and the
declared geometry is priced against :class:`IngestLimits` first, so one file can neither stall
nor exhaust a month; what exceeds a limit is one rejected row (``too_large``, ``too_small``,
``timeout``), never a failed month.

Defaults and why:

==========================  ==============  ===============================================
limit                       default         why
==========================  ==============  ===============================================
max_file_bytes              1 GiB           a large enhanced multi-frame CT; pathology WSI
                                            (several GiB) is not training material here
max_decoded_bytes           1 GiB           rows x columns x frames x samples x bytes per
                                            sample as declared (all frames: pydicom holds
                                            the whole pixel element), also the inflate bound
max_pixels_per_frame        2**26 (8192^2)  above any radiograph/mammogram (about 4k x 5k);
                                            applied to the padded square in ``pad`` geometry
                                            so a degenerate aspect cannot allocate a huge one
min_side                    16              below it a 64-pixel training image is invented
                                            by upsampling (``too_small``)
max_frames                  10000           bounds per-frame loops and frame metadata
decode_seconds              60              per file (a 4k x 5k JPEG 2000 takes ~1 s)
==========================  ==============  ===============================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Header integers are US (16-bit) or IS (the standard bounds IS to a signed 32-bit value).
MAX_HEADER_INT = 2**31 - 1


@dataclass(frozen=True)
class IngestLimits:
    """What one file may cost; every limit is checked on the header, before decoding."""

    max_file_bytes: int = 1 << 30
    max_decoded_bytes: int = 1 << 30
    max_pixels_per_frame: int = 1 << 26
    min_side: int = 16
    max_frames: int = 10_000
    decode_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_decoded_bytes", "max_pixels_per_frame", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"ingest limit {name}={getattr(self, name)} must be at least 1")
        if self.min_side < 1:
            raise ValueError(f"ingest limit min_side={self.min_side} must be at least 1")
        if not (self.decode_seconds > 0 and math.isfinite(self.decode_seconds)):
            raise ValueError(f"ingest limit decode_seconds={self.decode_seconds} must be a positive number")


def bounded_int(value: Any, low: int = 0, high: int = MAX_HEADER_INT) -> int | None:
    """An integer header value inside [low, high], or None (missing, malformed or out of range).

    Values are converted through ``int`` of a string of at most 12 characters, so a crafted
    ``99999999999999999999`` is rejected here instead of overflowing a later int64 cast.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        number = int(value)
    elif isinstance(value, int):
        number = int(value)
    else:
        text = str(value).strip()
        if not text or len(text) > 12:
            return None
        try:
            number = int(text)
        except ValueError:
            try:
                real = float(text)
            except ValueError:
                return None
            if not math.isfinite(real) or real != int(real):
                return None
            number = int(real)
    return number if low <= number <= high else None


def geometry_problem(rows: int, cols: int, frames: int, samples: int, bits: int, *, geometry: str,
                     limits: IngestLimits, file_bytes: int | None = None) -> str | None:
    """``too_large`` / ``too_small`` for a declared geometry, or None when it fits the limits."""
    if min(rows, cols) < limits.min_side:  # first: a 30000 x 2 strip is small, not large
        return "too_small"
    if file_bytes is not None and file_bytes > limits.max_file_bytes:
        return "too_large"
    if frames > limits.max_frames:
        return "too_large"
    if rows * cols > limits.max_pixels_per_frame:
        return "too_large"
    if geometry == "pad" and max(rows, cols) ** 2 > limits.max_pixels_per_frame:
        return "too_large"
    if rows * cols * frames * samples * max(bits, 8) // 8 > limits.max_decoded_bytes:
        return "too_large"
    return None
