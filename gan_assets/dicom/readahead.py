"""Reading a month's next files while this thread parses the current one.

A month small enough to be ingested in-process (no worker pool to pay for) would otherwise
alternate: read a file, hash it, parse it, decode it. Reading and hashing release the GIL (file
I/O, SHA-256 in OpenSSL, a GET waiting on S3), parsing and decoding hold it, so a few background
threads read ahead while the one parsing thread works, and on S3 several GETs wait on the network
at once. Results are handed back in task order; what a read raised is handed back as it was
raised, so each file gets the reason it would have got reading it itself.

Bounds: at most ``max_bytes`` of files read and not yet done with, the one being parsed included
(a single file larger than that is read alone), and at most ``window`` tasks ahead of the
parsing thread. A read that does not come within the file's time limit gives that file
``timeout`` (the caller's choice); the caller then closes the read-ahead and reads the rest
itself, where the time limit can interrupt a read.

Threads are daemon threads started here, not a ``concurrent.futures`` pool: a read stuck in the
kernel (a hung network mount) must not hold the process at exit, and ``concurrent.futures``
joins its workers at interpreter exit. Figures: ``benchmarks/bench_ingest.py``,
``benchmarks/bench_landing_zone.py`` and ``docs/scaling.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Defaults: bytes read ahead (a month's typical files are far smaller; a larger one is read alone).
READ_AHEAD_BYTES = 64 << 20


@dataclass(frozen=True)
class Fetched(Generic[R]):
    """The outcome of one read: its value, or the exception it raised (re-raised by ``get``)."""

    value: R | None = None
    error: BaseException | None = None

    @classmethod
    def of(cls, read: Callable[[], R]) -> Fetched[R]:
        try:
            return cls(value=read())
        except Exception as err:  # handed to the file's own task, which gives it its reason
            return cls(error=err)

    def get(self) -> R:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class ReadAhead(Generic[T, R]):
    """``read(task)`` for each task, run ahead by ``threads`` daemon threads; ``take(i)`` in order."""

    def __init__(self, read: Callable[[T], R], tasks: Sequence[T], sizes: Sequence[int], *, threads: int,
                 max_bytes: int = READ_AHEAD_BYTES, window: int | None = None) -> None:
        if len(sizes) != len(tasks):
            raise ValueError("ReadAhead needs one size per task")
        self._read, self._tasks, self._sizes = read, tasks, [max(int(s), 0) for s in sizes]
        self._max_bytes = max_bytes
        self._window = window if window is not None else max(2 * threads, 2)
        self._results: dict[int, Fetched[R]] = {}
        self._cond = threading.Condition()
        self._next = 0  # the next task a thread starts
        self._taken = 0  # tasks handed back so far
        self._pending_bytes = 0  # bytes read or being read, and not yet done with by the caller
        self._held: int | None = None  # the task the caller took last (its bytes still count)
        self._closed = False
        for _ in range(max(0, min(threads, len(tasks)))):
            threading.Thread(target=self._work, name="gan-assets-read-ahead", daemon=True).start()

    def _may_start(self) -> bool:
        i = self._next
        if i - self._taken >= self._window:
            return False
        return self._pending_bytes == 0 or self._pending_bytes + self._sizes[i] <= self._max_bytes

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._next < len(self._tasks) and not self._may_start():
                    self._cond.wait()
                if self._closed or self._next >= len(self._tasks):
                    return
                i = self._next
                self._next += 1
                self._pending_bytes += self._sizes[i]
            try:
                result: Fetched[R] = Fetched(value=self._read(self._tasks[i]))
            except BaseException as err:  # handed over whole: a thread's traceback could print a path
                result = Fetched(error=err)
            with self._cond:
                self._results[i] = result
                self._cond.notify_all()

    def take(self, i: int, timeout: float | None = None) -> Fetched[R] | None:
        """The outcome of task ``i`` (tasks are taken in order), or None if it did not come in time.

        Taking task ``i`` says the caller is done with task ``i - 1``: its bytes count against
        the budget until then, so a file being decoded and the files read ahead of it together
        stay within ``max_bytes`` (a single larger file is read only once nothing else is held).
        """
        with self._cond:
            if self._held is not None:
                self._pending_bytes -= self._sizes[self._held]
                self._held = None
                self._cond.notify_all()
            if not self._cond.wait_for(lambda: i in self._results, timeout):
                return None
            result = self._results.pop(i)
            self._held = i
            self._taken = i + 1
            self._cond.notify_all()
            return result

    def close(self) -> None:
        """Start no further reads (reads under way finish in their threads and are dropped)."""
        with self._cond:
            self._closed = True
            self._results.clear()
            self._cond.notify_all()
