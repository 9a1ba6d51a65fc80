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
3. the batch's loss is computed for each candidate swap (all in one forward pass of the
   LM, :class:`Candidates`), and the best swap is kept only if it lowers the loss below
   the current prompt's.

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
from ..model import PTunedModel
from ..multi import PromptBank

__all__ = ["AutoPromptConfig", "SearchResult", "Candidates", "search", "set_triggers", "trigger_ids",
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

    def record(self, template: str, tokenizer: Any) -> dict[str, Any]:
        """What a results file keeps: the prompt in words (each token decoded on its own),
        the tokens and their ids, and how the search went."""
        words = [tokenizer.decode([i]).strip() or t for i, t in zip(self.ids, self.tokens)]
        return {"prompt": prompt_in_words(template, words), "trigger_ids": self.ids, "trigger_tokens": self.tokens,
                "rounds": self.rounds, "accepted": self.accepted, "best_round": self.best_round,
                "stopped_early": self.stopped_early}


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


class Candidates:
    """The batch loss under several trigger sequences at once: one copy of the model's
    prompt per sequence in a :class:`ptune.multi.PromptBank`, whose rows all run in one
    forward pass of the LM (with each copy's scores equal to its own, alone)."""

    def __init__(self, model: Any, n: int) -> None:
        self.model = model
        self.bank = PromptBank(model.lm, model.tokenizer, base_model=model.base_model, kind=model.kind,
                               speed=model.speed)
        self.names = [f"candidate {i}" for i in range(n)]
        for name in self.names:  # seeded: building a copy leaves the global random state alone
            self.bank.add(name, PTunedModel(model.lm, model.tokenizer, model.config, seed=0))

    def losses(self, items: Sequence[Item], triggers: Sequence[Sequence[int]]) -> torch.Tensor:
        """(K,) the loss of ``items`` under each of K <= n trigger sequences."""
        names = self.names[: len(triggers)]
        for name, ids in zip(names, triggers):
            set_triggers(self.bank[name], ids)
        scores = torch.stack(self.bank.score([(name, item) for name in names for item in items]))
        scores = scores.view(len(names), len(items), -1)
        labels = torch.tensor([item.label for item in items], device=scores.device)
        return torch.stack([scoring.loss(s, labels, self.model.config.normalize) for s in scores])


def _proposals(model: Any, batch: Batch, ids: list[int], pos: int, allowed: torch.Tensor, k: int) -> list[int]:
    """The ``k`` tokens for trigger position ``pos`` whose swap lowers the batch's loss most
    to first order: the largest ``-grad · e`` over the allowed tokens' embeddings ``e``,
    the gradient taken with respect to the trigger embeddings."""
    table = _embedding_table(model).detach()
    prompt = table[torch.tensor(ids, device=table.device)].clone().requires_grad_(True)
    with torch.enable_grad(), model.runner.kernels(model.speed.lm_shortcuts):
        loss = scoring.score_batch(model, batch, prompt).loss
        if loss is None:
            raise ConfigError("train", "AutoPrompt needs labelled training examples")
        (grad,) = torch.autograd.grad(loss, prompt)
    estimate = -(table @ grad[pos].to(table.dtype))
    estimate = estimate.masked_fill(~allowed, float("-inf"))
    estimate[ids[pos]] = float("-inf")
    k = min(k, int(torch.isfinite(estimate).sum()))
    return estimate.topk(k).indices.tolist() if k else []


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
    allowed = _allowed(model).to(_embedding_table(model).device)
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
    scorer = Candidates(model, config.trigger_candidates + 1)
    was = model.training
    model.eval()
    try:
        order: list[int] = []
        for r in range(1, total + 1):
            if not order:
                order = torch.randperm(len(train_items), generator=gen).tolist()
            batch_idx, order = order[: train.batch_size], order[train.batch_size:]
            chosen = [train_items[i] for i in batch_idx]
            pos = int(torch.randint(len(ids), (1,), generator=gen))
            cands = _proposals(model, model.collate(chosen).to(device), ids, pos, allowed, config.trigger_candidates)
            if cands:
                losses = scorer.losses(chosen, [ids] + [ids[:pos] + [c] + ids[pos + 1:] for c in cands])
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
