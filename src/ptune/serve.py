"""``ptune serve``: an HTTP server for many prompts on one frozen LM (FastAPI + uvicorn).

The base model is loaded once; the prompts are the checkpoints of a folder or a list
(:class:`ptune.registry.PromptRegistry`), refreshed without a restart. One worker thread
owns the model (:class:`ptune.service.Service`): requests of every prompt wait in a bounded
queue, and the worker scores the inputs of all requests that arrived within a short window,
up to ``max_batch`` rows, in one forward pass of the LM (:class:`ptune.multi.PromptBank`).
The command runs the service in a process of its own (:mod:`ptune.worker`), so that the
HTTP side and the model run at the same time.

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

from .config import GenerateConfig
from .errors import ConfigError
from .options import CommandOptions, Resolved
from .service import ClientError, ServeConfig, Service, _client_error, _one_line
from .worker import WorkerProcess

__all__ = ["ServeConfig", "Service", "ClientError", "create_app", "running", "add_command"]

GENERATE_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "stop")


# ----------------------------------------------------------------------------- HTTP
def create_app(service: Service | WorkerProcess) -> Any:
    """The FastAPI application of a :class:`Service` (in this process or a worker process)."""
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
        future = service.submit(payload, rows)
        try:
            return JSONResponse(await asyncio.wait_for(asyncio.wrap_future(future), config.timeout_s))
        except asyncio.TimeoutError:
            raise ClientError(503, f"not answered within {config.timeout_s:g} s; retry later", retry_after=1) from None

    # The two request routes are Starlette's plain routes (FastAPI's own routing): they read
    # and check their bodies themselves, and skip FastAPI's per-request dependency and
    # response handling, a large part of the HTTP side's time per request.
    async def predict(request: Request) -> Any:
        body = await _read_json(request, config)
        name, inputs = _inputs(body, config, ("prompt", "inputs"))
        return await submit(("predict", name, inputs), len(inputs))

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

    app.add_route("/v1/predict", predict, methods=["POST"])
    app.add_route("/v1/generate", generate, methods=["POST"])

    @app.get("/v1/prompts")
    async def prompts() -> Any:
        return await submit(("prompts",), 1)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", **service.health()}

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
def running(service: Service | WorkerProcess, host: str = "127.0.0.1", port: int = 0, startup_s: float = 30.0) -> Iterator[str]:
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
    try:
        service = (WorkerProcess if config.worker_process else Service).start(o["base"], o["prompts"], config)
        try:
            info = service.summary()
            refused = info["refused"]
            print(f"ptune serve: {len(info['names'])} prompt(s) ({', '.join(info['names']) or 'none yet'}) on "
                  f"{info['base']} at {_url(config.host, sock)}"
                  + (f"; {refused} checkpoint(s) refused, see /v1/prompts" if refused else ""), file=sys.stderr,
                  flush=True)
            server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", lifespan="off"))
            server.run(sockets=[sock])
        finally:
            service.close()
    finally:
        sock.close()
    return 0

