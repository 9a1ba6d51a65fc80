"""Batches as the model runs them: prepared examples (:class:`Item`), padded rows that
share one forward pass (:class:`View`), a collated :class:`Batch` and its :class:`Output`."""

from __future__ import annotations

from dataclasses import dataclass, fields as dc_fields
from typing import Any

import torch

from .template import Encoded

__all__ = ["Item", "View", "Batch", "Output", "pad_view", "common_prefix"]


@dataclass
class Item:
    """One prepared example: tokenized fields, label index (-100 if none), source."""

    fields: dict[str, list[int]]
    label: int
    source: str
    candidates: list[tuple[int, ...]] | None = None
    """Per-example answer candidates (token ids), with ``PromptConfig.candidates_field``."""
    candidate_texts: list[str] | None = None


@dataclass
class View:
    """One forward pass's worth of rows; all rows have answers of the same length L.

    Shapes: R rows, T tokens, K candidates per row.
    """

    input_ids: torch.Tensor  # (R, T)
    attention_mask: torch.Tensor  # (R, T)
    pseudo_index: torch.Tensor  # (R, T), -1 where no pseudo token
    token_type_ids: torch.Tensor  # (R, T)
    answer_positions: torch.Tensor  # (R, L)
    targets: torch.Tensor  # (R, K, L) token ids of each candidate
    cand_index: torch.Tensor  # (R, K) global candidate index
    row_example: torch.Tensor  # (R,) example of each row
    shared: bool  # every row scores the same candidates (targets identical across rows)
    common_prefix: int = 0  # leading tokens identical in every row (ids, pseudo tokens, segments)

    def to(self, device: Any, non_blocking: bool = False) -> "View":
        kw = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            if isinstance(getattr(self, f.name), torch.Tensor)
            else getattr(self, f.name)
            for f in dc_fields(self)
        }
        return View(**kw)


@dataclass
class Batch:
    """A collated batch: the views to run and the gold labels (B,) (-100: unknown)."""

    views: list[View]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: Any, non_blocking: bool = False) -> "Batch":
        return Batch([v.to(device, non_blocking) for v in self.views], self.labels.to(device))


@dataclass
class Output:
    """Label scores (B, n_labels) and, when every example has a label, the loss."""

    scores: torch.Tensor
    loss: torch.Tensor | None


def pad_view(encs: list[Encoded], targets: torch.Tensor, cand_index: torch.Tensor, rows: torch.Tensor, shared: bool, *,
         pad_id: int, multiple: int = 1, left: bool = False) -> View:
    """Pad encodings into a :class:`View` (lengths rounded up to ``multiple``; ``left``
    puts the padding first)."""
    t = max(len(e.input_ids) for e in encs)
    t = -(-t // multiple) * multiple  # round up to a bucket
    cols: tuple[list[list[int]], ...] = ([], [], [], [], [])  # ids, mask, pseudo, types, answer
    for e in encs:  # rows as lists, then one tensor per field: far cheaper than a tensor per row
        n = len(e.input_ids)
        gap = t - n
        row = (list(e.input_ids), [1] * n, list(e.pseudo_index), list(e.token_type_ids))
        fill = ([pad_id] * gap, [0] * gap, [-1] * gap, [0] * gap)
        for col, values, padding in zip(cols, row, fill):
            col.append(padding + values if left else values + padding)
        cols[4].append([p + gap for p in e.answer_positions] if left else list(e.answer_positions))
    ids, mask, pseudo, types, answer = (torch.tensor(c, dtype=torch.long) for c in cols)
    return View(ids, mask, pseudo, types, answer, targets.contiguous(), cand_index.contiguous(), rows, shared,
                 common_prefix(encs))


def common_prefix(encs: list[Encoded]) -> int:
    """How many leading tokens every encoding shares (token, pseudo token and segment),
    stopping before the first answer position of any row; 0 for a single row."""
    if len(encs) < 2:
        return 0
    first = encs[0]
    limit = min(min(e.answer_positions, default=len(e.input_ids)) for e in encs)
    k = 0
    while k < limit and all(
        e.input_ids[k] == first.input_ids[k] and e.pseudo_index[k] == first.pseudo_index[k]
        and e.token_type_ids[k] == first.token_type_ids[k]
        for e in encs
    ):
        k += 1
    return k
