"""The benchmark command runs end to end on the tiny sizes (timings are not asserted)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")

from ptune.cli import main  # noqa: E402


@pytest.mark.parametrize("arch,encoder,layout", [("tiny", "mlp", "around"), ("bert-tiny", "lstm", "around"),
                                                 ("tiny", "mlp", "text-first"), ("tiny", "lstm", "pseudo-first")])
def test_bench_runs(tmp_path, capsys, arch, encoder, layout):
    out = tmp_path / "b.jsonl"
    assert main(["bench", "--arch", arch, "--encoder", encoder, "--steps", "2", "--warmup", "1", "--batch", "4",
                 "--layout", layout, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "ptune/PEFT: training" in table
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["side"] for r in rows] == ["ptune", "peft"]
    for r in rows:
        assert r["train_samples_per_s"] > 0 and r["eval_samples_per_s"] > 0 and r["trainable_params"] > 0
    assert rows[0]["layout"] == layout and rows[1]["layout"] == "pseudo-first"
    if arch == "bert-tiny":
        assert "FEATURE_EXTRACTION" in rows[1]["note"]


@pytest.mark.slow  # six benchmark rows, each a subprocess
def test_gpu_check_script_runs_its_rows_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh with tiny models on the CPU: every row it would run on a GPU."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "gpu.jsonl"
    env = {**os.environ, "DEVICE": "cpu", "GPT": "tiny", "BERT": "bert-tiny", "STEPS": "1", "WARMUP": "1",
           "PY": sys.executable, "OUT": str(out)}
    proc = subprocess.run(["bash", str(root / "benchmarks/gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    ptune_rows = [(r["arch"], r["batch"], r["layout"]) for r in rows if r["side"] == "ptune"]
    assert ptune_rows == [("tiny", 32, "around"), ("tiny", 128, "around"), ("bert-tiny", 32, "around"),
                          ("tiny", 128, "pseudo-first"), ("tiny", 32, "text-first")]
    assert all(r["dtype"] == "bf16" for r in rows) and proc.stdout.count("ptune/PEFT") == 5
