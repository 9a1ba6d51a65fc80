"""Metrics: ranks of the gold answer among candidates, P@k, MRR and their averages.

Example:
    >>> import torch
    >>> ranks = gold_ranks(torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]]), torch.tensor([1, 2]))
    >>> ranks.tolist()
    [1, 2]
    >>> rank_metrics(ranks)
    {'n': 2, 'p@1': 0.5, 'p@10': 1.0, 'mrr': 0.75}
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from typing import Hashable, Iterable, Mapping, Sequence

import torch

__all__ = ["gold_ranks", "rank_metrics", "macro_micro", "f1_macro", "f1_binary", "multirc_metrics",
           "normalize_answer", "token_f1", "record_metrics"]


def gold_ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Rank (1 = best) of each gold candidate among the row's scores (B, C); ties count
    in the gold's favour, as LAMA's evaluation."""
    g = scores.gather(1, gold.unsqueeze(1))  # (B, 1)
    return (scores > g).sum(1) + 1


def rank_metrics(ranks: torch.Tensor | Iterable[int]) -> dict[str, float]:
    """``n``, ``p@1``, ``p@10`` and ``mrr`` of gold ranks."""
    r = torch.as_tensor(list(ranks) if not isinstance(ranks, torch.Tensor) else ranks, dtype=torch.float)
    n = int(r.numel())
    if n == 0:
        return {"n": 0, "p@1": 0.0, "p@10": 0.0, "mrr": 0.0}
    return {
        "n": n,
        "p@1": float((r <= 1).float().mean()),
        "p@10": float((r <= 10).float().mean()),
        "mrr": float((1.0 / r).mean()),
    }


def macro_micro(per_relation: Mapping[str, Mapping[str, float]], keys: Iterable[str] = ("p@1", "p@10", "mrr")) -> dict[str, dict[str, float]]:
    """Macro (unweighted mean over relations, LAMA's convention) and micro (pooled over
    facts) averages of per-relation metrics that carry their ``n``."""
    rows = [m for m in per_relation.values() if m.get("n", 0) > 0]
    keys = list(keys)
    total = sum(m["n"] for m in rows)
    macro = {k: (sum(m[k] for m in rows) / len(rows) if rows else 0.0) for k in keys}
    micro = {k: (sum(m[k] * m["n"] for m in rows) / total if total else 0.0) for k in keys}
    return {"macro": {"relations": len(rows), **macro}, "micro": {"n": total, **micro}}


# ---------------------------------------------------------------- SuperGLUE metrics


def _same_length(a: Sequence, b: Sequence, names: str = "pred and gold") -> None:
    if len(a) != len(b):
        raise ValueError(f"{names} differ in length: {len(a)} vs {len(b)}")


def _class_f1(pred: Sequence[int], gold: Sequence[int], cls: int) -> float:
    tp = sum(1 for p, g in zip(pred, gold) if p == cls and g == cls)
    fp = sum(1 for p, g in zip(pred, gold) if p == cls and g != cls)
    fn = sum(1 for p, g in zip(pred, gold) if p != cls and g == cls)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_macro(pred: Sequence[int], gold: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or pred (sklearn's
    ``f1_score(average="macro")``); 0.0 on empty input.

    >>> round(f1_macro([0, 0, 1, 1], [0, 1, 1, 2]), 4)  # F1: class 0 2/3, class 1 1/2, class 2 0
    0.3889
    """
    _same_length(pred, gold)
    classes = sorted(set(pred) | set(gold))
    if not classes:
        return 0.0
    return sum(_class_f1(pred, gold, c) for c in classes) / len(classes)


def f1_binary(pred: Sequence[int], gold: Sequence[int], positive: int = 1) -> float:
    """F1 of the ``positive`` class; 0.0 when there is no true positive."""
    _same_length(pred, gold)
    return _class_f1(pred, gold, positive)


def multirc_metrics(pred: Sequence[int], gold: Sequence[int], question_ids: Sequence[Hashable]) -> dict[str, float]:
    """MultiRC ``accuracy``, ``f1a`` (binary F1 over all answer options), ``em`` (fraction of
    questions, grouped by ``question_ids``, with every option right) and ``n`` (options)."""
    _same_length(pred, gold)
    _same_length(pred, question_ids, "pred and question_ids")
    n = len(gold)
    if n == 0:
        return {"accuracy": 0.0, "f1a": 0.0, "em": 0.0, "n": 0}
    right: dict[Hashable, bool] = defaultdict(lambda: True)
    for p, g, q in zip(pred, gold, question_ids):
        right[q] = right[q] and p == g
    return {
        "accuracy": sum(p == g for p, g in zip(pred, gold)) / n,
        "f1a": f1_binary(pred, gold, positive=1),
        "em": sum(right.values()) / len(right),
        "n": n,
    }


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD/ReCoRD answer normalization: lowercase, no punctuation, no articles (a, an,
    the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(pred: str, gold: str) -> float:
    """SQuAD token F1 between normalized answers (bag-of-tokens overlap); 0.0 when they
    share no token, also when both are empty (as the official ReCoRD script)."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def record_metrics(pred: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """ReCoRD ``f1`` and ``em`` (each the max over an example's gold answers, then the mean)
    and ``n``; ValueError for an example without gold answers."""
    _same_length(pred, golds, "pred and golds")
    if not pred:
        return {"f1": 0.0, "em": 0.0, "n": 0}
    f1 = em = 0.0
    for i, (p, gs) in enumerate(zip(pred, golds)):
        if isinstance(gs, str) or not gs:
            raise ValueError(f"example {i}: expected a non-empty list of gold answers, got {gs!r:.60}")
        f1 += max(token_f1(p, g) for g in gs)
        em += max(float(normalize_answer(p) == normalize_answer(g)) for g in gs)
    return {"f1": f1 / len(pred), "em": em / len(pred), "n": len(pred)}
