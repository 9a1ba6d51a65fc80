"""The few-shot SuperGLUE recipe: ptune's own choices (the default) or the paper's code's.

``ptune superglue --recipe paper`` runs FewGLUE the way the official P-tuning code (a fork
of PET) ran it, for users who reproduce the paper's table. Every difference is an option of
its own, and each option given explicitly wins over the recipe (``--recipe paper
--copa-loss ce`` is the paper's recipe with ptune's COPA loss):

==========================  ================================  ==================================
option                      ``ptune`` (default)               ``paper``
==========================  ================================  ==================================
``patterns``                ptune's ``p1``                    WiC ``*word *?``; CB's hypothesis
                                                              and MultiRC's question never cut;
                                                              COPA "I" lowercased; any final
                                                              punctuation cut
``copa_loss``               ``ce`` over the two choices       ``hinge`` (token-mean CEs)
``copa_masks``              ``per_choice``                    ``longest`` choice's count
``wsc_masks``               ``exact``                         ``padded``: 0-3 extra in training,
                                                              1 at evaluation
``wsc_loss``                ``sum`` per example               ``token_mean`` over the batch
``selection``               ties: lower dev loss              ties: later checkpoint; CB and
                                                              MultiRC: accuracy and F1 both
prompt ``truncation``       ``longest_first``                 ``last_first`` (PET's)
prompt ``max_length``       the task's                        the task's minus the special tokens
prompt ``token_types``      ``segments``                      ``zero``
prompt ``encoder``          LSTM H/2 per direction            LSTM H per direction
prompt ``multi_token``      ``parallel``                      COPA: ``iterative``
train ``warmup_steps``      0                                 RTE: 150
==========================  ================================  ==================================

(The paper's code read COPA's choices one mask at a time and summed their log-probabilities
at evaluation; ``length_norm`` is ``sum`` in both recipes.) docs/superglue.md says why
ptune's defaults differ.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence, get_args

from ..batch import Item
from ..config import PromptConfig
from ..errors import ConfigError
from ..model import PTunedModel
from ..template import special_token_frame
from .superglue_losses import RecipeModel, with_pad_masks

__all__ = ["RecipeOptions", "RECIPES", "PAPER_PATTERNS", "chosen", "prompt_defaults", "train_defaults",
           "paper_template", "paper_examples", "build", "training_items"]

Recipe = Literal["ptune", "paper"]
RECIPES: tuple[str, ...] = get_args(Recipe)

PAPER_PATTERNS = {
    "CB": "{premise:shorten} [SEP] {hypothesis} ? [P] answer: [MASK]",
    "MultiRC": "{passage:shorten} . Question: {question} ? Is it {answer} ? [P] [MASK] .",
    "WiC": "{sentence1:shorten} [SEP] {sentence2:shorten} [P] *{word} *? [MASK]",
}
"""The paper's code's pattern 1 where it differs from ptune's ``p1`` (which marks WiC's word
``*word* ?`` and lets every text field be cut)."""

_CHOICES: dict[str, dict[str, str]] = {  # option -> recipe -> value
    "patterns": {"ptune": "ptune", "paper": "paper"},
    "copa_loss": {"ptune": "ce", "paper": "hinge"},
    "copa_masks": {"ptune": "per_choice", "paper": "longest"},
    "wsc_masks": {"ptune": "exact", "paper": "padded"},
    "wsc_loss": {"ptune": "sum", "paper": "token_mean"},
    "selection": {"ptune": "ptune", "paper": "paper"},
}
_BOTH = {"CB": ("accuracy", "f1"), "MultiRC": ("accuracy", "f1a")}
"""The paper's code kept a CB or MultiRC checkpoint only when accuracy and F1 were both at
least their best (MultiRC: accuracy and F1 over answer options)."""
PAPER_WARMUP = {"RTE": 150}


@dataclass(frozen=True, kw_only=True)
class RecipeOptions:
    """The recipe and its options (fields of :class:`~ptune.tasks.superglue.SuperGlueConfig`)."""

    recipe: Recipe = "ptune"
    """``ptune`` (ptune's own choices) or ``paper`` (what the official P-tuning FewGLUE code
    did; docs/superglue.md lists every difference). Each option below, and each prompt and
    training option, given explicitly wins over the recipe."""
    patterns: Literal["ptune", "paper"] | None = None
    """``paper``: WiC's word marked ``*word *?``, CB's hypothesis and MultiRC's question never
    cut, COPA's choices lowercased even when they start with "I", all final punctuation
    taken off COPA's and RTE's texts (default: the recipe's)."""
    copa_loss: Literal["ce", "hinge"] | None = None
    """COPA's training loss: ``ce`` over the two choices' log-probabilities, or ``hinge``:
    max(0, 1 + CE(right) - CE(wrong)) with token-mean CEs over the batch (default: the recipe's)."""
    copa_masks: Literal["per_choice", "longest"] | None = None
    """COPA's training input (masked LMs): each choice at its own number of masks, or one
    input with the longer choice's number (default: the recipe's)."""
    wsc_masks: Literal["exact", "padded"] | None = None
    """WSC's masks: the referent's number, or ``padded``: 0-3 extra masks whose target is
    padding in training and one extra at evaluation, where padding may fill a mask (default:
    the recipe's)."""
    wsc_loss: Literal["sum", "token_mean"] | None = None
    """WSC's training loss: the referent's negative log-probability per example, or the LM's
    cross-entropy averaged over the batch's target tokens (default: the recipe's)."""
    selection: Literal["ptune", "paper"] | None = None
    """Which dev32 evaluation is kept: ``ptune``: ties broken by the dev loss; ``paper``: ties
    go to the later checkpoint and CB/MultiRC need accuracy and F1 both at least their best
    (default: the recipe's)."""

    def check_recipe(self) -> None:
        """Raise :class:`ConfigError` for an unknown recipe or option value."""
        if self.recipe not in RECIPES:
            raise ConfigError("recipe", f"{self.recipe!r}; accepted: {', '.join(RECIPES)}")
        for name, values in _CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in values.values():
                raise ConfigError(name, f"{value!r}; accepted: {', '.join(dict.fromkeys(values.values()))}")


def chosen(options: RecipeOptions, name: str) -> str:
    """The value of option ``name``: the one given, else the recipe's."""
    value = getattr(options, name)
    return value if value is not None else _CHOICES[name][options.recipe]


def paper_template(task: str, options: RecipeOptions, default: str) -> str | None:
    """The paper's pattern text for ``task`` when ``patterns`` is ``paper``, it differs from
    ptune's and it stands for ``default``, the pattern the task uses by default for the
    model's kind: the paper's is ``p1``; causal LMs keep their own (CB's and WiC's ``p1``
    hold a ``[SEP]``)."""
    return PAPER_PATTERNS.get(task) if chosen(options, "patterns") == "paper" and default == "p1" else None


def paper_examples(task: str, options: RecipeOptions, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``examples`` with the paper's text of the fields its patterns change: COPA's choices
    with the first letter lowercased (also "I") and, as RTE's hypothesis and COPA's premise,
    without any final punctuation mark (ptune keeps "I" and cuts only ``.?!,;:``)."""
    if chosen(options, "patterns") != "paper" or task not in ("COPA", "RTE"):
        return examples
    out = []
    for ex in examples:
        ex = dict(ex)
        if task == "RTE":
            ex["hypothesis_stem"] = ex["hypothesis"].rstrip(string.punctuation)
        else:
            ex["premise_stem"] = ex["premise"].rstrip(string.punctuation)
            for n in ("1", "2"):
                c = ex["choice" + n]
                ex[f"choice{n}_stem"] = (c[:1].lower() + c[1:]).rstrip(string.punctuation)
            ex["choices"] = [ex["choice1_stem"], ex["choice2_stem"]]
        out.append(ex)
    return out


def prompt_defaults(task: str, options: RecipeOptions, given: Mapping[str, Any], *, max_length: int,
                    tokenizer: Any, hidden_size: int) -> dict[str, Any]:
    """The PromptConfig fields of a task's prompt: the ``given`` ones over the recipe's.

    ``max_length`` is the task's length; the paper's code (PET) took the special tokens off
    it before cutting the text and took them off again inside its cut, so its texts end
    that many tokens shorter.
    """
    out: dict[str, Any] = {"max_length": max_length}
    if options.recipe == "paper":
        prefix, suffix = special_token_frame(tokenizer)
        out.update(max_length=max_length - len(prefix) - len(suffix), truncation="last_first", token_types="zero",
                   encoder={"type": "lstm", "lstm_hidden": hidden_size})
        if task == "COPA":
            out["multi_token"] = "iterative"
        if "encoder" in given:  # (canonical: a mapping) the paper's LSTM width where an LSTM has none
            encoder = dict(given["encoder"])
            if encoder["type"] == "lstm" and encoder.get("lstm_hidden") is None:
                encoder["lstm_hidden"] = hidden_size
            out["encoder"] = encoder
    out.update({k: v for k, v in given.items() if k != "encoder" or options.recipe != "paper"})
    if not out.get("max_length"):
        out["max_length"] = max_length
    return out


def train_defaults(task: str, options: RecipeOptions) -> dict[str, Any]:
    """TrainConfig fields the recipe sets for ``task`` (under the ones a run gives)."""
    out: dict[str, Any] = {}
    if options.recipe == "paper" and task in PAPER_WARMUP:
        out["warmup_steps"] = PAPER_WARMUP[task]
    if chosen(options, "selection") == "paper":
        out.update(ties="later", select_all=_BOTH.get(task, ()))
    return out


def build(task: str, options: RecipeOptions, lm: Any, tokenizer: Any, prompt: PromptConfig, **kwargs: Any
          ) -> PTunedModel:
    """The P-tuned model of a run: a :class:`RecipeModel` where COPA or WSC take the
    paper's loss or masks, else a plain :class:`PTunedModel`. The paper recipe's COPA
    masks apply to masked LMs (a causal LM reads each choice as its own continuation)."""
    model_options: dict[str, Any] = {}
    # the recipe's longest-choice masks apply to masked LMs (asked for explicitly: an error otherwise)
    longest = chosen(options, "copa_masks") == "longest" and (options.copa_masks is not None or prompt.kind == "masked")
    if task == "COPA" and (chosen(options, "copa_loss") == "hinge" or longest):
        model_options = {"train_loss": "hinge" if chosen(options, "copa_loss") == "hinge" else "ce",
                         "train_masks": "longest" if longest else "per_candidate"}
    elif task == "WSC" and (chosen(options, "wsc_masks"), chosen(options, "wsc_loss")) != ("exact", "sum"):
        padded = chosen(options, "wsc_masks") == "padded"
        model_options = {"train_loss": "token_mean" if chosen(options, "wsc_loss") == "token_mean" else "ce",
                         "eval_extra_masks": int(padded), "ban_special": not padded}
    if not model_options:
        return PTunedModel(lm, tokenizer, prompt, **kwargs)
    return RecipeModel(lm, tokenizer, prompt, **model_options, **kwargs)


def training_items(task: str, options: RecipeOptions, model: Any, items: Sequence[Item]) -> list[Item]:
    """The prepared training items of a run: WSC's with 0-3 padding masks when ``padded``."""
    if task == "WSC" and chosen(options, "wsc_masks") == "padded" and isinstance(model, PTunedModel):
        return with_pad_masks(items, model.pad_id)
    return list(items)
