"""Open-ended generation for inputs of several prompts on one frozen LM: one ``generate``
call over the rows of every prompt (``PromptBank.generate_text``, what ``ptune serve`` does
with concurrent greedy requests) against one call per prompt (each prompt's
``generate_text`` on its own rows).

A random-init model of a named size (``ptune.bench.random_model``: config only, no
download) carries ``--prompts`` P-tuned prompts (random-init encoders; templates differ).
Each repetition takes ``--rows`` inputs (8 to 16 words) spread evenly over the prompts and
writes ``--new-tokens`` tokens greedily for each, both ways, alternating which goes first;
the two ways' texts are checked to be equal. The table gives rows/s per way and the ratio.

Usage:
    nice -n 10 .venv/bin/python benchmarks/generate_mixed.py [--arch gpt2-small] [--prompts 8]
        [--rows 32] [--new-tokens 16] [--repeats 5] [--threads 1] [--json benchmarks/generate_mixed.jsonl]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from typing import Any

import torch

from ptune import PromptConfig, PTunedModel
from ptune.bench import _WORDS, _tokenizer, random_model
from ptune.config import GenerateConfig
from ptune.files import append_jsonl_atomic
from ptune.multi import PromptBank

TEMPLATES = ["[P*3] {text} [P*3] [MASK]", "{text} [P*6] [MASK]", "[P*9] {text} [MASK]", "[P*2] {text} ? [P*2] [MASK]",
             "{text} [P*3] [MASK]", "[P*4] {text} [P] [MASK]", "[P*6] {text} [MASK]", "[P] {text} [P*5] [MASK]"]


def build(arch: str, prompts: int) -> PromptBank:
    lm, _ = random_model(arch)
    tok = _tokenizer("causal")
    bank = PromptBank(lm, tok)
    for i in range(prompts):
        cfg = PromptConfig(template=TEMPLATES[i % len(TEMPLATES)], verbalizer={"a": " the", "b": " a"})
        bank.add(f"p{i}", PTunedModel(lm, tok, cfg, seed=i))
    return bank


def per_prompt(bank: PromptBank, rows: list[tuple[str, dict]], config: GenerateConfig, batch: int) -> list[Any]:
    """One ``generate_text`` call per prompt (its rows only), answers put back in row order."""
    out: list[Any] = [None] * len(rows)
    for name in dict.fromkeys(n for n, _ in rows):
        idx = [i for i, (n, _) in enumerate(rows) if n == name]
        for i, o in zip(idx, bank[name].generate_text([rows[i][1] for i in idx], config, batch_size=batch)):
            out[i] = o
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="gpt2-small", help="model size (ptune.bench.ARCHS; default gpt2-small)")
    p.add_argument("--prompts", type=int, default=8, help="prompts on the LM (default 8)")
    p.add_argument("--rows", type=int, default=32, help="inputs per repetition, spread over the prompts (default 32)")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens written per input (default 16)")
    p.add_argument("--repeats", type=int, default=5, help="measured repetitions per way (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", help="append the result row to this JSON lines file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bank = build(args.arch, args.prompts)
    config = GenerateConfig(max_new_tokens=args.new_tokens)
    rng = random.Random(0)
    ways = {"one call, all prompts": lambda rows: bank.generate_text(rows, config, batch_size=args.rows),
            "one call per prompt": lambda rows: per_prompt(bank, rows, config, args.rows)}
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    for rep in range(args.repeats + 1):  # the first repetition warms up
        rows = [(f"p{i % args.prompts}", {"text": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 16)))})
                for i in range(args.rows)]
        texts = {}
        for w in (list(ways) if rep % 2 else list(ways)[::-1]):
            t0 = time.perf_counter()
            texts[w] = [o["ids"] for o in ways[w](rows)]
            if rep:
                seconds[w].append(time.perf_counter() - t0)
        if len({tuple(map(tuple, t)) for t in texts.values()}) != 1:
            raise SystemExit("the two ways wrote different texts")
    rate = {w: args.rows / statistics.median(s) for w, s in seconds.items()}
    row = {"arch": args.arch, "prompts": args.prompts, "rows": args.rows, "new_tokens": args.new_tokens,
           "threads": args.threads, **{f"rows_per_s[{w}]": round(r, 2) for w, r in rate.items()},
           "ratio": round(rate["one call, all prompts"] / rate["one call per prompt"], 3),
           "torch": torch.__version__, "machine": platform.machine()}
    print(f"| arch | prompts | rows | new tokens | {' | '.join(f'{w} rows/s' for w in ways)} | ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.arch} | {args.prompts} | {args.rows} | {args.new_tokens} | "
          f"{' | '.join(f'{r:.1f}' for r in rate.values())} | **{row['ratio']:.2f}x** |")
    if args.json:
        append_jsonl_atomic(args.json, [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
