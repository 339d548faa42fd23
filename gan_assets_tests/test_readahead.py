"""Reads run ahead of in-process ingest: order, errors, byte budget, a stuck read, real files.

The month-level tests run real DICOM (phantom CT slices written by pydicom) through
``preprocess_month`` and ``update_index`` with and without read-ahead and compare the outcomes
file by file; S3 runs against moto's server.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gan_assets.dicom.landing_zone as landing_zone
from gan_assets.demo.phantom import SliceSpec, ct_dataset
from gan_assets.dicom.batch import preprocess_month, run_parallel
from gan_assets.dicom.index import month_rows, update_index
from gan_assets.dicom.landing_zone import LandingZone, SourceSpec
from gan_assets.dicom.preprocess import PreprocessOptions
from gan_assets.dicom.readahead import Fetched, ReadAhead
from gan_assets.dicom.scan import ScanOptions
from gan_assets_tests.factories import dicom_bytes

KEY = b"read-ahead-test-key"


def test_results_come_back_in_task_order_with_each_reads_own_error() -> None:
    def read(task: int) -> int:
        time.sleep(0.02 * (5 - task))  # later tasks finish first
        if task == 2:
            raise FileNotFoundError("gone")
        return task * 10

    ahead = ReadAhead(read, list(range(5)), [1] * 5, threads=4)
    outcomes = [ahead.take(i, timeout=10) for i in range(5)]
    ahead.close()
    assert [o.value for o in outcomes if o is not None and o.error is None] == [0, 10, 30, 40]
    error = outcomes[2].error if outcomes[2] is not None else None
    assert isinstance(error, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        outcomes[2].get()  # type: ignore[union-attr]


def test_bytes_read_ahead_stay_within_the_budget() -> None:
    """The file being worked on counts too: it is held until the next one is taken."""
    sizes = [40, 40, 40, 100, 10, 10, 10, 10]
    lock = threading.Lock()
    state = {"held": 0, "peak": 0}

    def read(task: int) -> int:
        with lock:
            state["held"] += sizes[task]
            state["peak"] = max(state["peak"], state["held"])
        time.sleep(0.01)
        return task

    ahead = ReadAhead(read, list(range(len(sizes))), sizes, threads=4, max_bytes=100, window=8)
    for i in range(len(sizes)):
        if i:
            with lock:
                state["held"] -= sizes[i - 1]  # done with the previous file before taking this one
        outcome = ahead.take(i, timeout=10)
        assert outcome is not None and outcome.get() == i
        time.sleep(0.02)  # a slow consumer: reads would run far ahead without the budget
    ahead.close()
    # Never more than 100 bytes held, the file being worked on included; the file of 100 is
    # read once nothing else is held.
    assert state["peak"] == 100


def test_a_read_that_never_comes_times_out_and_close_stops_the_rest() -> None:
    release = threading.Event()
    started: list[int] = []

    def read(task: int) -> int:
        started.append(task)
        if task == 1:
            release.wait(30)
        return task

    ahead = ReadAhead(read, list(range(6)), [1] * 6, threads=1, window=2)
    first = ahead.take(0, timeout=10)
    assert first is not None and first.get() == 0
    assert ahead.take(1, timeout=0.2) is None
    ahead.close()
    release.set()
    time.sleep(0.2)
    assert started == [0, 1]  # nothing started after the stuck read and the close
    assert all(t.daemon for t in threading.enumerate() if t.name == "gan-assets-read-ahead")


def _echo(task: float, fetched: Fetched[float]) -> Any:
    try:
        return fetched.get()
    except LookupError:
        return "lookup_error"


def _stalling_read(zone: LandingZone, task: float) -> float:
    if task < 0:
        raise LookupError("a read that fails")
    time.sleep(task)
    return task


class _TimedOut:
    def __call__(self, task: Any) -> str:
        return "timeout"


@pytest.mark.parametrize("thread", ["main", "worker"])
def test_a_stalled_read_in_process_is_that_files_timeout_and_the_rest_complete(
        thread: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landing_zone, "LOCAL_READ_AHEAD_MIN_BYTES", 0)  # read ahead whatever the size
    tasks = [0.0, 20.0, 0.0, -1.0, 0.0]
    out: list[Any] = []

    def run() -> None:
        out.extend(run_parallel(_echo, tasks, spec=SourceSpec("."), key=KEY, workers=1, tune=False,
                                timeout_s=0.5, on_timeout=_TimedOut(), read=_stalling_read, read_size=lambda t: 1))

    started = time.monotonic()
    if thread == "main":  # the deadline is SIGALRM, which interrupts the wait for the read
        run()
    else:  # off the main thread the wait itself is bounded
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(30)
    assert out == [0.0, "timeout", 0.0, "lookup_error", 0.0]
    assert time.monotonic() - started < 10


def test_reads_in_a_worker_process_give_the_same_results() -> None:
    tasks = [0.0, -1.0, 0.0]
    pooled = run_parallel(_echo, tasks, spec=SourceSpec("."), key=KEY, workers=2, tune=False, pool_threshold=1,
                          timeout_s=10, on_timeout=_TimedOut(), read=_stalling_read, read_size=lambda t: 1)
    assert pooled == [0.0, "lookup_error", 0.0]


def _slices(n: int, size: int) -> dict[str, bytes]:
    """``n`` CT slices of January 2026 over three patients, by relative path."""
    return {f"p{i % 3}/s{i:03d}.dcm": dicom_bytes(ct_dataset(SliceSpec(7, i % 3, dt.date(2026, 1, 1 + i), i + 1, size,
                                                                      False, False)))
            for i in range(n)}


def _zone(root: Path, n: int = 12, size: int = 384) -> None:
    for rel, data in _slices(n, size).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _month(spec: SourceSpec, **workers: Any) -> tuple[list[dict[str, Any]], Any]:
    index = update_index(spec, None, ScanOptions(), key=KEY, **workers).table
    rows = month_rows(index, "2026-01")
    return rows, preprocess_month(spec, rows, PreprocessOptions(image_size=32), key=KEY, **workers)


def test_a_month_read_ahead_equals_the_month_read_in_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _zone(tmp_path)
    (tmp_path / "p0" / "s000.dcm").write_bytes(b"not dicom at all" * 64)
    spec = SourceSpec(str(tmp_path))
    used: list[int] = []
    real = LandingZone.read_ahead_threads

    def counted(self: LandingZone, typical_bytes: int) -> int:
        used.append(real(self, typical_bytes))
        return used[-1]

    monkeypatch.setattr(LandingZone, "read_ahead_threads", counted)
    ahead_rows, ahead = _month(spec, workers=1)
    assert used and all(used)  # 384 x 384 slices: read ahead at both stages
    monkeypatch.setattr(landing_zone, "LOCAL_READ_AHEAD_THREADS", 0)
    used.clear()
    inline_rows, inline = _month(spec, workers=1)
    assert used and not any(used)
    assert ahead_rows == inline_rows and len(ahead_rows) == 11  # the non-DICOM file is undated
    assert ahead.ids == inline.ids and len(ahead.ids) == 11
    np.testing.assert_array_equal(ahead.images, inline.images)
    assert ahead.rejected == inline.rejected


def test_an_s3_month_read_ahead_equals_the_month_read_in_line(s3_bucket: str, s3_client: Any, s3_settings: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for rel, data in _slices(10, 64).items():
        s3_client.put_object(Bucket=s3_bucket, Key=f"zone/{rel}", Body=data)
    spec = SourceSpec(f"s3://{s3_bucket}/zone", s3_settings)
    assert LandingZone(spec).read_ahead_threads(0) == landing_zone.S3_READ_AHEAD_THREADS
    ahead_rows, ahead = _month(spec, workers=1)
    monkeypatch.setattr(landing_zone, "S3_READ_AHEAD_THREADS", 0)
    inline_rows, inline = _month(spec, workers=1)
    assert ahead_rows == inline_rows and len(ahead.ids) == 10
    assert ahead.ids == inline.ids
    np.testing.assert_array_equal(ahead.images, inline.images)


def test_a_file_replaced_since_the_index_is_changed_when_read_ahead(tmp_path: Path) -> None:
    """A read ahead goes through the same checks as a read in line (the listed size and time, the
    indexed content): a file rewritten since the index is ``changed``, never decoded."""
    _zone(tmp_path, n=4)
    spec = SourceSpec(str(tmp_path))
    index = update_index(spec, None, ScanOptions(), key=KEY, workers=1).table
    rows = month_rows(index, "2026-01")
    target = sorted(tmp_path.rglob("*.dcm"))[2]
    data = target.read_bytes()
    target.write_bytes(data[:-2] + bytes([data[-2] ^ 0xFF, data[-1]]))  # same size, new time and content
    result = preprocess_month(spec, rows, PreprocessOptions(image_size=32), key=KEY, workers=1)
    assert [r["reason_code"] for r in result.rejected] == ["changed"] and len(result.ids) == 3


def test_only_files_above_the_threshold_are_read_ahead_locally(tmp_path: Path) -> None:
    zone = LandingZone(SourceSpec(str(tmp_path)))
    assert zone.read_ahead_threads(landing_zone.LOCAL_READ_AHEAD_MIN_BYTES) == landing_zone.LOCAL_READ_AHEAD_THREADS
    assert zone.read_ahead_threads(landing_zone.LOCAL_READ_AHEAD_MIN_BYTES - 1) == 0
