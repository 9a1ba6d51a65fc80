"""A :class:`ptune.service.Service` in a process of its own, for ``ptune serve``.

In one process, the HTTP server's event loop and the model's worker thread take turns on
Python's interpreter lock, so parsing requests and running forward passes never overlap;
with a small or fast model the server then spends as much time on HTTP as on the model.
:class:`WorkerProcess` loads the base model and the prompts in a child process (started
with ``spawn``) and offers the HTTP side the service's own interface (``submit``,
``health``, ``close``): requests go to the child through a pipe, and the child answers
each batch with one message that also carries its counters. The child's batcher keeps the
queue's bound (a full queue answers 503 at once); a child that dies fails every waiting
request with a 503 instead of leaving it hanging.

Example:
    >>> service = WorkerProcess.start("gpt2", "runs/prompts", ServeConfig())   # doctest: +SKIP
    >>> service.submit(("predict", "sst", [{"text": "fine"}]), rows=1).result()  # doctest: +SKIP
    >>> service.close()                                                        # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future
from typing import Any

from .errors import PtuneError
from .service import ClientError, ServeConfig, Service, _client_error

__all__ = ["WorkerProcess"]


class WorkerProcess:
    """The service of ``base`` and ``prompts``, run in a child process.

    Use :meth:`start`; the constructor takes the started child's pipe end.
    """

    def __init__(self, process: Any, conn: Any, config: ServeConfig, ready: dict[str, Any]) -> None:
        self.process, self.config = process, config
        self._conn = conn
        self._health, self._summary = ready["health"], ready["summary"]
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stopped: str | None = None
        self._reader = threading.Thread(target=self._read, name="ptune-worker-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, base: str, prompts: str, config: ServeConfig | None = None,
              startup_s: float = 600.0) -> "WorkerProcess":
        """Start the child and wait until it has loaded the base model and the prompts.

        Raises:
            PtuneError: what loading raised in the child (a bad ``--prompts``, a checkpoint).
            RuntimeError: the child died or did not get ready within ``startup_s``.
        """
        config = config or ServeConfig()
        ctx = multiprocessing.get_context("spawn")
        conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=_child_main, args=(child_conn, base, prompts, config, _transformers_logging()),
                              name="ptune-worker", daemon=True)
        process.start()
        child_conn.close()
        try:
            if not conn.poll(startup_s):
                raise RuntimeError(f"the model worker did not get ready within {startup_s:g} s")
            kind, value = conn.recv()
        except (EOFError, OSError):
            process.join(5)
            raise RuntimeError(f"the model worker stopped while loading (exit code {process.exitcode})") from None
        except BaseException:
            process.kill()
            raise
        if kind == "error":
            process.join(5)
            raise value
        return cls(process, conn, config, value)

    # ------------------------------------------------------------------ the HTTP side's interface
    def submit(self, payload: tuple, rows: int) -> Future:
        """Send a request to the child (see :meth:`Service.submit`)."""
        future: Future = Future()
        future.set_running_or_notify_cancel()  # as the in-process batcher does: a caller that gives up cannot cancel it
        with self._lock:
            if self._stopped is not None:
                raise ClientError(503, self._stopped, retry_after=1)
            rid = next(self._ids)
            self._pending[rid] = future
            try:
                self._conn.send((rid, payload, rows))
            except (OSError, ValueError):
                self._pending.pop(rid, None)
                raise ClientError(503, f"the model worker stopped (exit code {self.process.exitcode}); retry later",
                                  retry_after=1) from None
        return future

    def health(self) -> dict[str, Any]:
        """The child's counters as of its last batch, and the requests waiting here."""
        with self._lock:
            return {**self._health, "waiting": len(self._pending)}

    def summary(self) -> dict[str, Any]:
        """The child's :meth:`Service.summary` when it got ready."""
        return self._summary

    def close(self, timeout: float = 30.0) -> None:
        """Let the child answer what it holds, then stop it."""
        with self._lock:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._reader.join(5)
        self._conn.close()

    # ------------------------------------------------------------------ answers
    def _read(self) -> None:
        while True:
            try:
                answers, health = self._conn.recv()
            except (EOFError, OSError, ValueError):
                break
            with self._lock:
                self._health = health
                settled = [(self._pending.pop(rid, None), ok, value) for rid, ok, value in answers]
            for future, ok, value in settled:
                if future is None:
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        with self._lock:
            self._stopped = f"the model worker stopped (exit code {self.process.exitcode}); retry later"
            waiting, self._pending = list(self._pending.values()), {}
        for future in waiting:
            future.set_exception(ClientError(503, self._stopped, retry_after=1))


def _transformers_logging() -> tuple[int, bool]:
    """This process's transformers verbosity and whether its progress bars show (the
    ``ptune`` command turns both down), for the child to do the same."""
    from transformers.utils import logging as hf_logging

    return hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()


def _child_main(conn: Any, base: str, prompts: str, config: ServeConfig, hf: tuple[int, bool]) -> None:
    """The child: load, report ready (or the error), then serve requests until told to stop."""
    from transformers.utils import logging as hf_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the child
    # the worker tokenizes a few inputs per prompt and batch: the tokenizer's thread pool costs
    # more than it saves there, and takes cores from the server's process (a user's setting wins)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.set_verbosity(hf[0])
    if not hf[1]:
        hf_logging.disable_progress_bar()
    try:
        service = Service.start(base, prompts, config)
    except PtuneError as e:
        conn.send(("error", e))
        return
    except Exception as e:  # noqa: BLE001 - said to the parent in one line
        conn.send(("error", RuntimeError(f"the model worker could not start: {type(e).__name__}: {e}")))
        return
    send_lock, ids_lock = threading.Lock(), threading.Lock()
    ids: dict[int, int] = {}  # id(future) -> request id, registered before the job can run

    def send(answers: list[tuple[int, bool, Any]]) -> None:
        with send_lock:
            conn.send((answers, service.health()))

    def answered(batch: list[Any]) -> None:  # after each batch, on the batcher's thread
        out = []
        with ids_lock:
            rids = [ids.pop(id(job.future), None) for job in batch]
        for job, rid in zip(batch, rids):
            if rid is None:
                continue
            e = job.future.exception()  # the batcher has settled every job of the batch
            out.append((rid, True, job.future.result()) if e is None else (rid, False, _client_error(e)))
        if out:
            send(out)

    service.batcher.on_batch = answered
    conn.send(("ready", {"health": service.health(), "summary": service.summary()}))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        rid, payload, rows = message
        try:
            with ids_lock:
                ids[id(service.submit(payload, rows))] = rid
        except ClientError as e:
            send([(rid, False, e)])
    service.close()
