"""glibc allocator tuning for decode-heavy processes.

By default glibc serves allocations above a (dynamic) threshold with mmap and returns them to
the OS on free, and trims the heap top eagerly. Decoding a DICOM file allocates and frees
several multi-megabyte buffers, so every file pays page faults for fresh zeroed pages.
Raising the mmap and trim thresholds keeps those buffers in the heap for reuse (faster decode
and CPU training: ``benchmarks/bench_ingest.py`` measures it, figures in ``docs/scaling.md``).
The same effect is available process-wide through ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` (the Makefile exports them); ``mallopt`` lets worker processes
apply it themselves however they were started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform
from typing import Any

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def _glibc() -> Any | None:
    """glibc, or None elsewhere. Looked up once: ``platform.libc_ver`` reads the interpreter's
    binary, about a millisecond, and ingest tunes the allocator at every in-process stage."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES) -> dict[str, int]:
    """Apply the thresholds with mallopt (glibc only; elsewhere a no-op). Returns what was set."""
    libc = _glibc()
    if libc is None:
        return {}
    applied: dict[str, int] = {}
    if libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1:
        applied["mmap_threshold"] = int(mmap_threshold)
    if libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1:
        applied["trim_threshold"] = int(trim_threshold)
    if not applied:
        logger.debug("mallopt refused the thresholds; allocator left as it is")
    return applied
