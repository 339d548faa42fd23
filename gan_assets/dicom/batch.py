"""A month of the landing zone: header scan -> manifest rows, and ok rows -> packed images.

Work is spread over a process pool (one task per file, results in input order, so the output
is deterministic for any number of workers). Workers are started through ``forkserver`` (no
fork of a threaded Dagster process), tune glibc's allocator in their initialiser, open their
own landing-zone client, and get the pseudonym key as an argument (so a key set after the
pool's server started still applies). Nothing a worker returns holds a path or a header value
that identifies a person.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from gan_assets.dicom.landing_zone import FileEntry, LandingZone, SourceSpec
from gan_assets.dicom.malloc import tune_malloc
from gan_assets.dicom.preprocess import PreprocessOptions, RejectError, preprocess_file, quiet_pydicom
from gan_assets.dicom.pseudonym import file_ref
from gan_assets.dicom.scan import MANIFEST_COLUMNS, REASONS, ScanOptions, scan_file
from gan_assets.storage.images import pack_images

logger = logging.getLogger(__name__)

# Below this many files a pool costs more (process start, imports) than it saves.
MIN_FILES_FOR_POOL = 24

T = TypeVar("T")
R = TypeVar("R")

_WORKER: dict[str, Any] = {}


def _init_worker(spec: SourceSpec, key: bytes, tune: bool) -> None:
    if tune:
        tune_malloc()
    _WORKER.clear()
    _WORKER.update(zone=LandingZone(spec), key=key)


def resolve_workers(workers: int) -> int:
    """0 means one per CPU this process may use."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_parallel(fn: Callable[[T], R], tasks: Sequence[T], *, spec: SourceSpec, key: bytes, workers: int,
                 tune: bool = True, pool_threshold: int = MIN_FILES_FOR_POOL) -> list[R]:
    """``[fn(t) for t in tasks]`` over a process pool, in order; in-process when small."""
    workers = min(resolve_workers(workers), max(1, len(tasks)))
    if workers <= 1 or len(tasks) < pool_threshold:
        _init_worker(spec, key, tune)
        return [fn(task) for task in tasks]
    # A few chunks per worker balance load without paying IPC per file.
    chunksize = max(1, len(tasks) // (workers * 4))
    context = mp.get_context("forkserver")
    # The fork server imports pydicom, numpy, Pillow and the decoder plugins once; workers
    # are forks of it, so they start warm (and never fork a threaded Dagster process).
    context.set_forkserver_preload(["gan_assets.dicom.warm"])
    # The pool lives for this call only. A pool kept for the process outlived the run: a Dagster
    # run worker joins its live child processes before atexit handlers run, so it never exited.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(spec, key, tune))
    try:
        return list(pool.map(fn, tasks, chunksize=chunksize))
    except BrokenProcessPool as err:
        raise RuntimeError(
            f"an ingest worker process died ({err}); most often it ran out of memory: lower "
            "preprocess_config.workers or the image sizes in the landing zone") from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---- header scan --------------------------------------------------------------------------
def _scan_task(task: tuple[FileEntry, ScanOptions]) -> dict[str, Any]:
    entry, options = task
    try:
        return scan_file(_WORKER["zone"], entry, _WORKER["key"], options)
    except Exception as err:  # a bug or an odd file must not sink the month
        row = {c: "" for c in MANIFEST_COLUMNS}
        row.update(id=file_ref(entry.relative_path, _WORKER["key"]), file_ref=file_ref(entry.relative_path, _WORKER["key"]),
                   month=f"{entry.modified.year:04d}-{entry.modified.month:02d}", month_source="arrival",
                   rows=0, columns=0, frames=0, samples_per_pixel=0, bits_allocated=0, file_bytes=entry.size,
                   status="rejected", reason_code="internal_error",
                   reason=f"unexpected {type(err).__name__} while reading the header")
        return row


@dataclass
class ScanResult:
    rows: list[dict[str, Any]]
    files_listed: int
    seconds: float


def scan_month(spec: SourceSpec, month: str, options: ScanOptions, *, key: bytes, workers: int = 0,
               tune: bool = True, zone: LandingZone | None = None,
               pool_threshold: int = MIN_FILES_FOR_POOL) -> ScanResult:
    """Manifest rows (dicts, MANIFEST_COLUMNS) of every file that belongs to ``month`` (YYYY-MM).

    Every file of the zone is scanned (its header decides its month); rows are ordered by the
    pseudonymous file reference, and a second file with an already-seen SOPInstanceUID is
    rejected as a duplicate.
    """
    started = time.perf_counter()
    zone = zone or LandingZone(spec)
    entries = zone.list_files()
    rows = run_parallel(_scan_task, [(entry, options) for entry in entries], spec=spec, key=key,
                        workers=workers, tune=tune, pool_threshold=pool_threshold)
    month_rows = [row for row in rows if row["month"] == month]
    month_rows.sort(key=lambda row: row["file_ref"])
    seen: set[str] = set()
    for row in month_rows:
        if row["status"] != "ok":
            continue
        if row["id"] in seen:
            row.update(status="rejected", reason_code="duplicate",
                       reason="same SOPInstanceUID as another file of this month; the first one is used")
        seen.add(row["id"])
    return ScanResult(rows=month_rows, files_listed=len(entries), seconds=time.perf_counter() - started)


# ---- decode and preprocess ----------------------------------------------------------------
def _scrub(text: str, entry: FileEntry, zone: LandingZone) -> str:
    """Remove anything path-like of this file from a message (paths often hold names, IDs)."""
    for secret in sorted({zone.describe(entry), entry.relative_path, *entry.relative_path.split("/")}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "<file>")
    return text


def _preprocess_task(task: tuple[FileEntry, PreprocessOptions]) -> dict[str, Any]:
    entry, options = task
    zone: LandingZone = _WORKER["zone"]
    started = time.perf_counter()
    try:
        with quiet_pydicom():
            handle = zone.open_full(entry)
        with handle:
            result = preprocess_file(handle, options)
    except FileNotFoundError:
        return {"ok": False, "reason_code": "missing", "reason": REASONS["missing"]}
    except RejectError as err:
        return {"ok": False, "reason_code": err.code, "reason": _scrub(err.reason, entry, zone)}
    except Exception as err:  # a bug or an odd file must not sink the month
        return {"ok": False, "reason_code": "internal_error",
                "reason": f"unexpected {type(err).__name__} while decoding"}
    return {
        "ok": True,
        "images": pack_images(result.images),
        "frames": result.frames,
        "voi_source": result.voi_source,
        "window": [float(result.window[0]), float(result.window[1])],
        "inverted": result.inverted,
        "colour_converted": result.colour_converted,
        "seconds": time.perf_counter() - started,
    }


@dataclass
class PreprocessResult:
    """Packed images of a month plus per-file outcomes (pseudonymous ids only)."""

    images: np.ndarray  # uint8 [N, S, S]
    ids: list[str]
    rejected: list[dict[str, str]]  # {"id", "file_ref", "reason_code", "reason"}
    voi_sources: Counter = field(default_factory=Counter)
    colour_converted: int = 0
    inverted: int = 0
    files_in: int = 0
    files_ok: int = 0
    seconds: float = 0.0


def preprocess_month(spec: SourceSpec, manifest_rows: Sequence[dict[str, Any]], options: PreprocessOptions, *,
                     key: bytes, workers: int = 0, tune: bool = True, zone: LandingZone | None = None,
                     pool_threshold: int = MIN_FILES_FOR_POOL) -> PreprocessResult:
    """Decode and preprocess the manifest's ``ok`` rows (pixel data read once per file)."""
    started = time.perf_counter()
    zone = zone or LandingZone(spec)
    # The manifest holds pseudonymous file references, never paths: map them back here.
    by_ref = {file_ref(entry.relative_path, key): entry for entry in zone.list_files()}
    ok_rows = [row for row in manifest_rows if row["status"] == "ok"]
    rejected: list[dict[str, str]] = []
    tasks: list[tuple[FileEntry, PreprocessOptions]] = []
    task_rows: list[dict[str, Any]] = []
    for row in ok_rows:
        entry = by_ref.get(row["file_ref"])
        if entry is None:
            rejected.append({"id": row["id"], "file_ref": row["file_ref"], "reason_code": "missing", "reason": REASONS["missing"]})
            continue
        tasks.append((entry, options))
        task_rows.append(row)
    results = run_parallel(_preprocess_task, tasks, spec=spec, key=key, workers=workers, tune=tune,
                           pool_threshold=pool_threshold)

    images: list[np.ndarray] = []
    ids: list[str] = []
    out = PreprocessResult(images=np.zeros((0, options.image_size, options.image_size), np.uint8), ids=[], rejected=rejected,
                           files_in=len(ok_rows))
    for row, result in zip(task_rows, results):
        if not result["ok"]:
            rejected.append({"id": row["id"], "file_ref": row["file_ref"], "reason_code": result["reason_code"],
                             "reason": result["reason"]})
            continue
        out.files_ok += 1
        frames = result["frames"]
        for position, frame in enumerate(frames):
            images.append(result["images"][position])
            # One id per image: frames of a multi-frame file get a frame suffix.
            ids.append(row["id"] if len(frames) == 1 else f"{row['id']}-f{frame:04d}")
        out.voi_sources[result["voi_source"]] += 1
        out.colour_converted += int(result["colour_converted"])
        out.inverted += int(result["inverted"])
    if images:
        out.images = np.stack(images)
    out.ids = ids
    out.seconds = time.perf_counter() - started
    return out


def reason_counts(codes: Sequence[str]) -> dict[str, int]:
    return dict(sorted(Counter(code for code in codes if code).items()))


def describe_reasons(counts: dict[str, int]) -> str:
    """'3 truncated (pixel data shorter than the header says), 1 not_dicom (...)'."""
    return ", ".join(f"{n} {code} ({REASONS.get(code, code)})" for code, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def default_key_warning() -> str | None:
    from gan_assets.dicom.pseudonym import PSEUDONYM_KEY_ENV, using_default_key

    if using_default_key():
        return (f"{PSEUDONYM_KEY_ENV} is not set: ids use the documented local default key. Set a secret "
                "key for any real data (the same key keeps ids stable across months).")
    return None

