"""benchmarks/serve.py end to end on the tiny size: its prompts load into a server, its
closed-loop clients get answers, its table has the batching ratio."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from ptune.serve import ServeConfig, Service, running

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve.py"


def _script():
    spec = importlib.util.spec_from_file_location("serve_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_serve_benchmark_on_a_tiny_model(tmp_path):
    bench = _script()
    base, prompts = bench.build(tmp_path, "tiny")
    assert len(prompts) == 8
    source = ",".join(f"{p.name}={p}" for p in prompts)
    rows = []
    for max_batch in (8, 1):
        service = Service.start(str(base), source, ServeConfig(max_batch=max_batch, rescan_s=0))
        try:
            with running(service) as url:
                result = asyncio.run(bench.closed_loop(url, [p.name for p in prompts], clients=4, warmup=0.1,
                                                       seconds=0.6, seed=0))
        finally:
            service.close()
        assert result["failures"] == {} and result["requests"] > 2 and result["p99_ms"] >= result["p50_ms"] > 0
        assert (result["rows_per_pass"] == 1.0) == (max_batch == 1)
        rows.append({"prompts": 8, "max_batch": max_batch, **result})
    rows.append({**rows[-1], "worker": "thread", "rps": rows[-1]["rps"] / 2})  # a slower one-per-pass server
    table = bench.markdown(rows)
    ratio = rows[0]["rps"] / rows[1]["rps"]  # over the faster of the two
    assert f"| 8 | a worker process | `--max-batch 8` | {rows[0]['rps']:.1f} |" in table
    assert f"**{ratio:.2f}x** |" in table and table.count("x** |") == 1


def test_the_mixed_generation_benchmark_on_a_tiny_model(tmp_path, capsys):
    """benchmarks/generate_mixed.py: both ways write the same texts (it checks), the table
    has the ratio and the JSON row is appended."""
    import json

    spec = importlib.util.spec_from_file_location("generate_benchmark", SCRIPT.parent / "generate_mixed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "g.jsonl"
    assert module.main(["--arch", "tiny", "--prompts", "3", "--rows", "6", "--new-tokens", "3", "--repeats", "1",
                        "--json", str(out)]) == 0
    assert "| tiny | 3 | 6 | 3 |" in capsys.readouterr().out
    row = json.loads(out.read_text())
    assert row["ratio"] > 0 and row["rows_per_s[one call per prompt]"] > 0
