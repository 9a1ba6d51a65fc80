"""The tiny tokenizers the tests build are the same in every process (hash-order free)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import hashlib, json
from ptune.tiny import train_tokenizer
corpus = ["the movie was great and i loved it .", "a wonderful story , bad film ?"] * 4
for family in ("bert", "deberta-v2", "gpt2", "llama"):
    tok = train_tokenizer(family, corpus, vocab_size=120)
    print(family, hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest())
"""


def test_tokenizers_are_identical_across_processes():
    outs = [subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert outs[0].count("\n") == 4 and outs[0] == outs[1]
