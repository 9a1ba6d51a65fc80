"""AutoPrompt (Shin et al. 2020): a discrete prompt found by gradient-guided token search.

The prompt has the layout of a P-tuning template: every pseudo position ``[P]`` holds a
real vocabulary token (a *trigger*) instead of a learned vector. The search works on the
P-tuned model with the ``none`` encoder, whose pseudo embeddings are set to the trigger
tokens' input embeddings, so the LM sees exactly the input it would see with the tokens
written out, and answers are read and scored by ptune's one scorer
(:func:`ptune.scoring.score_batch`, masked or causal as :mod:`ptune.lm` decides).

Each round, on a batch of training examples:

1. the gradient of the loss (the negative log-likelihood of the gold answer) with respect
   to the trigger embeddings is taken;
2. for one trigger position (drawn at random), the ``trigger_candidates`` tokens whose
   embeddings ``e`` minimise the first-order estimate ``grad · e`` become candidates
   (special tokens and the current token excluded);
3. the batch's loss is computed for each candidate swap (all in one forward pass), and the
   best swap is kept only if it lowers the loss below the current prompt's.

The budget is the training config's: as many rounds as P-tuning takes optimizer steps
(``epochs`` x batches per epoch, or ``steps``), the same batches, and the same dev
selection: the prompt is scored on dev every ``eval_every`` rounds (default: once per
epoch, and once before the first round), the best-scoring prompt is kept, and the search
stops after ``patience`` scorings without a gain.

Example:
    >>> model = PTunedModel(lm, tok, PromptConfig(template="[P*3] [X] [P*3] [MASK]",  # doctest: +SKIP
    ...                     verbalizer=words, encoder="none", normalize="vocab"))
    >>> found = search(model, train_items, dev_score, TrainConfig(epochs=10, batch_size=16))  # doctest: +SKIP
    >>> found.tokens                                                                   # doctest: +SKIP
    ['Ġnative', 'Ġof', ...]
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from .. import scoring
from ..batch import Batch, Item
from ..config import TrainConfig
from ..errors import ConfigError
from ..inference import model_device

__all__ = ["AutoPromptConfig", "SearchResult", "search", "set_triggers", "trigger_ids", "candidate_losses",
           "prompt_in_words"]

DevScore = Callable[[Any], Sequence[float]]
"""Scores the model's current prompt on dev; higher is better, compared as a tuple."""


@dataclass(frozen=True, kw_only=True)
class AutoPromptConfig:
    """How AutoPrompt searches (the number of rounds and the batches come from the
    training config, as P-tuning's steps do)."""

    trigger_candidates: int = 10
    """Candidate tokens re-scored per round: the best of the gradient's first-order estimate."""
    trigger_init: str = "the"
    """The word whose (first) token every trigger starts as."""

    def __post_init__(self) -> None:
        if not isinstance(self.trigger_candidates, int) or self.trigger_candidates < 1:
            raise ConfigError("trigger_candidates", f"must be a positive integer, got {self.trigger_candidates!r}")
        if not isinstance(self.trigger_init, str) or not self.trigger_init.strip():
            raise ConfigError("trigger_init", "must be a word")

    @classmethod
    def of(cls, value: "AutoPromptConfig | Mapping[str, Any]") -> "AutoPromptConfig":
        """The config itself, or one made from some of its fields."""
        if isinstance(value, cls):
            return value
        unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"autoprompt.{sorted(unknown)[0]}", "unknown key")
        return cls(**value)


@dataclass
class SearchResult:
    """What the search found: the best prompt on dev (the last one without dev data)."""

    ids: list[int]
    tokens: list[str]
    rounds: int
    accepted: int
    best_round: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


def _embedding_table(model: Any) -> torch.Tensor:
    return model.lm.get_input_embeddings().weight


def set_triggers(model: Any, ids: Sequence[int]) -> None:
    """Make the model's pseudo tokens the input embeddings of the tokens ``ids``.

    Raises:
        ConfigError: the model's prompt encoder is not ``none`` (its output is not a free
            embedding per position) or ``ids`` has the wrong length.
    """
    if model.encoder is None or model.encoder.config.type != "none":
        raise ConfigError("encoder", "AutoPrompt needs the 'none' encoder (one embedding per trigger position)")
    if len(ids) != model.encoder.n_pseudo:
        raise ConfigError("triggers", f"{len(ids)} tokens for {model.encoder.n_pseudo} trigger positions")
    table = _embedding_table(model).detach()
    with torch.no_grad():
        weight = model.encoder.embedding.weight
        weight.copy_(table[torch.tensor(list(ids), device=table.device)].to(weight.device, weight.dtype))


def trigger_ids(model: Any) -> list[int] | None:
    """The tokens whose input embeddings the pseudo tokens are exactly; None if any is not one."""
    prompt = model.pseudo_embeddings()
    if prompt is None:
        return None
    table = _embedding_table(model).detach()
    out = []
    for row in prompt.detach().to(table.device, table.dtype):
        hits = (table == row).all(-1).nonzero()
        if not len(hits):
            return None
        out.append(int(hits[0]))
    return out


def prompt_in_words(template: str, tokens: Sequence[str]) -> str:
    """The template with each pseudo token replaced by its trigger, in order:
    ``"[P*2] [X] [P] [MASK]"`` and ``["native", "of", "in"]`` -> ``"native of [X] in [MASK]"``."""
    rest = iter(tokens)

    def fill(m: re.Match) -> str:
        return " ".join(next(rest) for _ in range(int(m.group(1) or 1)))

    return re.sub(r"(?<!\\)\[P(?:\*(\d+))?(?::[^\]]*)?\]", fill, template)


def _allowed(model: Any) -> torch.Tensor:
    """(V,) which tokens may be triggers: the tokenizer's own tokens, none of them special."""
    tok = model.tokenizer
    v = _embedding_table(model).shape[0]
    ok = torch.zeros(v, dtype=torch.bool)
    ok[: min(v, len(tok))] = True
    special = [i for i in tok.all_special_ids if i < v]
    ok[special] = False
    return ok


def _init_id(model: Any, word: str) -> int:
    ids = model.tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
    if not ids or ids[0] in model.tokenizer.all_special_ids:
        raise ConfigError("trigger_init", f"{word!r} is not a token of this tokenizer")
    return int(ids[0])


def candidate_losses(model: Any, batch: Batch, prompts: torch.Tensor) -> torch.Tensor:
    """The loss of ``batch`` under each of K prompts (K, n_pseudo, H), in one forward pass:
    the batch's rows are repeated K times, copy k reading prompt k. Returns (K,)."""
    k, n, h = prompts.shape
    b = len(batch)
    views = []
    for v in batch.views:
        rows = torch.arange(k, device=v.input_ids.device).repeat_interleave(v.input_ids.shape[0])

        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat(k, *([1] * (t.dim() - 1)))

        pseudo = rep(v.pseudo_index)
        pseudo = torch.where(pseudo >= 0, pseudo + rows.unsqueeze(1) * n, pseudo)
        # the copies differ from their first pseudo token on: nothing is shared across rows
        views.append(dataclasses.replace(
            v, input_ids=rep(v.input_ids), attention_mask=rep(v.attention_mask), pseudo_index=pseudo,
            token_type_ids=rep(v.token_type_ids), answer_positions=rep(v.answer_positions), targets=rep(v.targets),
            cand_index=rep(v.cand_index), row_example=rep(v.row_example) + rows * b, common_prefix=0))
    stacked = Batch(views, batch.labels.repeat(k))
    with model.runner.kernels(model.speed.lm_shortcuts):
        scores = scoring.score_batch(model, stacked, prompts.reshape(k * n, h)).scores
    scores = scores.view(k, b, -1)
    return torch.stack([scoring.loss(scores[i], batch.labels, model.config.normalize) for i in range(k)])


def _gradient(model: Any, batch: Batch, prompt: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The loss's gradient with respect to the trigger embeddings (n, H), and the loss."""
    prompt = prompt.detach().clone().requires_grad_(True)
    with torch.enable_grad(), model.runner.kernels(model.speed.lm_shortcuts):
        loss = scoring.score_batch(model, batch, prompt).loss
        if loss is None:
            raise ConfigError("train", "AutoPrompt needs labelled training examples")
        (grad,) = torch.autograd.grad(loss, prompt)
    return grad, float(loss.detach())


def search(model: Any, train_items: Sequence[Item], dev_score: DevScore | None, train: TrainConfig,
           config: AutoPromptConfig | None = None) -> SearchResult:
    """Search a trigger token for every pseudo position of ``model``'s template; the model
    holds the best prompt afterwards (see the module doc).

    Args:
        model: a :class:`ptune.model.PTunedModel` with the ``none`` encoder and a frozen LM.
        train_items: prepared, labelled training examples.
        dev_score: scores the model's current prompt on dev (higher is better); None:
            keep the last prompt.
        train: ``steps`` or ``epochs``, ``batch_size``, ``eval_every``, ``patience`` and
            ``seed`` (the other fields do not apply).
        config: candidates per round and the initial token.
    """
    config = config or AutoPromptConfig()
    if not train_items:
        raise ConfigError("train", "AutoPrompt needs training examples")
    device = model_device(model)
    table = _embedding_table(model).detach()
    allowed = _allowed(model).to(table.device)
    ids = [_init_id(model, config.trigger_init)] * model.encoder.n_pseudo if model.encoder is not None else []
    set_triggers(model, ids)
    per_epoch = math.ceil(len(train_items) / train.batch_size)
    total = train.steps or (train.epochs or 10) * per_epoch
    every = train.eval_every or per_epoch
    gen = torch.Generator().manual_seed(train.seed)
    result = SearchResult(list(ids), [], 0, 0, 0, False)
    best = tuple(dev_score(model)) if dev_score is not None else None
    result.history.append({"round": 0, "dev": list(best) if best is not None else None})
    waited = 0
    was = model.training
    model.eval()
    try:
        order: list[int] = []
        for r in range(1, total + 1):
            if not order:
                order = torch.randperm(len(train_items), generator=gen).tolist()
            batch_idx, order = order[: train.batch_size], order[train.batch_size:]
            batch = model.collate([train_items[i] for i in batch_idx]).to(device)
            prompt = table[torch.tensor(ids, device=table.device)]
            grad, _ = _gradient(model, batch, prompt)
            pos = int(torch.randint(len(ids), (1,), generator=gen))
            estimate = -(table @ grad[pos].to(table.dtype))  # larger: a larger first-order loss decrease
            estimate = estimate.masked_fill(~allowed, float("-inf"))
            estimate[ids[pos]] = float("-inf")
            k = min(config.trigger_candidates, int(torch.isfinite(estimate).sum()))
            cands = estimate.topk(k).indices.tolist() if k else []
            if cands:
                prompts = prompt.unsqueeze(0).repeat(k + 1, 1, 1)
                prompts[1:, pos] = table[torch.tensor(cands, device=table.device)]
                with torch.no_grad():
                    losses = candidate_losses(model, batch, prompts.to(device))
                j = int(losses[1:].argmin())
                if losses[1 + j] < losses[0]:
                    ids[pos] = cands[j]
                    result.accepted += 1
            result.rounds = r
            if dev_score is None or (r % every and r != total):
                continue
            set_triggers(model, ids)
            score = tuple(dev_score(model))
            result.history.append({"round": r, "dev": list(score)})
            if best is None or score > best:
                best, result.ids, result.best_round, waited = score, list(ids), r, 0
            else:
                waited += 1
                if train.patience is not None and waited >= train.patience:
                    result.stopped_early = True
                    break
    finally:
        model.train(was)
    if dev_score is None:
        result.ids, result.best_round = list(ids), result.rounds
    set_triggers(model, result.ids)
    result.tokens = model.tokenizer.convert_ids_to_tokens(result.ids)
    return result
