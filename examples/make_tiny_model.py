"""Build a tiny random-init language model folder offline, loadable by any HF Auto class.

The tokenizer is trained on the corpus (the ``text`` fields of .jsonl files, the lines of
any other file) plus the verbalizer words, so that each word is one token; the model
is a random-init model of the family's architecture. The folder then works wherever a
hub name does (``ptune train --model DIR``, ``PTunedModel.from_base(DIR, ...)``).

The LM is random, not pretrained: it knows nothing about language. It is initialised
with a wide range (0.2 instead of the usual 0.02) so that a frozen LM still reacts to
its input strongly enough for a prompt to learn something through it.

    python examples/make_tiny_model.py --family gpt2 \\
        --corpus examples/sentiment/train.jsonl examples/sentiment/dev.jsonl \\
        --output .cache/demo/tiny-gpt2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from ptune.tiny import FAMILIES, _MASKED, tiny_model, train_tokenizer


def read_corpus(paths: list[Path]) -> list[str]:
    """Sentences: the string fields of JSON lines (except ``label``), other files line by line."""
    texts: list[str] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            if path.suffix in (".jsonl", ".ndjson"):
                row = json.loads(line)
                texts += [v for k, v in row.items() if isinstance(v, str) and k != "label"]
            else:
                texts.append(line.strip())
    return texts


@contextlib.contextmanager
def _native_stdout_silenced():
    """Silence what native code writes to stdout (the tokenizers trainer's progress)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def build(family: str, corpus: list[str], words: list[str], output: Path, *, seed: int = 0,
          vocab_size: int = 400, hidden: int = 64, layers: int = 2, heads: int = 2,
          init_range: float = 0.2) -> None:
    """Train the tokenizer, build the model and save both to ``output``."""
    import torch

    torch.manual_seed(seed)
    # the words appear after a space and at the start of a sentence, many times, so that
    # the tokenizer learns them as single tokens in either spelling
    word_lines = [f"{w} . it was {w} ." for w in words] * 20
    with _native_stdout_silenced():
        tok = train_tokenizer(family, corpus * 4 + word_lines, vocab_size=vocab_size)
    output.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(output)
    lm = tiny_model(family, tok, hidden=hidden, layers=layers, heads=heads, init_range=init_range,
                    dropout=0.0, seed=seed)
    lm.save_pretrained(output)


def check(family: str, output: Path, words: list[str]) -> str:
    """Load the folder back with the Auto classes; a line describing it."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(output)
    auto = AutoModelForMaskedLM if family in _MASKED else AutoModelForCausalLM
    lm = auto.from_pretrained(output)
    for w in words:
        for spelling in (w, " " + w):
            ids = tok(spelling, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                print(f"warning: {spelling!r} is {len(ids)} tokens", file=sys.stderr)
    n = sum(p.numel() for p in lm.parameters())
    return f"{output}: {type(lm).__name__}, {n:,} parameters, vocabulary {len(tok)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a tiny random-init LM folder offline.")
    parser.add_argument("--family", required=True, choices=FAMILIES, help="architecture and tokenizer kind")
    parser.add_argument("--corpus", required=True, nargs="+", type=Path, help=".jsonl (text fields) or text files")
    parser.add_argument("--output", required=True, type=Path, help="folder to write")
    parser.add_argument("--words", nargs="+", default=["good", "bad"], help="verbalizer words (default: good bad)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--init-range", type=float, default=0.2, help="std of the random weights")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    corpus = read_corpus(args.corpus)
    build(args.family, corpus, args.words, args.output, seed=args.seed,
          vocab_size=args.vocab_size, hidden=args.hidden, layers=args.layers, heads=args.heads,
          init_range=args.init_range)
    print(check(args.family, args.output, args.words))


if __name__ == "__main__":
    main()
