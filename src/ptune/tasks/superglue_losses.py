"""How the paper's few-shot code trained and read COPA and WSC, as options of a P-tuned model.

The official P-tuning FewGLUE code (a fork of PET) differs from ptune's own way for the two
tasks whose answers are per-example texts:

* **COPA, loss** ``hinge``: max(0, 1 + CE(correct) - CE(wrong)), where CE is the mean
  token cross-entropy of a choice's tokens over the whole batch (PET's
  ``CrossEntropyLoss`` over the flattened batch), instead of the cross-entropy over the
  two choices' log-probabilities;
* **COPA, masks** ``longest``: in training one input per example holds as many masks as
  the longer choice has tokens, and each choice is read at the first masks (evaluation
  always gives each choice exactly its own number of masks, filled one at a time with
  ``PromptConfig.multi_token="iterative"``);
* **WSC, masks**: in training the referent is followed by 0-3 extra masks (drawn once per
  example by ``random.Random(42)``, as PET's pattern) whose targets are the padding token;
  at evaluation one extra mask, and any token (padding included) may fill a mask; the
  special tokens are left out of the written answer;
* **WSC, loss** ``token_mean``: the LM's cross-entropy averaged over every target token of
  the batch (padding targets included), instead of the per-example sum.

:class:`RecipeModel` is a :class:`~ptune.model.PTunedModel` with these options; in eval
mode, and in training with ptune's choices, it is the plain model. :func:`wsc_match` is
PET's reading of a written WSC answer, which both recipes use.

Example:
    >>> model = RecipeModel(lm, tok, prompt, train_loss="hinge", train_masks="longest")  # doctest: +SKIP
"""

from __future__ import annotations

import random
import re
from typing import Any, Literal, Sequence

import torch

from ..batch import Batch, Item, Output
from ..errors import ConfigError
from ..model import PTunedModel
from ..scoring import loss as scoring_loss

__all__ = ["RecipeModel", "hinge_loss", "token_mean_loss", "candidate_logprobs", "with_pad_masks", "wsc_match",
           "LOSSES", "MASKS", "PAD_SEED"]

TrainLoss = Literal["ce", "hinge", "token_mean"]
LOSSES: tuple[str, ...] = ("ce", "hinge", "token_mean")
TrainMasks = Literal["per_candidate", "longest"]
MASKS: tuple[str, ...] = ("per_candidate", "longest")
PAD_SEED = 42
"""The seed of the extra WSC masks' counts (PET's pattern draws them with its own ``Random(42)``)."""
IGNORE = -100


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z]+", text.lower()) if w]


def wsc_match(generated: str, referent: str) -> bool:
    """PET's lenient WSC decision: one word list is contained in the other."""
    a, b = _words(generated), _words(referent)
    if not a or not b:
        return False
    return all(w in b for w in a) or all(w in a for w in b)


def _gold_and_other(sums: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor, other: bool):
    index = (1 - labels if other else labels).unsqueeze(1)
    return sums.gather(1, index).sum(), counts.gather(1, index).sum()


def token_mean_loss(sums: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every token of the gold candidates of the batch.

    Args:
        sums: (B, C) each candidate's summed token log-probabilities.
        counts: (B, C) its number of tokens.
        labels: (B,) the gold candidate.
    """
    s, n = _gold_and_other(sums, counts, labels, other=False)
    return -s / n.clamp(min=1)


def hinge_loss(sums: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """COPA's loss in the paper's code: max(0, 1 + CE(gold) - CE(other)), each CE the mean
    token cross-entropy of that choice over the batch (see :func:`token_mean_loss`)."""
    if sums.shape[1] != 2:
        raise ConfigError("copa_loss", f"the hinge loss compares two candidates, got {sums.shape[1]}")
    s_gold, n_gold = _gold_and_other(sums, counts, labels, other=False)
    s_other, n_other = _gold_and_other(sums, counts, labels, other=True)
    return torch.clamp(1 - s_gold / n_gold.clamp(min=1) + s_other / n_other.clamp(min=1), min=0)


def candidate_logprobs(model: PTunedModel, batch: Batch, prompt: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) summed token log-probabilities of each example's candidates and (B, C)
    their token counts, from views whose targets may hold ``-100`` (not a target)."""
    c = max(int(view.cand_index.max()) for view in batch.views) + 1
    sums = counts = None
    for view in batch.views:
        logp = model.answer_logits(view, prompt).float().log_softmax(-1)  # (R, L, V)
        valid = view.targets >= 0  # (R, K, L)
        tok = logp.gather(2, view.targets.clamp(min=0).transpose(1, 2)).transpose(1, 2)  # (R, K, L)
        s = torch.where(valid, tok, torch.zeros_like(tok)).sum(-1)
        if sums is None:
            sums = torch.zeros((len(batch), c + 1), device=s.device)
            counts = torch.zeros((len(batch), c + 1), device=s.device)
        col = torch.where(view.cand_index >= 0, view.cand_index, c)  # padding -> a dropped column
        rows = view.row_example.unsqueeze(1).expand_as(col)
        sums = sums.index_put((rows, col), s)
        counts = counts.index_put((rows, col), valid.sum(-1).to(counts.dtype))
    assert sums is not None and counts is not None
    return sums[:, :c], counts[:, :c]


def with_pad_masks(items: Sequence[Item], pad_id: int, *, most: int = 3, seed: int = PAD_SEED) -> list[Item]:
    """Training items whose candidates end with 0..``most`` padding tokens each (the count
    drawn per item, in order, by ``random.Random(seed)``): masks whose target is padding."""
    rng = random.Random(seed)
    out = []
    for it in items:
        extra = (pad_id,) * rng.randint(0, most)
        out.append(Item(it.fields, it.label, it.source, [tuple(c) + extra for c in it.candidates or []],
                        it.candidate_texts))
    return out


class RecipeModel(PTunedModel):
    """A P-tuned model with the paper's training and reading of per-example candidates.

    Args:
        *args, **kwargs: those of :class:`~ptune.model.PTunedModel`.
        train_loss: ``ce`` (ptune's: the prompt config's loss over the candidates),
            ``hinge`` (COPA's, two candidates) or ``token_mean`` (WSC's: the LM loss per token).
        train_masks: ``per_candidate`` (each candidate read at its own number of masks) or
            ``longest`` (masked LMs: one input with the longest candidate's number of masks).
        eval_extra_masks: masks added to every answer length written at evaluation.
        ban_special: whether written answers may not use special tokens (padding).
    """

    def __init__(self, *args: Any, train_loss: TrainLoss = "ce", train_masks: TrainMasks = "per_candidate",
                 eval_extra_masks: int = 0, ban_special: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if train_loss not in LOSSES:
            raise ConfigError("train_loss", f"{train_loss!r}; accepted: {', '.join(LOSSES)}")
        if train_masks not in MASKS:
            raise ConfigError("train_masks", f"{train_masks!r}; accepted: {', '.join(MASKS)}")
        needs_candidates = train_loss != "ce" or train_masks != "per_candidate"
        if needs_candidates and self.answers is not None:
            raise ConfigError("train_loss", "the paper's losses and mask layouts are for per-example candidates")
        if train_masks == "longest" and not self.runner.kind.answer_in_input:
            raise ConfigError("copa_masks", "longest: a causal LM reads each candidate as its own continuation; "
                              "the longest-candidate masks need a masked LM")
        self.train_loss, self.train_masks = train_loss, train_masks
        self.eval_extra_masks, self.ban_special = int(eval_extra_masks), ban_special
        self._own_training = needs_candidates

    def collate(self, items: Sequence[Item]) -> Batch:
        """In training with ``train_masks="longest"``: one row per example with the longest
        candidate's number of masks (targets ``-100`` past each candidate's end)."""
        if not (self.training and self.train_masks == "longest"):
            return super().collate(items)
        groups: dict[int, list[int]] = {}
        for b, it in enumerate(items):
            groups.setdefault(max(len(c) for c in it.candidates or [()]), []).append(b)
        views = []
        for length, idx in sorted(groups.items()):
            k = max(len(items[b].candidates or []) for b in idx)
            targets = torch.full((len(idx), k, length), IGNORE, dtype=torch.long)
            cand_index = torch.full((len(idx), k), -1, dtype=torch.long)
            for r, b in enumerate(idx):
                for c, ids in enumerate(items[b].candidates or []):
                    targets[r, c, : len(ids)] = torch.tensor(ids)
                    cand_index[r, c] = c
            encs = [self.compiled.encode(items[b].fields, answer_len=length, source=items[b].source) for b in idx]
            views.append(self.collator.pad(encs, targets, cand_index, torch.tensor(idx), False))
        return Batch(views, torch.tensor([it.label for it in items], dtype=torch.long))

    def forward(self, batch: Batch) -> Output:
        if not (self.training and self._own_training):
            return super().forward(batch)
        with self.runner.kernels(self.speed.lm_shortcuts):
            sums, counts = candidate_logprobs(self, batch, self.pseudo_embeddings())
        present = counts > 0
        scores = sums / counts.clamp(min=1) if self.config.length_norm == "mean" else sums
        scores = torch.where(present, scores, torch.full_like(scores, float("-inf")))
        if self.train_loss == "hinge":
            loss = hinge_loss(sums, counts, batch.labels)
        elif self.train_loss == "token_mean":
            loss = token_mean_loss(sums, counts, batch.labels)
        else:
            loss = scoring_loss(scores, batch.labels, self.config.normalize)
        return Output(scores, loss)

    def generate(self, items: Sequence[Item], lengths: Sequence[int], batch_size: int = 32, *,
                 ban_special: bool | None = None) -> list[dict[str, Any]]:
        """Greedy answers with ``eval_extra_masks`` more tokens than asked (special tokens as
        ``ban_special`` says)."""
        return super().generate(items, [int(k) + self.eval_extra_masks for k in lengths], batch_size,
                                ban_special=self.ban_special if ban_special is None else ban_special)
