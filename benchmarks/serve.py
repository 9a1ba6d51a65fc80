"""Requests/s and latency of ``ptune serve``: mixed-prompt batching against one request per
forward pass.

The server is ``ptune serve`` in its own process on loopback, over a random-init model of a
named size (``ptune.bench.random_model``: config only, no download) saved once to a work
folder, with 1 or 8 P-tuned prompts (random-init prompt encoders; templates, encoders and
verbalizers differ). Closed-loop clients in this process (plain asyncio streams, one
kept-alive connection each): each sends one request of one input (8 to 16 words), waits for
the answer and sends the next, for a warm-up and then ``--seconds`` of measurement;
requests/s counts the answers within the measurement. With more clients than
``--max-batch``, the server always has a full batch waiting. Every combination runs once, in
this order: 1 prompt and 8 prompts; the model in a worker process (the default) and on a
thread of the server's process; ``--max-batch 32`` (batching across requests and prompts)
and ``--max-batch 1`` (one request per forward pass). The table gives requests/s, latency
p50/p99, the mean rows per forward pass (the server's ``/health`` counters) and, for each
batching server, its requests/s over the faster of the two one-request-per-pass servers.

Usage:
    nice -n 10 .venv/bin/python benchmarks/serve.py [--arch gpt2-small] [--clients 64]
        [--seconds 60] [--warmup 30] [--threads 1] [--workers process,thread]
        [--json benchmarks/serve.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from ptune import EncoderConfig, PromptConfig, PTunedModel, save_checkpoint
from ptune.bench import _WORDS, _tokenizer, random_model
from ptune.files import write_jsonl_atomic
from ptune.tasks.lama_vocab import single_token_words

TEMPLATES = [  # (template, encoder, number of labels)
    ("[P*3] {text} [P*3] [MASK]", "lstm", 2),
    ("{text} [P*6] [MASK]", "mlp", 2),
    ("[P*9] {text} [MASK]", "none", 3),
    ("[P*2] {text} ? [P*2] [MASK]", "mlp", 4),
    ("{text} [P*3] [MASK]", "lstm", 2),
    ("[P*4] {text} [P] [MASK]", "none", 5),
    ("[P*6] {text} [MASK]", "mlp", 2),
    ("[P] {text} [P*5] [MASK]", "lstm", 3),
]


def build(work: Path, arch: str) -> tuple[Path, list[Path]]:
    """The base model folder and eight prompt checkpoints (reused when already there)."""
    base, prompts = work / "base", [work / "prompts" / f"p{i}" for i in range(len(TEMPLATES))]
    if (base / "config.json").is_file() and all((p / "ptune_config.json").is_file() for p in prompts):
        return base, prompts
    lm, _ = random_model(arch)
    tok = _tokenizer("causal")
    lm.save_pretrained(base)
    tok.save_pretrained(base)
    words = single_token_words(_WORDS, tok, space_before=True)
    for i, ((template, encoder, n), path) in enumerate(zip(TEMPLATES, prompts)):
        verbalizer = {f"label{k}": words[(7 * i + k) % len(words)] for k in range(n)}
        cfg = PromptConfig(template=template, verbalizer=verbalizer, encoder=EncoderConfig(type=encoder))
        save_checkpoint(PTunedModel(lm, tok, cfg, base_model=str(base), seed=i), path)
    return base, prompts


def start_server(base: Path, prompts: list[Path], max_batch: int, threads: int,
                 worker: str = "process") -> tuple[subprocess.Popen, str]:
    """``ptune serve`` in its own process (its model in a worker process, or on a thread);
    returns it and its URL."""
    cmd = [sys.executable, "-m", "ptune.cli", "serve", "--base", str(base), "--port", "0",
           "--prompts", ",".join(f"{p.name}={p}" for p in prompts), "--max-batch", str(max_batch),
           "--worker-process" if worker == "process" else "--no-worker-process",
           "--threads", str(threads), "--max-queue", "1024", "--rescan-s", "0"]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:  # up to "ptune serve: ... at http://127.0.0.1:PORT"
        if line.startswith("ptune serve: ") and " at http" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe from filling
            return proc, line.rsplit(" at ", 1)[1].strip()
        lines.append(line.strip())
    proc.wait()
    raise SystemExit(f"the server did not start: {' | '.join(lines[-3:])}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str,
                body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection: its status and body. The load
    generator is plain asyncio streams because it must cost far less CPU than the server
    it measures, on the same cores (an httpx client spends several times the server's CPU
    time per request)."""
    writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % (path.encode(), host.encode(), len(body)) + body)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = next((int(x.split(b":", 1)[1]) for x in lines[1:] if x.lower().startswith(b"content-length:")), None)
    if length is None:
        raise SystemExit(f"the server answered {status} without a Content-Length")
    return status, await reader.readexactly(length)


async def closed_loop(url: str, names: list[str], clients: int, warmup: float, seconds: float,
                      seed: int) -> dict[str, Any]:
    """Each client sends one request at a time on its own connection until the end; the
    requests answered between the end of the warm-up and the end count, with their latencies."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    rng = random.Random(seed)
    start = time.perf_counter()
    measure_from, until = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    failures: dict[int, int] = {}

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        i = k
        try:
            while time.perf_counter() < until:
                text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 16)))
                body = json.dumps({"prompt": names[i % len(names)], "inputs": [{"text": text}]}).encode()
                t0 = time.perf_counter()
                status, answer = await _post(reader, writer, host, "/v1/predict", body)
                t1 = time.perf_counter()
                if status != 200 or "predictions" not in json.loads(answer):
                    failures[status] = failures.get(status, 0) + 1
                elif measure_from <= t1 <= until:
                    latencies.append(t1 - t0)
                i += clients
        finally:
            writer.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    health = httpx.get(url + "/health", timeout=30).json()
    if len(latencies) < 2:
        raise SystemExit(f"only {len(latencies)} request(s) answered within the measured {seconds:g} s; "
                         "measure longer (--seconds)")
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "rps": len(latencies) / seconds, "p50_ms": 1000 * q[49],
            "p99_ms": 1000 * q[98], "rows_per_pass": health["rows"] / max(1, health["batches"]),
            "failures": failures}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table: each batching row's ratio is over the faster one-request-per-pass server
    (either worker) with the same prompts."""
    out = ["| prompts | model runs in | server | requests/s | p50 ms | p99 ms | rows per pass | "
           "batching / best one per pass |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = [o["rps"] for o in rows if o["prompts"] == r["prompts"] and o["max_batch"] == 1]
        ratio = r["rps"] / max(base) if base and r["max_batch"] > 1 else None
        server = f"`--max-batch {r['max_batch']}`" + (" (one request per pass)" if r["max_batch"] == 1 else "")
        where = "a worker process" if r.get("worker", "process") == "process" else "a thread"
        out.append(f"| {r['prompts']} | {where} | {server} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                   f"{r['rows_per_pass']:.1f} | {f'**{ratio:.2f}x**' if ratio else ''} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="gpt2-small", help="model size (ptune.bench.ARCHS; default gpt2-small)")
    p.add_argument("--clients", type=int, default=64, help="concurrent closed-loop clients (default 64)")
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run (default 60)")
    p.add_argument("--warmup", type=float, default=30.0, help="warm-up seconds per run (default 30)")
    p.add_argument("--batch", type=int, default=32, help="the batching server's --max-batch (default 32)")
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads (default 1)")
    p.add_argument("--workers", default="process,thread",
                   help="where the server runs the model: process, thread or both (default process,thread)")
    p.add_argument("--work", help="folder for the base model and prompts (default: a temporary one)")
    p.add_argument("--json", help="append the rows to this JSON lines file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base, prompts = build(Path(args.work or tmp), args.arch)
        rows = []
        for n, worker, max_batch in [(n, w, b) for n in (1, 8) for w in args.workers.split(",")
                                     for b in (args.batch, 1)]:
            proc, url = start_server(base, prompts[:n], max_batch, args.threads, worker)
            try:
                result = asyncio.run(closed_loop(url, [p.name for p in prompts[:n]], args.clients, args.warmup,
                                                 args.seconds, seed=n))
            finally:
                stop_server(proc)
            row = {"arch": args.arch, "prompts": n, "worker": worker, "max_batch": max_batch,
                   "clients": args.clients, "seconds": args.seconds, "threads": args.threads, **result,
                   "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()}
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    sys.stdout.write(markdown(rows))
    if args.json:
        path = Path(args.json)
        old = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
        write_jsonl_atomic(path, old + rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
