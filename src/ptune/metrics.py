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

from typing import Iterable, Mapping

import torch

__all__ = ["gold_ranks", "rank_metrics", "macro_micro"]


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
