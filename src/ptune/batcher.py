"""Dynamic batching: one worker thread runs jobs from a bounded queue in batches.

Callers :meth:`Batcher.submit` jobs from any thread and get a
:class:`concurrent.futures.Future`. The worker takes the first waiting job, then keeps
collecting jobs while they keep coming (each within ``window_s`` of the one before), for at
most ``max_wait_s`` after the first, and until the batch holds ``max_rows`` rows; then it
hands the batch to ``run``, which settles every job's future. Clients that all send their
next request when a batch answers thus land in one batch, while a lone request waits only
``window_s``. A job larger than ``max_rows`` runs in a batch of its own. The queue holds at
most ``max_queue`` jobs; beyond that :meth:`submit` raises :class:`Overloaded` at once
instead of growing memory.

After each batch, ``on_batch`` (if set) sees its jobs, every one settled by then (e.g. to
send the answers elsewhere in one message).

The worker is the only thread that runs ``run``, so whatever it uses (a model, a
tokenizer) needs no locks. An exception escaping ``run`` fails the batch's unsettled jobs
and the worker carries on.

Example:
    >>> b = Batcher(lambda jobs: [j.future.set_result(j.payload * 2) for j in jobs])
    >>> b.submit(21, rows=1).result(timeout=5)
    42
    >>> b.close()
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Batcher", "Job", "Overloaded"]


class Overloaded(RuntimeError):
    """The queue is full: the caller should come back later."""


@dataclass
class Job:
    """One submitted piece of work: its payload, its size in rows and its future."""

    payload: Any
    rows: int
    future: Future = field(default_factory=Future)


class Batcher:
    """A bounded queue served by one worker thread in batches.

    Args:
        run: called on the worker thread with a list of :class:`Job`; settles each job's
            future (jobs it leaves unsettled fail with a RuntimeError).
        max_rows: most rows in one batch (``1``: every job alone).
        window_s: how long to wait for the next job before running the batch.
        max_wait_s: how long after the first job the batch runs at the latest
            (default: ``10 * window_s``).
        max_queue: most jobs waiting.
        idle_s, on_idle: called on the worker thread after ``idle_s`` seconds without jobs.
    """

    def __init__(self, run: Callable[[list[Job]], None], *, max_rows: int = 32, window_s: float = 0.005,
                 max_wait_s: float | None = None, max_queue: int = 256, idle_s: float | None = None,
                 on_idle: Callable[[], None] | None = None) -> None:
        max_wait_s = 10 * window_s if max_wait_s is None else max_wait_s
        if max_rows < 1 or max_queue < 1 or window_s < 0 or max_wait_s < window_s:
            raise ValueError(f"max_rows {max_rows} and max_queue {max_queue} must be >= 1, "
                             f"0 <= window_s {window_s} <= max_wait_s {max_wait_s}")
        self.run, self.max_rows, self.window_s, self.max_wait_s = run, max_rows, window_s, max_wait_s
        self.idle_s, self.on_idle = idle_s, on_idle
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._carry: Job | None = None
        self.batches = 0
        """Batches run so far (each a call of ``run``)."""
        self.on_batch: Callable[[list[Job]], None] | None = None
        """Called on the worker thread with each batch's jobs once every one is settled."""
        self._thread = threading.Thread(target=self._loop, name="ptune-batcher", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs in the queue now."""
        return self._queue.qsize()

    def submit(self, payload: Any, rows: int = 1) -> Future:
        """Queue a job of ``rows`` rows; its future gets what ``run`` sets.

        Raises:
            Overloaded: the queue is full.
            RuntimeError: the batcher is closed.
        """
        if not self._thread.is_alive():
            raise RuntimeError("the batcher is closed")
        job = Job(payload, max(1, int(rows)))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} requests are waiting") from None
        return job.future

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the jobs already queued."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker
    def _next(self, timeout: float | None) -> Job | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        return self._queue.get(timeout=timeout)

    def _loop(self) -> None:
        while True:
            try:
                first = self._next(self.idle_s)
            except queue.Empty:
                self._guarded(self.on_idle)
                continue
            if first is None:
                return
            batch, stop = self._collect(first)
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if live:
                self.batches += 1
                self._guarded(lambda: self.run(live), live)
                if self.on_batch is not None:
                    on_batch = self.on_batch
                    self._guarded(lambda: on_batch(live))
            if stop:
                return

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """The batch that starts with ``first``, and whether the close sentinel was seen."""
        batch, rows = [first], first.rows
        now = time.monotonic()
        latest, deadline = now + self.max_wait_s, now + self.window_s
        while rows < self.max_rows:
            left = min(deadline, latest) - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            if rows + job.rows > self.max_rows:
                self._carry = job  # first of the next batch
                break
            batch.append(job)
            rows += job.rows
            deadline = time.monotonic() + self.window_s
        return batch, False

    @staticmethod
    def _guarded(fn: Callable[[], None] | None, jobs: list[Job] = ()) -> None:  # type: ignore[assignment]
        if fn is None:
            return
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - the worker must outlive any job
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
        for j in jobs:
            if not j.future.done():
                j.future.set_exception(RuntimeError("the batch finished without an answer for this request"))
