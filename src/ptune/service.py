"""The worker's side of ``ptune serve``: the prompts, the batching queue and the model calls.

A :class:`Service` holds a :class:`ptune.multi.PromptBank` (one frozen base LM and the
prompts trained on it), the :class:`ptune.registry.PromptRegistry` that keeps the bank in
step with the checkpoint folder, and a :class:`ptune.batcher.Batcher` whose one worker
thread runs every model call: requests of every prompt wait in a bounded queue, and the
worker scores the inputs of all requests that arrived within a short window, up to
``max_batch`` rows, in one forward pass. ``ptune serve`` runs the service in a process of
its own (:mod:`ptune.worker`) or on a thread of the HTTP server's process.

Example:
    >>> service = Service.start("gpt2", "runs/prompts", ServeConfig())      # doctest: +SKIP
    >>> service.submit(("predict", "sst", [{"text": "fine"}]), rows=1).result()  # doctest: +SKIP
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .batcher import Batcher, Job, Overloaded
from .config import GenerateConfig
from .errors import ConfigError, PtuneError
from .generate import generate_text_rows
from .model import prediction_record
from .multi import PromptBank
from .registry import PromptRegistry

__all__ = ["ServeConfig", "ClientError", "Service"]


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """How ``ptune serve`` listens, batches and bounds its work."""

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0``: every interface)."""
    port: int = 8000
    """Port to listen on (0: any free port)."""
    max_batch: int = 32
    """Most input rows in one forward pass of the LM, over all requests and prompts (1: one
    request per pass)."""
    batch_window_ms: float = 5.0
    """How long to wait for the next request before running the batch; each arrival waits
    again, up to ``batch_max_wait_ms`` after the first request."""
    batch_max_wait_ms: float = 50.0
    """How long after its first request a batch runs at the latest (if not full before)."""
    max_queue: int = 256
    """Most requests waiting; beyond it requests answer 503 with Retry-After."""
    max_inputs: int = 64
    """Most inputs in one request."""
    max_chars: int = 4000
    """Most characters of text in one input (all its fields together)."""
    max_new_tokens: int = 256
    """Largest ``max_new_tokens`` a generate request may ask for."""
    timeout_s: float = 60.0
    """A request not answered within this many seconds answers 503."""
    rescan_s: float = 5.0
    """Look for new, changed or removed checkpoints every this many seconds (0: only when a
    request names an unknown prompt or the list is asked for)."""
    device: str | None = None
    """Device of the model, e.g. ``cuda`` (default: CPU)."""
    threads: int | None = None
    """CPU threads of torch (default: torch's choice)."""
    worker_process: bool = True
    """Run the model in a process of its own, so that handling HTTP and running forward passes
    overlap (false: on a thread of the server's process, sharing Python's interpreter lock)."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_inputs", "max_chars", "max_new_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(name, f"must be a positive integer, got {v!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", f"must be in 0..65535, got {self.port}")
        for name in ("batch_window_ms", "rescan_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.batch_max_wait_ms >= self.batch_window_ms:
            raise ConfigError("batch_max_wait_ms", f"must be at least batch_window_ms {self.batch_window_ms}, "
                                                   f"got {self.batch_max_wait_ms}")
        if not self.timeout_s > 0:
            raise ConfigError("timeout_s", f"must be positive, got {self.timeout_s}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be a positive integer, got {self.threads}")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted (JSON of ``max_inputs`` inputs at ``max_chars``)."""
        return 8 * self.max_inputs * self.max_chars + 65536



class ClientError(Exception):
    """A request that cannot be answered: HTTP status, one-line reason, optional Retry-After."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after

    def __reduce__(self) -> tuple:  # picklable, to cross from the worker process
        return type(self), (self.status, self.message, self.retry_after)



class Service:
    """The bank, its registry and the batcher whose worker thread runs every model call.

    ``stats`` counts the batches the worker ran: ``batches``, ``rows``, the largest batch
    (``max_rows``) and the most prompts in one forward pass (``max_prompts``) for predict;
    ``generate_batches``, ``generate_rows`` and ``max_generate_prompts`` for generate.
    """

    def __init__(self, bank: PromptBank, registry: PromptRegistry, config: ServeConfig) -> None:
        self.bank, self.registry, self.config = bank, registry, config
        self.stats = {"batches": 0, "rows": 0, "max_rows": 0, "max_prompts": 0, "generate_batches": 0,
                      "generate_rows": 0, "max_generate_prompts": 0}
        self.batcher = Batcher(self._run, max_rows=config.max_batch, window_s=config.batch_window_ms / 1000,
                               max_wait_s=config.batch_max_wait_ms / 1000, max_queue=config.max_queue,
                               idle_s=config.rescan_s or None,
                               on_idle=self.registry.refresh)

    @classmethod
    def start(cls, base: str, prompts: str, config: ServeConfig | None = None) -> "Service":
        """Load ``base`` once and the prompts of ``prompts`` (a folder or a list) onto it."""
        import torch

        config = config or ServeConfig()
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        bank = PromptBank.from_base(base, device=config.device)
        registry = PromptRegistry(bank, prompts)
        registry.refresh(force=True)
        return cls(bank, registry, config)

    def submit(self, payload: tuple, rows: int) -> Future:
        """Queue a request (``("predict", name, inputs)``, ``("generate", name, inputs,
        config)`` or ``("prompts",)``) of ``rows`` rows; its future gets the answer's body.

        Raises:
            ClientError: 503 when the queue is full.
        """
        try:
            return self.batcher.submit(payload, rows)
        except Overloaded as e:
            raise ClientError(503, f"overloaded: {e}; retry later", retry_after=1) from None

    def health(self) -> dict[str, Any]:
        """The base, the number of prompts, the queue and the batch counters."""
        return {"base": self.bank.base_model, "prompts": len(self.bank), "waiting": self.batcher.waiting,
                "max_queue": self.config.max_queue, **self.stats}

    def summary(self) -> dict[str, Any]:
        """The base, the prompts' names and how many checkpoints were refused (for the
        line ``ptune serve`` prints when it starts)."""
        return {"base": self.bank.base_model, "names": sorted(self.bank), "refused": len(self.registry.refused)}

    def close(self) -> None:
        """Answer the requests already queued, then stop the worker."""
        self.batcher.close()

    def _run(self, jobs: list[Job]) -> None:
        if self.config.rescan_s and self.registry.age_s >= self.config.rescan_s:
            self.registry.refresh()  # also under traffic that never leaves the worker idle
        predict = [j for j in jobs if j.payload[0] == "predict"]
        if predict:
            self._isolated(predict, self._predict)
        for group in _generate_groups([j for j in jobs if j.payload[0] == "generate"]):
            self._isolated(group, self._generate)
        for job in jobs:
            if job.payload[0] == "prompts":
                self.registry.refresh(force=True)
                job.future.set_result(self.registry.describe())

    def _isolated(self, jobs: list[Job], fn: Any) -> None:
        """``fn(jobs)``; if it fails for a group of jobs, each job runs alone, so one bad
        request cannot fail the others."""
        try:
            fn(jobs)
        except Exception as e:  # noqa: BLE001 - turned into each request's answer
            if len(jobs) > 1:
                for job in jobs:
                    self._isolated([job], fn)
            elif not jobs[0].future.done():
                jobs[0].future.set_exception(_client_error(e))

    def _prepared(self, jobs: list[Job]) -> list[tuple[Job, Any, list]]:
        """Each job's prompt and prepared inputs, the jobs of one prompt tokenized in one
        call; a job whose prompt or inputs are bad gets its error, the others go on."""
        by_prompt: dict[str, list[Job]] = {}
        for job in jobs:
            if not job.future.done():
                by_prompt.setdefault(job.payload[1], []).append(job)
        out = []
        for name, group in by_prompt.items():
            try:
                model = self.registry.get(name)
            except (KeyError, PtuneError) as e:
                for job in group:
                    job.future.set_exception(_client_error(e))
                continue
            try:
                items = model.prepare([ex for job in group for ex in job.payload[2]],
                                      [f"inputs[{i}]" for job in group for i in range(len(job.payload[2]))])
            except PtuneError:  # some job's inputs are bad: prepare each job alone to find it
                out += self._prepared_alone(model, group)
                continue
            k = 0
            for job in group:
                out.append((job, model, items[k : k + len(job.payload[2])]))
                k += len(job.payload[2])
        return out

    @staticmethod
    def _prepared_alone(model: Any, jobs: list[Job]) -> list[tuple[Job, Any, list]]:
        out = []
        for job in jobs:
            inputs = job.payload[2]
            try:
                out.append((job, model, model.prepare(inputs, [f"inputs[{i}]" for i in range(len(inputs))])))
            except PtuneError as e:
                job.future.set_exception(_client_error(e))
        return out

    def _predict(self, jobs: list[Job]) -> None:
        ready = self._prepared(jobs)
        rows = [(job.payload[1], item) for job, _, items in ready for item in items]
        if not rows:
            return
        preds = self.bank.predict(rows, batch_size=self.config.max_batch)
        s = self.stats
        s["batches"] += 1
        s["rows"] += len(rows)
        s["max_rows"] = max(s["max_rows"], len(rows))
        s["max_prompts"] = max(s["max_prompts"], len({name for name, _ in rows}))
        k = 0
        for job, _, items in ready:
            records = [prediction_record(p) for p in preds[k : k + len(items)]]
            job.future.set_result({"prompt": job.payload[1], "predictions": records})
            k += len(items)

    def _generate(self, jobs: list[Job]) -> None:
        ready = self._prepared(jobs)
        if not ready:
            return
        config: GenerateConfig = ready[0][0].payload[3]
        rows = [(model, item) for _, model, its in ready for item in its]  # of any prompts: one generate call
        outs = generate_text_rows(rows, config, batch_size=self.config.max_batch)
        s = self.stats
        s["generate_batches"] += 1
        s["generate_rows"] += len(rows)
        s["max_generate_prompts"] = max(s["max_generate_prompts"], len({job.payload[1] for job, _, _ in ready}))
        k = 0
        for job, _, its in ready:
            rows = [{"text": o["text"], "finish_reason": o["finish_reason"]} for o in outs[k : k + len(its)]]
            job.future.set_result({"prompt": job.payload[1], "outputs": rows})
            k += len(its)


def _generate_groups(jobs: list[Job]) -> list[list[Job]]:
    """Generate requests that can share calls: greedy ones with the same settings, whatever
    their prompts; sampled ones run alone (their seed then gives the same text whatever else
    arrived)."""
    groups: dict[Any, list[Job]] = {}
    for i, job in enumerate(jobs):
        config = job.payload[3]
        groups.setdefault(i if config.do_sample else config, []).append(job)
    return list(groups.values())


def _client_error(e: BaseException) -> ClientError:
    if isinstance(e, ClientError):
        return e
    if isinstance(e, KeyError):
        return ClientError(404, str(e.args[0]) if e.args else "unknown prompt")
    if isinstance(e, PtuneError):
        return ClientError(422, _one_line(str(e)))
    return ClientError(500, _one_line(f"internal error: {type(e).__name__}: {e}"))


def _one_line(text: str) -> str:
    return " ".join(text.split())[:2000]
