"""The table of a gpu_check.sh run: per model, batch and compile mode, each side's training
and eval samples/s, useful training TFLOP/s and its share of the bf16 peak, and ptune's
ratios to PEFT as documented and to PEFT as a careful user runs it.

Usage: python benchmarks/gpu_table.py ROWS.jsonl   (the rows of one run of ptune bench --json)
"""

from __future__ import annotations

import json
import sys
from itertools import groupby

from ptune.bench import ratios


def table(rows: list[dict]) -> str:
    head = ["model", "batch", "compile", "side", "train samples/s", "eval samples/s", "train TFLOP/s",
            "% of peak", "ptune / PEFT documented (train, eval)", "ptune / PEFT careful (train, eval)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    key = lambda r: (r["arch"], r["batch"], str(r.get("compiled") or "no"))  # noqa: E731
    for (arch, batch, compiled), group in groupby(rows, key=key):
        group = list(group)
        r = ratios(group)
        cells = {side: f"{v['train']:.2f}x, {v['eval']:.2f}x" for side, v in r.items()}
        for i, row in enumerate(group):
            first = i == 0  # the ratios once per model, batch and compile mode
            lines.append(f"| {arch} | {batch} | {compiled} | {row['side']} | {row['train_samples_per_s']} | "
                         f"{row['eval_samples_per_s']} | {row['train_tflops']} | {row.get('train_peak_pct', '–')} | "
                         f"{cells.get('peft', '–') if first else ''} | {cells.get('peft-careful', '–') if first else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    with open(sys.argv[1], encoding="utf-8") as fh:
        sys.stdout.write(table([json.loads(line) for line in fh if line.strip()]))
