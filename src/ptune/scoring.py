"""From answer hidden states to label scores and the loss.

A collated batch holds one or more views (rows whose answers have the same token length).
For each view the LM head is applied at the answer positions and each candidate word's
score is read:

* a word of one token, scored by a softmax over the labels: only those words' logits are
  computed (the log-partition over the vocabulary is a per-row constant that cancels);
* otherwise the log-probabilities of the word's tokens, summed (``length_norm="sum"``) or
  averaged (``"mean"``); masked LMs read all masks in one pass (``multi_token="parallel"``)
  or fill them one at a time at evaluation (``"iterative"``, PET).

Candidate scores are then placed per example: verbalizer words map to their labels
(several words of one label combine by log-sum-exp), per-example candidates keep their
own index (``-inf`` where an example has fewer).

The model is asked only for ``answer_hidden(view, prompt)`` and its ``runner``
(:class:`ptune.lm.LMRunner`), ``config`` and ``answers``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .batch import Batch, Output, View
from .verbalizer import label_logsumexp

__all__ = ["score_batch", "score_view", "fills_iteratively", "loss"]


def loss(scores: torch.Tensor, labels: torch.Tensor, normalize: str) -> torch.Tensor:
    """Cross-entropy over the labels (``normalize="labels"``) or the LM's negative
    log-likelihood of the gold word (``"vocab"``)."""
    if normalize == "labels":
        return F.cross_entropy(scores.float(), labels)
    return -scores.float().gather(1, labels.unsqueeze(1)).mean()


def score_batch(model: Any, batch: Batch, prompt: torch.Tensor | None) -> Output:
    """Scores (B, C) of every label or candidate and, when all labels are known, the loss."""
    views = [(view, score_view(model, view, prompt)) for view in batch.views]
    if model.answers is None:
        scores = _per_example(views, len(batch))
    else:
        scores = _verbalizer(views, len(batch), model.answers)
    known = bool((batch.labels >= 0).all())
    return Output(scores, loss(scores, batch.labels, model.config.normalize) if known else None)


def _verbalizer(views: list[tuple[View, torch.Tensor]], b: int, answers: Any) -> torch.Tensor:
    n_cand = len(answers.candidates)
    cand = None
    for view, s in views:  # s: (R, K)
        if cand is None and view.shared and s.shape == (b, n_cand):
            cand = s  # one view covers every candidate in order
            continue
        if cand is None:
            cand = torch.full((b, n_cand), float("-inf"), device=s.device, dtype=s.dtype)
        rows = view.row_example.unsqueeze(1).expand_as(view.cand_index)
        cand = cand.index_put((rows, view.cand_index), s)
    assert cand is not None
    if answers.one_per_label:
        return cand
    return label_logsumexp(cand, answers.cand_label, answers.n_labels)


def _per_example(views: list[tuple[View, torch.Tensor]], b: int) -> torch.Tensor:
    """Scores (B, C) of each example's own candidates; -inf where it has fewer than C."""
    c = max(int(view.cand_index.max()) for view, _ in views) + 1
    cand = None
    for view, s in views:
        if cand is None:
            cand = torch.full((b, c + 1), float("-inf"), device=s.device, dtype=s.dtype)
        col = torch.where(view.cand_index >= 0, view.cand_index, c)  # padding -> a dropped column
        rows = view.row_example.unsqueeze(1).expand_as(col)
        cand = cand.index_put((rows, col), s)
    assert cand is not None
    return cand[:, :c]


def _restricted(model: Any, view: View) -> bool:
    """Logits of the candidate words alone give the scores exactly when every word is one
    token and the loss is a softmax over the labels."""
    answers = model.answers
    return view.shared and answers is not None and answers.single_token and model.config.normalize == "labels"


def fills_iteratively(model: Any, view: View) -> bool:
    """Whether the view's scores come from PET's iterative filling (several passes, each
    seeing the tokens filled so far) rather than from one pass."""
    return (model.config.multi_token == "iterative" and model.runner.kind.answer_in_input
            and view.targets.shape[-1] > 1 and not torch.is_grad_enabled())


def score_view(model: Any, view: View, prompt: torch.Tensor | None) -> torch.Tensor:
    """Scores (R, K) of each row's K candidates."""
    if fills_iteratively(model, view):
        return _iterative(model, view, prompt)
    runner = model.runner
    h = model.answer_hidden(view, prompt)  # (R, L, Hh)
    weight, bias = runner.head_params()
    if weight is not None and _restricted(model, view):
        ids = view.targets[0, :, 0]  # (K,)
        s = h[:, 0] @ weight[ids].T.to(h.dtype)  # (R, K)
        if bias is not None:
            s = s + bias[ids].to(s.dtype)
        return s.float()
    logp = runner.logits(h).float().log_softmax(-1)  # (R, L, V)
    s = logp.gather(2, view.targets.transpose(1, 2)).sum(1)  # (R, K)
    return s / view.targets.shape[-1] if model.config.length_norm == "mean" else s


def _iterative(model: Any, view: View, prompt: torch.Tensor | None) -> torch.Tensor:
    """PET's multi-token scoring for masked LMs: one row per (row, candidate); each pass
    writes the candidate's token at the open mask where it is most probable and adds its
    log-probability."""
    r, k, length = view.targets.shape
    rep = lambda t: t.repeat_interleave(k, 0)  # noqa: E731
    targets = view.targets.reshape(r * k, length)
    v = View(rep(view.input_ids).clone(), rep(view.attention_mask), rep(view.pseudo_index),
             rep(view.token_type_ids), rep(view.answer_positions), targets.unsqueeze(1),
             rep(view.cand_index)[:, :1], rep(view.row_example), False)
    rows = torch.arange(r * k, device=targets.device)
    filled = torch.zeros_like(targets, dtype=torch.bool)
    total = torch.zeros(r * k, device=targets.device)
    for _ in range(length):
        logp = model.runner.logits(model.answer_hidden(v, prompt)).float().log_softmax(-1)  # (RK, L, V)
        lp = logp.gather(2, targets.unsqueeze(-1)).squeeze(-1)  # (RK, L)
        pos = lp.masked_fill(filled, float("-inf")).argmax(1)
        total += lp[rows, pos]
        filled[rows, pos] = True
        v.input_ids[rows, v.answer_positions[rows, pos]] = targets[rows, pos]
    s = total.view(r, k)
    return s / length if model.config.length_norm == "mean" else s
