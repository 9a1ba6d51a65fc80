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
