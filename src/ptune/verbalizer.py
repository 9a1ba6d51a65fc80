"""Verbalizers: each label is said by one or more words; the LM scores the words.

A label's words are tokenized the way they are spelled at the answer slot (after a space
or not, see :mod:`ptune.template`). Words may be several tokens long:

* masked LM: the answer slot holds as many mask tokens as the word has tokens, and the
  word's score is the sum of its tokens' log-probabilities at those masks, all read in
  one forward pass per distinct word length;
* causal LM: the word's score is the log-probability of its tokens as the continuation,
  ``log p(w1 | x) + log p(w2 | x, w1) + ...``.

``length_norm="sum"`` (default) keeps that sum, so a longer word pays for each token;
``"mean"`` divides by the word's length (per-token average), which removes the bias
against long words. A label with several words scores ``log sum_w p(w)``: the
probability that the answer is any of its words.

Example:
    >>> v = Verbalizer({"entailment": "Yes", "not_entailment": ["No", "Not"]})
    >>> v.labels
    ('entailment', 'not_entailment')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .errors import ConfigError, DataError
from .files import loads_json, read_text

__all__ = ["Verbalizer", "CompiledVerbalizer", "label_logsumexp", "is_text"]


def is_text(text: str) -> bool:
    """Whether ``text`` is real text: no lone surrogate code point (JSON's ``"\\ud800"``),
    which no tokenizer takes."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class Verbalizer:
    """Maps each label to the words that say it.

    Args:
        mapping: ``{label: word}`` or ``{label: [word, ...]}``; label order is kept.
    """

    def __init__(self, mapping: Mapping[str, str | Sequence[str]]):
        if not isinstance(mapping, Mapping) or not mapping:
            raise ConfigError("verbalizer", "needs a non-empty mapping of label to word(s)")
        words: dict[str, tuple[str, ...]] = {}
        for label, value in mapping.items():
            if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
                raise ConfigError(f"verbalizer[{label!r}]", "a label must be a non-empty string")
            if str(label) in words:
                raise ConfigError(f"verbalizer[{label!r}]", "the label is given twice")
            ws = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else ()
            if not ws or not all(isinstance(w, str) and w.strip() and is_text(w) for w in ws):
                raise ConfigError(
                    f"verbalizer[{label!r}]", f"needs one or more non-empty words, got {value!r}"
                )
            words[str(label)] = tuple(w.strip() for w in ws)
        self.words = words
        self.labels: tuple[str, ...] = tuple(words)
        self._index = {label: i for i, label in enumerate(self.labels)}

    def __repr__(self) -> str:
        return f"Verbalizer({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verbalizer) and other.words == self.words

    def to_dict(self) -> dict[str, list[str]]:
        return {label: list(ws) for label, ws in self.words.items()}

    @classmethod
    def from_vocabulary(cls, words: Iterable[str]) -> "Verbalizer":
        """Free-candidate mode: every word is its own label (e.g. LAMA's vocabulary)."""
        return cls({w: w for w in dict.fromkeys(words)})

    @classmethod
    def from_json(cls, spec: str) -> "Verbalizer":
        """Read inline JSON (``'{"yes": "Yes"}'``) or the path of a JSON file."""
        text, source = spec, "--verbalizer"
        if not spec.lstrip().startswith("{"):
            path = Path(spec)
            if not path.is_file():
                raise ConfigError("verbalizer", f"{spec!r} is neither inline JSON nor a file")
            text, source = read_text(path), str(path)
        try:
            mapping = loads_json(text, source)
        except DataError as e:
            raise ConfigError("verbalizer", str(e)) from None
        if not isinstance(mapping, dict):
            raise ConfigError("verbalizer", f"{source}: expected a JSON object label -> word(s)")
        return cls(mapping)

    def label_index(self, value: Any, source: str, field: str = "label") -> int:
        """Index of a label value from data; bools and numbers match their text.

        Raises:
            DataError: naming the source and field when the value is not a label.
        """
        found = find_label(value, self._index)
        if found is not None:
            return found
        shown = ", ".join(self.labels[:10]) + (", ..." if len(self.labels) > 10 else "")
        raise DataError(source, f"{value!r} is not a label of the verbalizer ({shown})", field)

    def compile(self, tokenizer: Any, space_before: bool) -> "CompiledVerbalizer":
        """Tokenize every word as spelled at the answer slot."""
        lead = " " if space_before else ""
        seqs: list[tuple[int, ...]] = []
        owner: dict[tuple[int, ...], str] = {}
        cand_label: list[int] = []
        pairs = [(li, label, w) for li, label in enumerate(self.labels) for w in self.words[label]]
        encoded = tokenizer([lead + w for _, _, w in pairs], add_special_tokens=False)["input_ids"]
        for (li, label, w), ids_list in zip(pairs, encoded):
            ids = tuple(ids_list)
            if not ids:
                raise ConfigError(f"verbalizer[{label!r}]", f"word {w!r} gives no tokens")
            if ids in owner:
                if owner[ids] != label:
                    raise ConfigError(
                        f"verbalizer[{label!r}]",
                        f"word {w!r} has the same tokens as a word of label {owner[ids]!r}",
                    )
                continue
            owner[ids] = label
            seqs.append(ids)
            cand_label.append(li)
        return CompiledVerbalizer(self.labels, seqs, cand_label)


def find_label(value: Any, index: dict[str, int]) -> int | None:
    """Position of a label value from data in ``index`` (label text -> position), or None.
    Data often spells labels as JSON values: numbers match their text, and booleans match
    both ``True`` and ``true``."""
    keys = [str(value)] + ([json.dumps(value)] if isinstance(value, bool) else [])
    return next((index[k] for k in keys if k in index), None)


@dataclass
class CompiledVerbalizer:
    """Token sequences of the candidate words and which label each belongs to.

    Attributes:
        labels: label names, in order.
        candidates: token ids of each candidate word.
        cand_label: (C,) label index of each candidate.
        groups: word length -> (candidate indices (C_L,), token ids (C_L, L)).
    """

    labels: tuple[str, ...]
    candidates: list[tuple[int, ...]]
    cand_label_list: list[int]

    def __post_init__(self) -> None:
        self.cand_label = torch.tensor(self.cand_label_list, dtype=torch.long)
        groups: dict[int, list[int]] = {}
        for c, ids in enumerate(self.candidates):
            groups.setdefault(len(ids), []).append(c)
        self.groups = {
            length: (
                torch.tensor(idx, dtype=torch.long),
                torch.tensor([self.candidates[c] for c in idx], dtype=torch.long),
            )
            for length, idx in sorted(groups.items())
        }
        self.single_token = set(groups) == {1}
        # one candidate per label, in label order: label scores are candidate scores
        self.one_per_label = self.cand_label_list == list(range(len(self.labels)))

    @property
    def n_labels(self) -> int:
        return len(self.labels)


def label_logsumexp(
    cand_scores: torch.Tensor, cand_label: torch.Tensor, n_labels: int
) -> torch.Tensor:
    """Combine candidate scores (B, C) into label scores (B, n_labels) by log-sum-exp.

    Vectorized with scatter, so it stays cheap for a vocabulary of thousands of labels.
    """
    b = cand_scores.shape[0]
    index = cand_label.to(cand_scores.device).expand(b, -1)
    peak = torch.full((b, n_labels), float("-inf"), device=cand_scores.device, dtype=cand_scores.dtype)
    peak = peak.scatter_reduce(1, index, cand_scores, reduce="amax", include_self=True)
    safe_peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    summed = torch.zeros_like(peak).scatter_add(1, index, (cand_scores - safe_peak.gather(1, index)).exp())
    return summed.log() + safe_peak
