"""``ptune serve``: an HTTP server for many prompts on one frozen LM (FastAPI + uvicorn).

The base model is loaded once; the prompts are the checkpoints of a folder or a list
(:class:`ptune.registry.PromptRegistry`), refreshed without a restart. One worker thread
owns the model (:class:`ptune.batcher.Batcher`): requests of every prompt wait in a bounded
queue, and the worker scores the inputs of all requests that arrived within a short window,
up to ``max_batch`` rows, in one forward pass of the LM (:class:`ptune.multi.PromptBank`).

Endpoints (docs/serve.md has the request and response bodies):

* ``POST /v1/predict`` ``{"prompt": name, "inputs": [{field: value}, ...]}``: label and
  scores per input, as ``ptune predict`` gives them;
* ``POST /v1/generate``: open-ended text from a causal LM (:meth:`PTunedModel.generate_text`);
* ``GET /v1/prompts``: the prompts served and the refused checkpoints; ``GET /health``.

Errors answer ``{"error": "one line"}``: 400 malformed JSON or fields, 404 unknown prompt,
413 oversize, 422 inputs the prompt cannot take, 503 (with ``Retry-After``) when the queue
is full or a request waited too long.

Example:
    >>> service = Service.start("gpt2", "runs/prompts", ServeConfig())    # doctest: +SKIP
    >>> with running(service) as url:                                     # doctest: +SKIP
    ...     httpx.post(url + "/v1/predict", json={"prompt": "sst", "inputs": [{"text": "fine"}]})
"""

# no ``from __future__ import annotations``: FastAPI reads the handlers' annotations
# (``request: Request``, imported inside :func:`create_app`) as objects
import argparse
import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from .batcher import Batcher, Job, Overloaded
from .config import GenerateConfig
from .errors import ConfigError, PtuneError
from .model import prediction_record
from .multi import PromptBank
from .options import CommandOptions, Resolved
from .registry import PromptRegistry

__all__ = ["ServeConfig", "Service", "ClientError", "create_app", "running", "add_command"]

GENERATE_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "stop")


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


# ----------------------------------------------------------------------------- the worker's side
class Service:
    """The bank, its registry and the batcher whose worker thread runs every model call.

    ``stats`` counts the batches the worker ran: ``batches``, ``rows``, the largest batch
    (``max_rows``) and the most prompts in one forward pass (``max_prompts``).
    """

    def __init__(self, bank: PromptBank, registry: PromptRegistry, config: ServeConfig) -> None:
        self.bank, self.registry, self.config = bank, registry, config
        self.stats = {"batches": 0, "rows": 0, "max_rows": 0, "max_prompts": 0}
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
        items = [item for _, _, its in ready for item in its]
        outs = ready[0][1].generate_text(items, config, batch_size=self.config.max_batch)
        k = 0
        for job, _, its in ready:
            rows = [{"text": o["text"], "finish_reason": o["finish_reason"]} for o in outs[k : k + len(its)]]
            job.future.set_result({"prompt": job.payload[1], "outputs": rows})
            k += len(its)


def _generate_groups(jobs: list[Job]) -> list[list[Job]]:
    """Generate requests that can share calls: greedy ones of one prompt and settings;
    sampled ones run alone (their seed then gives the same text whatever else arrived)."""
    groups: dict[Any, list[Job]] = {}
    for i, job in enumerate(jobs):
        _, name, _, config = job.payload
        groups.setdefault(i if config.do_sample else (name, config), []).append(job)
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


# ----------------------------------------------------------------------------- HTTP
def create_app(service: Service) -> Any:
    """The FastAPI application of a :class:`Service`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="ptune serve", summary="P-tuned prompts on one frozen LM")
    config = service.config

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError) -> JSONResponse:
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
        return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"error": _client_error(e).message}, status_code=500)

    async def submit(payload: tuple, rows: int) -> JSONResponse:
        try:
            future = service.batcher.submit(payload, rows)
        except Overloaded as e:
            raise ClientError(503, f"overloaded: {e}; retry later", retry_after=1) from None
        try:
            return JSONResponse(await asyncio.wait_for(asyncio.wrap_future(future), config.timeout_s))
        except asyncio.TimeoutError:
            raise ClientError(503, f"not answered within {config.timeout_s:g} s; retry later", retry_after=1) from None

    @app.post("/v1/predict")
    async def predict(request: Request) -> Any:
        body = await _read_json(request, config)
        name, inputs = _inputs(body, config, ("prompt", "inputs"))
        return await submit(("predict", name, inputs), len(inputs))

    @app.post("/v1/generate")
    async def generate(request: Request) -> Any:
        body = await _read_json(request, config)
        name, inputs = _inputs(body, config, ("prompt", "inputs") + GENERATE_KEYS)
        options = {k: body[k] for k in GENERATE_KEYS if k in body}
        if isinstance(options.get("stop"), list):
            options["stop"] = tuple(options["stop"])
        try:
            gen = GenerateConfig(**options)
        except (ConfigError, TypeError) as e:
            raise ClientError(400, _one_line(str(e))) from None
        if gen.max_new_tokens > config.max_new_tokens:
            raise ClientError(413, f"max_new_tokens {gen.max_new_tokens} exceeds this server's limit "
                                   f"{config.max_new_tokens}")
        return await submit(("generate", name, inputs, gen), len(inputs))

    @app.get("/v1/prompts")
    async def prompts() -> Any:
        return await submit(("prompts",), 1)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "base": service.bank.base_model, "prompts": len(service.bank),
                "waiting": service.batcher.waiting, "max_queue": config.max_queue, **service.stats}

    return app


async def _read_json(request: Any, config: ServeConfig) -> dict[str, Any]:
    """The request's JSON object, read at most ``max_body_bytes`` far."""
    limit = config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"request body of {declared} bytes exceeds {limit}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ClientError(413, f"request body exceeds {limit} bytes")
    try:
        body = json.loads(bytes(raw))
    except (ValueError, RecursionError) as e:
        raise ClientError(400, _one_line(f"malformed JSON: {e}")) from None
    if not isinstance(body, dict):
        raise ClientError(400, f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _inputs(body: dict[str, Any], config: ServeConfig, accepted: tuple[str, ...]) -> tuple[str, list[dict]]:
    """The prompt name and the inputs of a request body, checked for shape and size."""
    unknown = sorted(set(body) - set(accepted))
    if unknown:
        raise ClientError(400, f"unknown field {unknown[0]!r}; accepted: {', '.join(accepted)}")
    for key in ("prompt", "inputs"):
        if key not in body:
            raise ClientError(400, f"missing field {key!r}")
    name, inputs = body["prompt"], body["inputs"]
    if not isinstance(name, str) or not name:
        raise ClientError(400, f"field 'prompt': expected a prompt name, got {json.dumps(name)[:80]}")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError(400, "field 'inputs': expected a non-empty list of objects")
    if len(inputs) > config.max_inputs:
        raise ClientError(413, f"{len(inputs)} inputs exceed this server's limit of {config.max_inputs} per request")
    for i, ex in enumerate(inputs):
        if not isinstance(ex, dict):
            raise ClientError(400, f"inputs[{i}]: expected an object with the prompt's fields, got "
                                   f"{type(ex).__name__}")
        n = _chars(ex)
        if n > config.max_chars:
            raise ClientError(413, f"inputs[{i}]: {n} characters exceed this server's limit of {config.max_chars}")
    return name, inputs


def _chars(value: Any) -> int:
    """Characters of text in a JSON value (keys and strings, nested)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _chars(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return len(str(value))


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``port=0``: a free port)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as e:
        sock.close()
        raise ConfigError("port", f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _url(host: str, sock: socket.socket) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"


@contextlib.contextmanager
def running(service: Service, host: str = "127.0.0.1", port: int = 0, startup_s: float = 30.0) -> Iterator[str]:
    """Serve ``service`` with uvicorn on a background thread while the block runs; yields
    the base URL (``port=0``: a free port). The service is left open."""
    import uvicorn

    sock = _listen(host, port)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ptune-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if not server.started:
            raise RuntimeError(f"the server did not start within {startup_s:g} s")
        yield _url(host, sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# ----------------------------------------------------------------------------- the command
EXAMPLES = """examples:
  ptune serve --base gpt2 --prompts runs/prompts          # every checkpoint folder in runs/prompts
  ptune serve --base gpt2 --prompts sst=runs/sst,topic=runs/topic --port 8080 --max-batch 64
  curl -s localhost:8000/v1/predict -d '{"prompt": "sst", "inputs": [{"text": "a fine film"}]}'
"""


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``ptune`` command's subcommands."""
    p = sub.add_parser("serve", help="serve many prompts of one frozen LM over HTTP",
                       description="An HTTP server (FastAPI + uvicorn) that loads the base model once and the "
                                   "prompt checkpoints trained on it; requests of every prompt are batched into "
                                   "shared forward passes. API: docs/serve.md.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_serve)
    opts = CommandOptions(p)
    p.add_argument("--base", required=True, help="hub name or folder of the base model the prompts were trained on")
    p.add_argument("--prompts", required=True,
                   help="a folder of checkpoints (each subfolder is one prompt, named after it; checkpoints added "
                        "later are served without a restart), or a comma-separated list of checkpoint or run "
                        "folders, each optionally name=path")
    opts.adopt()
    opts.fields(ServeConfig, title="ServeConfig options")


def cmd_serve(o: Resolved) -> int:
    """Run the server until interrupted; one line on standard error says where it listens."""
    import uvicorn

    with o.blame():
        config = ServeConfig(**o.section(only=ServeConfig))
    sock = _listen(config.host, config.port)
    service = Service.start(o["base"], o["prompts"], config)
    names = ", ".join(sorted(service.bank)) or "none yet"
    refused = len(service.registry.refused)
    print(f"ptune serve: {len(service.bank)} prompt(s) ({names}) on {service.bank.base_model} at "
          f"{_url(config.host, sock)}" + (f"; {refused} checkpoint(s) refused, see /v1/prompts" if refused else ""),
          file=sys.stderr, flush=True)
    try:
        uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="off")).run(sockets=[sock])
    finally:
        service.close()
        sock.close()
    return 0
