"""Prompts mined from a corpus (LPAQA, Jiang et al. 2020): the wordings that connect a
relation's subjects and objects in text.

For each relation, every sentence of the corpus that contains a training fact's subject
and object gives candidate templates (:func:`mine`):

* ``middle``: the words between the two, ``[X] <middle> [Y] .`` (or ``[Y] <middle> [X] .``
  when the object comes first), LPAQA's middle-word prompts;
* ``sentence``: the whole sentence with the subject replaced by ``[X]`` and the object by
  ``[Y]``.

Candidates are ranked by how many distinct training facts yield them; the LAMA harness
then scores the most frequent ones on the training facts and keeps the best.

The corpus is a text file with one sentence per line (as LPAQA's Wikipedia sentences and
the world's pretraining corpus are). Subjects and objects are matched as whole words:
``Rome`` matches ``Rome .`` and ``Rome,`` but not ``Romeo``.

Example:
    >>> mined = mine(["Ada Lovelace was born in London ."], {"P19": [("Ada Lovelace", "London")]})
    >>> [(c.template, c.kind) for c in mined["P19"]]
    [('[X] was born in [Y] .', 'middle')]
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError, DataError

__all__ = ["MiningConfig", "Mined", "mine", "mine_corpus", "mined_record", "read_corpus", "escape"]

_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, kw_only=True)
class MiningConfig:
    """Where the ``mined`` method finds its prompts and how many it scores."""

    corpus: str | None = None
    """The corpus the mined prompts come from: a text file, one sentence per line."""
    mined_candidates: int = 20
    """Mined templates scored on the training facts per relation: the ones that the most
    training facts yield."""
    max_middle_words: int = 10
    """The longest span between subject and object, in words, that makes a template."""
    mined_ensemble: int = 1
    """How many of the best mined templates answer together (LPAQA's ensemble: the mean of
    their log-probabilities); 1: the best alone."""

    def __post_init__(self) -> None:
        for name in ("mined_candidates", "max_middle_words", "mined_ensemble"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(name, f"must be a positive integer, got {v!r}")

    @classmethod
    def of(cls, value: "MiningConfig | Mapping[str, Any]") -> "MiningConfig":
        """The config itself, or one made from some of its fields."""
        if isinstance(value, cls):
            return value
        names = {f.name for f in fields(cls)}
        unknown = set(value) - names
        if unknown:
            raise ConfigError(f"mining.{sorted(unknown)[0]}", "unknown key")
        return cls(**value)


@dataclass(frozen=True)
class Mined:
    """A mined template: how many distinct training facts yield it, and one sentence that does."""

    template: str
    kind: str  # "middle" or "sentence"
    support: int
    example: str


def escape(text: str) -> str:
    """Text as a literal of the template language (``[``, ``]``, ``{``, ``}`` and ``\\``
    escaped)."""
    return re.sub(r"([\[\]{}\\])", r"\\\1", text)


def _spans(line: str) -> tuple[list[str], list[tuple[int, int]]]:
    words, spans = [], []
    for m in _WORD.finditer(line):
        words.append(m.group())
        spans.append(m.span())
    return words, spans


def _find(words: list[str], phrase: tuple[str, ...]) -> list[int]:
    n = len(phrase)
    return [i for i in range(len(words) - n + 1) if tuple(words[i:i + n]) == phrase]


def mine(lines: Iterable[str], facts: Mapping[str, Sequence[tuple[str, str]]],
         max_middle_words: int = 10) -> dict[str, list[Mined]]:
    """Candidate templates per relation from the sentences that hold a fact's subject and
    object, most supported first (ties: ``middle`` before ``sentence``, then alphabetical).
    A template that is both (a sentence with nothing around the subject and object) is
    counted once, as ``middle``.

    Args:
        lines: the corpus, one sentence per item.
        facts: relation -> its training facts as (subject, object).
        max_middle_words: the longest span between subject and object, in words.
    """
    by_first: dict[str, list[tuple[tuple[str, ...], str, tuple[str, ...]]]] = defaultdict(list)
    for rel, pairs in facts.items():
        for sub, obj in pairs:
            s, o = tuple(_WORD.findall(sub)), tuple(_WORD.findall(obj))
            if s and o:
                by_first[s[0]].append((s, rel, o))
    support: dict[str, dict[str, set[tuple[str, ...]]]] = defaultdict(lambda: defaultdict(set))
    first: dict[tuple[str, str], tuple[str, str]] = {}  # (relation, template) -> (kind, sentence)
    for line in lines:
        line = line.strip()
        words, spans = _spans(line)
        for i, w in enumerate(words):
            for s, rel, o in by_first.get(w, ()):
                if tuple(words[i:i + len(s)]) != s:
                    continue
                for j in _find(words, o):
                    for kind, template in _templates(line, spans, (i, i + len(s)), (j, j + len(o)), max_middle_words):
                        support[rel][template].add(s + ("\t",) + o)
                        first.setdefault((rel, template), (kind, line))
    out: dict[str, list[Mined]] = {}
    for rel in facts:
        found = []
        for template, facts_seen in support.get(rel, {}).items():
            kind, sentence = first[rel, template]
            found.append(Mined(template, kind, len(facts_seen), sentence))
        out[rel] = sorted(found, key=lambda m: (-m.support, m.kind != "middle", m.template))
    return out


def _templates(line: str, spans: list[tuple[int, int]], sub: tuple[int, int], obj: tuple[int, int],
               max_middle: int) -> list[tuple[str, str]]:
    """The middle-word and the whole-sentence template of one subject/object occurrence."""
    first, second = sorted([sub, obj])
    if first[1] > second[0]:  # overlapping mentions
        return []
    out = []
    gap = second[0] - first[1]
    if 1 <= gap <= max_middle:
        middle = escape(line[spans[first[1] - 1][1]:spans[second[0]][0]].strip())
        a, b = ("[X]", "[Y]") if first == sub else ("[Y]", "[X]")
        out.append(("middle", f"{a} {middle} {b} ."))
    start_s, end_s = spans[sub[0]][0], spans[sub[1] - 1][1]
    start_o, end_o = spans[obj[0]][0], spans[obj[1] - 1][1]
    pieces = sorted([(start_s, end_s, "[X]"), (start_o, end_o, "[Y]")])
    text, at = "", 0
    for start, end, slot in pieces:
        text += escape(line[at:start]) + slot
        at = end
    out.append(("sentence", text + escape(line[at:])))
    return out


def mine_corpus(config: MiningConfig, facts: Mapping[str, Sequence[Mapping[str, str]]]
                ) -> tuple[dict[str, list[Mined]], dict[str, float]]:
    """:func:`mine` over ``config.corpus`` for every relation's training facts (examples with
    ``subject`` and ``object``) in one pass; also ``{"seconds": ...}``, the time it took."""
    if config.corpus is None:
        raise ConfigError("corpus", "the mined method needs a corpus file (one sentence per line)")
    start = time.perf_counter()
    pairs = {rel: [(ex["subject"], ex["object"]) for ex in exs] for rel, exs in facts.items()}
    mined = mine(read_corpus(config.corpus), pairs, config.max_middle_words)
    return mined, {"seconds": round(time.perf_counter() - start, 2)}


def mined_record(found: Sequence[Mined], scored: Sequence[tuple[str, float | None]], top: int = 5) -> dict[str, Any]:
    """What a results file keeps of a relation's mining: how many templates were mined, and
    the ``top`` best of the scored ones (template, P@1 on the training facts, support)."""
    support = {m.template: m.support for m in found}
    return {"mined": len(found),
            "candidates": [{"template": t, "train p@1": p, "support": support[t]} for t, p in scored[:top]]}


def read_corpus(path: str | Path) -> Iterable[str]:
    """The lines of a corpus file, lazily.

    Raises:
        DataError: the file does not exist or is not UTF-8 text (naming the line).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), "no such corpus file (one sentence per line)")

    def lines() -> Iterable[str]:
        with open(p, encoding="utf-8") as f:
            n = 0
            try:
                for n, line in enumerate(f, 1):
                    yield line
            except UnicodeDecodeError as e:
                raise DataError(f"{p}:{n + 1}", f"not UTF-8 text ({e.reason})") from None

    return lines()
