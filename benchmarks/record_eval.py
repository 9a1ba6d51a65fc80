"""ReCoRD dev32 evaluation with and without the causal key/value-cache paths
(docs/speed.md): a random-init 4-layer, 256-wide GPT-2 with a tokenizer trained on the
passages, frozen, the paper's pattern; one row per (question, entity). The metrics must be
equal; the times are the point.

Usage: .venv/bin/python benchmarks/record_eval.py FEWGLUE_DIR   (the folder with ReCoRD/dev32.jsonl)
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from ptune.tasks.superglue import SPECS, SuperGlueConfig, build_model, evaluate_task
from ptune.tasks.superglue_data import read_task, split_path
from ptune.tiny import tiny_model, train_tokenizer


def main(data_dir: str) -> None:
    torch.set_num_threads(1)
    examples = list(read_task("ReCoRD", split_path(data_dir, "ReCoRD", "dev32")).examples)
    tok = train_tokenizer("gpt2", [e["passage"] for e in examples], vocab_size=2000)
    lm = tiny_model("gpt2", tok, hidden=256, layers=4, heads=4, positions=1024, dropout=0.0)
    spec = SPECS["ReCoRD"]
    model = build_model(spec, SuperGlueConfig(tasks=("ReCoRD",), train={"finetune_lm": False}), lm, tok, "causal", 1, "tiny")
    items = model.prepare(examples, [f"dev32:{i + 1}" for i in range(len(examples))])
    for cached in (True, False, True, False):  # alternating
        model.speed = dataclasses.replace(model.speed, prefix_cache=cached)
        t = time.perf_counter()
        metrics, _ = evaluate_task(spec, model, items, examples)
        print(f"prefix_cache={cached!s:5}  {time.perf_counter() - t:6.1f} s  {metrics}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(sys.argv[1])
