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
    assert "ptune/PEFT (as documented): training" in table and "ptune/PEFT (careful use): training" in table
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["side"] for r in rows] == ["ptune", "peft", "peft-careful"]
    for r in rows:
        assert r["train_samples_per_s"] > 0 and r["eval_samples_per_s"] > 0 and r["trainable_params"] > 0
    assert rows[0]["layout"] == layout and rows[1]["layout"] == rows[2]["layout"] == "pseudo-first"
    assert rows[1]["trainable_params"] == rows[2]["trainable_params"]  # the same PEFT prompt encoder
    if arch == "bert-tiny":
        assert "FEATURE_EXTRACTION" in rows[1]["note"]


def test_careful_peft_side_keeps_one_position_and_scores_the_candidates():
    """The careful PEFT side asks the causal LM for the last position's logits only and
    trains on the candidate words: its loss equals the cross-entropy over those words
    computed from the full forward."""
    import torch

    from ptune.bench import _peft_side, random_model

    lm, kind = random_model("tiny")
    for p in lm.parameters():
        p.requires_grad_(False)
    ids, target = torch.randint(10, 900, (3, 6)), torch.tensor([0, 4, 2])
    calls = []
    lm.register_forward_hook(lambda m, a, kw, out: calls.append(out.logits.shape), with_kwargs=True)
    side = _peft_side(lm, kind, ids, target, "mlp", 3, 5, "cpu", torch.float32, careful=True)
    side.eval_step()
    assert calls[-1] == (3, 1, lm.config.vocab_size)  # logits_to_keep=1
    side.model.train()
    loss = side.loss()
    assert not lm.training  # the frozen LM runs in eval mode while the prompt trains
    full = side.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1, :5]
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(full, target))


@pytest.mark.slow  # four benchmark runs
def test_gpu_check_script_runs_its_rows_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh with TINY=1: its eager rows with tiny models on the CPU (the compiled
    rows take minutes to compile there)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "gpu.jsonl"
    env = {**os.environ, "TINY": "1", "PY": sys.executable, "OUT": str(out), "PEAK_TFLOPS": "1"}
    proc = subprocess.run(["bash", str(root / "benchmarks/gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    runs = [(r["arch"], r["batch"], r["compiled"] or "no") for r in rows if r["side"] == "ptune"]
    assert runs == [(a, b, "no") for a in ("tiny", "bert-tiny") for b in (32, 128)]
    assert [r["side"] for r in rows] == ["ptune", "peft", "peft-careful"] * 4
    assert all(r["dtype"] == "bf16" and r["train_peak_pct"] == round(100 * r["train_tflops"], 1) for r in rows)
    table = proc.stdout.splitlines()
    assert "% of peak" in table[1] and sum(line.startswith("| tiny |") for line in table) == 6
