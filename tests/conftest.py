"""Shared fixtures: tiny tokenizers trained here, random-init models from configs, the mini
world (built once per session) and the ``slow`` marker."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One thread: the tiny models gain nothing from a second one, and on a machine whose cores
# are busy a second thread waits for a free core (tests then run tens of times slower).
torch.set_num_threads(1)

from ptune.tiny import tiny_model, train_tokenizer  # noqa: E402

POS = ["great", "wonderful", "brilliant", "loved"]
NEG = ["terrible", "awful", "boring", "hated"]
CORPUS = [
    "the movie was great and i loved it .",
    "the film was terrible , i hated every minute of it .",
    "a wonderful story with brilliant acting and good music .",
    "boring plot and awful dialogue , bad film .",
    "Question : is it good ? Answer : yes . Is it bad ? Answer : no .",
    "The cat sat on the mat while the dog slept in the garden .",
    "Paris is the capital of France and Rome is the capital of Italy .",
    "premise hypothesis entailment maybe true false not sure why who what",
] * 8

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The real LAMA and FewGLUE files, in the folder beside the repository (tests that need them
are skipped where it is absent)."""

FAMILIES = ["gpt2", "llama", "bert", "roberta", "albert"]
MASKED = {"bert", "roberta", "albert", "deberta-v2"}

_TOKENIZERS: dict[str, object] = {}


GROUPS = {
    "unit": "one component against hand-computed expectations",
    "invariants": "a fast path or a resumed/distributed run against its reference (full forward, plain LM, "
                  "uninterrupted run, one process)",
    "tasks": "the harnesses (LAMA, SuperGLUE, the world, the fine-tuning baseline) on tiny models",
    "e2e": "the command line and the demo end to end, in-process",
}
"""The test folders; each test is marked with its folder's name (e.g. ``pytest -m invariants``)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than about 10 s; runs by default "
                                       "(deselect with -m 'not slow')")
    for name, what in GROUPS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parent
    for item in items:
        group = Path(item.fspath).resolve().relative_to(root).parts[0]
        if group in GROUPS:
            item.add_marker(group)


def mini_world_config():
    """``WorldConfig.mini()`` built on one thread (see the note on threads above)."""
    from ptune.world import WorldConfig

    return dataclasses.replace(WorldConfig.mini(), threads=1)


def stale_world(world: Path, to: Path, *, keep: int = 0, edit: bool = False, models: bool = False) -> Path:
    """A copy of ``world`` (with its LMs if ``models``) as an older ptune built it:
    ``manual_templates`` left out of relations.jsonl after the first ``keep`` relations;
    ``edit`` also changes the last relation's label (then not refreshable)."""
    shutil.copytree(world, to, ignore=None if models else shutil.ignore_patterns("gpt", "bert"))
    rows = [json.loads(line) for line in (to / "lama" / "relations.jsonl").read_text().splitlines()]
    rows = rows[:keep] + [{k: v for k, v in r.items() if k != "manual_templates"} for r in rows[keep:]]
    if edit:
        rows[-1]["label"] += " (edited)"
    (to / "lama" / "relations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return to


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini synthetic world (:func:`mini_world_config`: LAMA files, GPT and BERT), built
    once per test session. Tests read it and never write into it."""
    from ptune.world import build_world

    out = tmp_path_factory.mktemp("world") / "mini"
    build_world(out, mini_world_config())
    return out


def tokenizer_for(family: str):
    if family not in _TOKENIZERS:
        _TOKENIZERS[family] = train_tokenizer(family, CORPUS, vocab_size=400, extra_tokens=["yes", "no"])
    return _TOKENIZERS[family]


def pair(family: str, seed: int = 0, **kw):
    """A fresh (model, tokenizer) of ``family``; the tokenizer is shared, the model new."""
    tok = tokenizer_for(family)
    return tiny_model(family, tok, seed=seed, **kw), tok


def saved_model(folder: Path, family: str = "gpt2") -> Path:
    """A fresh tiny model of ``family`` (64 hidden, no dropout) and its tokenizer saved in
    ``folder``, for commands that take a local ``--model`` folder."""
    lm, tok = pair(family, hidden=64, init_range=0.2, dropout=0.0)
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def sentiment(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lab = i % 2 == 0
        w = rng.choice(POS if lab else NEG)
        out.append({"text": f"the movie was {w} .", "label": "pos" if lab else "neg"})
    rng.shuffle(out)
    return out


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param
