"""A month of the landing zone: header scan -> manifest rows, and ok rows -> packed images.

Work is spread over worker processes (one task per file, results in input order, so the output
is deterministic for any number of workers). Workers are started through ``forkserver`` (no
fork of a threaded Dagster process), tune glibc's allocator, open their own landing-zone
client, and get the pseudonym key as an argument (so a key set after the fork server started
still applies). Nothing a worker returns holds a path or a header value that identifies a person.

One file never stalls or sinks the month. Each worker holds one file at a time (pebble's
process pool), so the time limit is per file: a worker past it is killed and replaced and its
file gets ``timeout``; a worker that dies (out of memory, a crashing codec) is replaced and its
file gets ``worker_died``; every other file goes on. In-process (small months, or
``workers=1``) the limit is a SIGALRM deadline when running on the main thread: it interrupts
Python code (pydicom parsing, numpy loops between calls) but not a single long C call, which
is why large months, where that matters, run in the pool.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pebble

from gan_assets.dicom.landing_zone import FileChangedError, FileEntry, LandingZone, SourceSpec
from gan_assets.dicom.malloc import tune_malloc
from gan_assets.dicom.preprocess import (
    PreprocessOptions,
    RejectError,
    preprocess_dataset,
    quiet_pydicom,
    read_dataset,
)
from gan_assets.dicom.pseudonym import content_ref, file_ref, image_id
from gan_assets.dicom.readahead import Fetched, ReadAhead
from gan_assets.dicom.reasons import REASONS, reason_sentence
from gan_assets.dicom.scan import ScanOptions, rejected_row, scan_file
from gan_assets.storage.images import pack_images

logger = logging.getLogger(__name__)

# Below these many files a pool costs more than it saves: starting one costs more than scanning
# a few hundred headers in-process (benchmarks/bench_ingest.py; figures in docs/scaling.md).
SCAN_POOL_MIN_FILES = 256
# Decode time follows the bytes more than the file count, so a month decodes in the pool from
# DECODE_POOL_MIN_BYTES, or DECODE_POOL_MIN_FILES.
DECODE_POOL_MIN_FILES = 400
DECODE_POOL_MIN_BYTES = 32 << 20

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


class FileTimeout(BaseException):
    """The in-process per-file deadline passed (a BaseException: parsers' ``except Exception`` must not eat it)."""


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise FileTimeout in this thread after ``seconds`` (main thread only; else no limit).

    An alarm already running (pytest-timeout, a caller's own) is lent out only when it would
    fire later than ours, and is put back with its remaining time.
    """
    if seconds is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    theirs, interval = signal.getitimer(signal.ITIMER_REAL)
    if theirs and theirs <= seconds:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise FileTimeout()

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)
        if theirs:
            signal.setitimer(signal.ITIMER_REAL, max(theirs - (time.monotonic() - started), 0.001), interval)


def run_parallel(fn: Callable[..., R], tasks: Sequence[T], *, spec: SourceSpec, key: bytes, workers: int,
                 tune: bool = True, pool_threshold: int = DECODE_POOL_MIN_FILES, timeout_s: float | None = None,
                 on_timeout: Callable[[T], R] | None = None, on_died: Callable[[T], R] | None = None,
                 read: Callable[[LandingZone, T], Any] | None = None,
                 read_size: Callable[[T], int] | None = None) -> list[R]:
    """``[fn(t) for t in tasks]`` over worker processes, in order; in-process when small.

    With ``timeout_s`` a task running longer gets ``on_timeout(task)`` (its worker is killed
    and replaced); a task whose worker died gets ``on_died(task)``. Without those callbacks
    a timed-out or dead worker fails the call with a message that says what to change.

    With ``read``, each task's I/O is split from its work: ``fn(task, Fetched(read(zone, task)))``.
    In-process, the reads run ahead in background threads (``readahead``; ``read_size(task)`` is
    what a read holds, for the byte budget) while this thread works; in a worker process the
    worker reads its own file. The time limit covers a task's wait for its read.
    """
    workers = min(resolve_workers(workers), max(1, len(tasks)))
    if workers <= 1 or len(tasks) < pool_threshold:
        _init_worker(spec, key, tune)
        if read is not None:
            return _run_reading_ahead(fn, tasks, read, read_size or (lambda task: 0), timeout_s, on_timeout)
        results: list[R] = []
        with quiet_pydicom():  # once for the month; each file's own quiet_pydicom is then cheap
            for task in tasks:
                try:
                    with _deadline(timeout_s if on_timeout is not None else None):
                        results.append(fn(task))
                except FileTimeout:
                    results.append(on_timeout(task))  # type: ignore[misc]
        return results
    context = mp.get_context("forkserver")
    # The fork server imports pydicom, numpy, Pillow and the decoder plugins once; workers
    # are forks of it, so they start warm (and never fork a threaded Dagster process).
    context.set_forkserver_preload(["gan_assets.dicom.warm"])
    # pebble's pool kills and replaces the one worker whose file ran past the deadline (the
    # standard library's pool can only be torn down whole). It lives for this call only: a pool
    # kept for the process outlived the run, since a Dagster run worker joins its live child
    # processes before atexit handlers run.
    pool = pebble.ProcessPool(max_workers=workers, initializer=_init_worker, initargs=(spec, key, tune),
                              context=context)
    try:
        futures = [pool.schedule(fn, args=(task,), timeout=timeout_s) if read is None else
                   pool.schedule(_read_then_run, args=(fn, read, task), timeout=timeout_s) for task in tasks]
        out: list[R] = []
        for task, future in zip(tasks, futures):
            try:
                out.append(future.result())
            except FuturesTimeout:
                if on_timeout is None:
                    raise RuntimeError("an ingest worker exceeded its time limit; raise preprocess_config.decode_seconds") from None
                out.append(on_timeout(task))
            except pebble.ProcessExpired:
                if on_died is None:
                    raise RuntimeError("an ingest worker process died; most often it ran out of memory: lower "
                                       "preprocess_config.workers or the ingest size limits") from None
                out.append(on_died(task))
        return out
    finally:
        pool.stop()
        pool.join()


def _read_then_run(fn: Callable[[T, Fetched[Any]], R], read: Callable[[LandingZone, T], Any], task: T) -> R:
    """A worker process's task: its own read, then the work."""
    zone: LandingZone = _WORKER["zone"]
    return fn(task, Fetched.of(lambda: read(zone, task)))


def _run_reading_ahead(fn: Callable[[T, Fetched[Any]], R], tasks: Sequence[T], read: Callable[[LandingZone, T], Any],
                       read_size: Callable[[T], int], timeout_s: float | None,
                       on_timeout: Callable[[T], R] | None) -> list[R]:
    """The in-process loop with reads run ahead. A read that does not come within the file's time
    limit may be stuck in the kernel: that file gets ``on_timeout``, and the rest are read here,
    where the time limit can interrupt a read (on the main thread)."""
    zone: LandingZone = _WORKER["zone"]
    limit = timeout_s if on_timeout is not None else None
    # Off the main thread the deadline cannot interrupt; waiting for a read is bounded instead.
    wait = limit if threading.current_thread() is not threading.main_thread() else None
    sizes = [read_size(task) for task in tasks]
    threads = zone.read_ahead_threads(sum(sizes) // max(len(sizes), 1))
    ahead: ReadAhead[T, Any] | None = ReadAhead(lambda task: read(zone, task), tasks, sizes,
                                                threads=threads) if threads else None
    results: list[R] = []
    try:
        with quiet_pydicom():  # once for the month; each file's own quiet_pydicom is then cheap
            for i, task in enumerate(tasks):
                fetched: Fetched[Any] | None = None
                try:
                    with _deadline(limit):
                        fetched = ahead.take(i, wait) if ahead is not None else Fetched.of(lambda: read(zone, task))
                        if fetched is None:
                            raise FileTimeout()
                        results.append(fn(task, fetched))
                except FileTimeout:
                    if fetched is None and ahead is not None:  # its read did not come: maybe stuck
                        ahead.close()
                        ahead = None
                    results.append(on_timeout(task))  # type: ignore[misc]
    finally:
        if ahead is not None:
            ahead.close()
    return results


def scan_row(zone: Any, entry: FileEntry, key: bytes, options: ScanOptions) -> dict[str, Any]:
    """scan_file, with any exception of one file turned into that file's row."""
    try:
        return scan_file(zone, entry, key, options)
    except FileTimeout:
        raise
    except MemoryError:
        return rejected_row(entry, key, "too_large")
    except Exception:  # a bug or an odd file must not sink the month
        return rejected_row(entry, key, "internal_error")


def _scan_task(task: tuple[FileEntry, ScanOptions]) -> dict[str, Any]:
    entry, options = task
    return scan_row(_WORKER["zone"], entry, _WORKER["key"], options)


@dataclass(frozen=True)
class _ScanFallback:
    """The row of a file whose scan timed out or whose worker died."""

    key: bytes
    code: str

    def __call__(self, task: tuple[FileEntry, ScanOptions]) -> dict[str, Any]:
        return rejected_row(task[0], self.key, self.code)


@dataclass
class ScanResult:
    rows: list[dict[str, Any]]
    files_listed: int
    seconds: float


def scan_month(spec: SourceSpec, month: str, options: ScanOptions, *, key: bytes, workers: int = 0,
               tune: bool = True, zone: LandingZone | None = None,
               pool_threshold: int = SCAN_POOL_MIN_FILES) -> ScanResult:
    """Manifest rows of ``month`` (YYYY-MM) by a header scan of every file of the zone, no index.

    How a month was ingested before the landing-zone index (``bench_landing_zone``'s baseline,
    and a convenience for tests): every header is read, no content fingerprint is taken, and the
    rows are those ``index.month_rows`` gives (the month's dated files, duplicates rejected).
    """
    from gan_assets.dicom.index import month_rows, table_of_rows

    started = time.perf_counter()
    zone = zone or LandingZone(spec)
    entries = zone.list_files()
    rows = run_parallel(_scan_task, [(entry, options) for entry in entries], spec=spec, key=key,
                        workers=workers, tune=tune, pool_threshold=pool_threshold,
                        timeout_s=options.limits.decode_seconds, on_timeout=_ScanFallback(key, "timeout"),
                        on_died=_ScanFallback(key, "worker_died"))
    return ScanResult(rows=month_rows(table_of_rows(rows), month), files_listed=len(entries),
                      seconds=time.perf_counter() - started)


def _failed(code: str) -> dict[str, Any]:
    return {"ok": False, "reason_code": code, "reason": reason_sentence(code)}


def _decode_read(zone: LandingZone, task: tuple[FileEntry, PreprocessOptions, str, str]) -> tuple[bytes, str]:
    """A file to decode, read whole with its content digest (the I/O half of a decode task)."""
    return zone.read_verified(task[0])


def _task_bytes(task: tuple[FileEntry, PreprocessOptions, str, str]) -> int:
    return task[0].size


def _preprocess_task(task: tuple[FileEntry, PreprocessOptions, str, str],
                     fetched: Fetched[tuple[bytes, str]]) -> dict[str, Any]:
    entry, options, expected_id, expected_content = task
    started = time.perf_counter()
    try:
        with quiet_pydicom():
            data, digest = fetched.get()
            if expected_content and content_ref(digest, _WORKER["key"]) != expected_content:
                # Same name, size and time but other bytes: not the file the manifest describes.
                return _failed("changed")
            ds = read_dataset(io.BytesIO(data), options.limits)
            del data
            uid = str(ds.get("SOPInstanceUID", "") or "").strip()
            if expected_id and uid and image_id(uid, _WORKER["key"]) != expected_id:
                # Same name, size and time but another image: never store it under the old id.
                return _failed("changed")
            result = preprocess_dataset(ds, options)
        images = pack_images(result.images)
    except FileTimeout:
        raise
    except FileChangedError:
        return _failed("changed")
    except FileNotFoundError:
        return _failed("missing")
    except OSError:  # permission denied, I/O error: the message would name the path
        return _failed("io_error")
    except RejectError as err:
        return _failed(err.code)
    except MemoryError:
        return _failed("too_large")
    except Exception:  # a bug or an odd file must not sink the month
        return _failed("internal_error")
    return {
        "ok": True,
        "images": images,
        "frames": result.frames,
        "voi_source": result.voi_source,
        "window": [float(result.window[0]), float(result.window[1])],
        "inverted": result.inverted,
        "colour_converted": result.colour_converted,
        "seconds": time.perf_counter() - started,
    }


@dataclass(frozen=True)
class _DecodeFallback:
    code: str

    def __call__(self, task: Any) -> dict[str, Any]:
        return _failed(self.code)


def _listed_as_scanned(row: dict[str, Any], entry: FileEntry) -> bool:
    """Whether the file listed now is the version the manifest row describes."""
    size, mtime = _as_int(row.get("file_bytes")), _as_int(row.get("file_mtime_ns"))
    if size is not None and size != entry.size:
        return False
    return not (mtime and entry.mtime_ns and mtime != entry.mtime_ns)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


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
                     pool_threshold: int | None = None) -> PreprocessResult:
    """Decode and preprocess the manifest's ``ok`` rows (pixel data read once per file)."""
    started = time.perf_counter()
    zone = zone or LandingZone(spec)
    # The manifest holds pseudonymous file references, never paths: map them back here.
    by_ref = {file_ref(entry.relative_path, key): entry for entry in zone.recent_listing()}
    ok_rows = [row for row in manifest_rows if row["status"] == "ok"]
    rejected: list[dict[str, str]] = []
    tasks: list[tuple[FileEntry, PreprocessOptions, str, str]] = []
    task_rows: list[dict[str, Any]] = []
    for row in ok_rows:
        entry = by_ref.get(row["file_ref"])
        code = "missing" if entry is None or entry.problem == "missing" else (
            "changed" if entry.problem or not _listed_as_scanned(row, entry) else "")
        if code:
            rejected.append({"id": row["id"], "file_ref": row["file_ref"], "reason_code": code, "reason": REASONS[code]})
            continue
        tasks.append((entry, options, str(row["id"]), str(row.get("content_hash") or "")))  # type: ignore[arg-type]
        task_rows.append(row)
    if pool_threshold is None:
        heavy = sum(entry.size for entry, *_ in tasks) >= DECODE_POOL_MIN_BYTES
        pool_threshold = 1 if heavy else DECODE_POOL_MIN_FILES
    results = run_parallel(_preprocess_task, tasks, spec=spec, key=key, workers=workers, tune=tune,
                           pool_threshold=pool_threshold, timeout_s=options.limits.decode_seconds,
                           on_timeout=_DecodeFallback("timeout"), on_died=_DecodeFallback("worker_died"),
                           read=_decode_read, read_size=_task_bytes)

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


def default_key_warning(key: bytes) -> str | None:
    from gan_assets.dicom.pseudonym import using_default_key

    if using_default_key(key):
        return ("no pseudonym key is set (dicom_source.pseudonym_key): ids use the documented local default key. "
                "Set a secret key for any real data (the same key keeps ids stable across months).")
    return None

