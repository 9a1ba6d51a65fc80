"""Configuration dataclasses: what a prompt is (saved in checkpoints) and how to train it.

Both are frozen and keyword-only; every field is validated in ``__post_init__`` and
loading from a dict rejects unknown keys, naming the nearest valid one.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, Mapping, TypeVar, get_args

from .encoder import EncoderConfig
from .errors import ConfigError
from .files import dumps_json
from .tracking import check_trackers
from .verbalizer import Verbalizer

__all__ = ["PromptConfig", "TrainConfig", "SpeedConfig", "GenerateConfig"]


CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
"""The modes of ``torch.compile`` that ``TrainConfig.compile`` accepts besides True/False."""


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(name, f"{value!r}; accepted: {', '.join(map(str, choices))}")


def _from_dict(cls: type, d: dict[str, Any], where: str) -> dict[str, Any]:
    names = [f.name for f in fields(cls)]
    for key in d:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{where}.{key}", f"unknown key{hint}")
    return dict(d)


def _conforms(value: Any, tp: Any) -> bool:
    """Whether a value read from JSON (a checkpoint's config) has the field's type; numbers
    must be finite. A nested config may also be given as a mapping or its type's name."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        number = isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    if dataclasses.is_dataclass(tp):
        return isinstance(value, (tp, Mapping, str))
    return True


def check_types(cls: type, d: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` (``where.field``) for a value of the wrong type in ``d``."""
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        if name in hints and not _conforms(value, hints[name]):
            raise ConfigError(f"{where}.{name}", f"got {type(value).__name__} {value!r:.60}, which is not a "
                              f"{str(hints[name]).replace('typing.', '')}")


def settings_differences(there: Mapping[str, Any], here: Mapping[str, Any], *, most: int = 4) -> str:
    """What a refused resume says: the settings that differ, ``key: <there> there, <here>
    here`` (nested keys dotted, long values cut short, at most ``most`` named).

    Example:
        >>> settings_differences({"train": {"lr": 0.1}}, {"train": {"lr": 0.2}, "seed": 1})
        'train.lr: 0.1 there, 0.2 here; seed: unset there, 1 here'
    """
    found = _differences(there, here, "")
    more = len(found) - most
    return "; ".join(found[:most]) + (f"; and {more} more" if more > 0 else "")


def _differences(there: Mapping[str, Any], here: Mapping[str, Any], prefix: str) -> list[str]:
    out: list[str] = []
    for k in [*there, *(k for k in here if k not in there)]:
        a, b = there.get(k), here.get(k)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{k}.")
            continue
        a_text, b_text = (_short(dumps_json(v)) if k in d else "unset" for v, d in ((a, there), (b, here)))
        out.append(f"{prefix}{k}: {a_text} there, {b_text} here")
    return out


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


C = TypeVar("C", bound="_Mapped")


def _json_shaped(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """``asdict``'s mapping with tuples as lists, as JSON gives them back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


class _Mapped:
    """``to_dict``/``from_dict`` of a config dataclass; unknown keys name the nearest field."""

    key: ClassVar[str]  # the config's name in messages ("train.lrr: unknown key")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON holds them (tuples as lists)."""
        return asdict(self, dict_factory=_json_shaped)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """The config of a mapping (e.g. read from a checkpoint), its keys and value types checked.

        Raises:
            ConfigError: ``key.field`` of an unknown key or a value of the wrong type.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(cls.key, f"expected a mapping of fields, got {type(d).__name__}")
        check_types(cls, d, cls.key)
        return cls(**_from_dict(cls, d, cls.key))


@dataclass(frozen=True, kw_only=True)
class PromptConfig(_Mapped):
    """What a P-tuned prompt is: everything needed to rebuild it on its base model."""

    key: ClassVar[str] = "prompt"

    template: str
    """Template text, e.g. ``"{premise} ? [P*3] [MASK] , {hypothesis}"``."""
    verbalizer: dict[str, list[str]] = field(default_factory=dict)
    """Label -> words that say it (empty when ``candidates_field`` is set)."""
    candidates_field: str | None = None
    """Per-example answers: the example field holding a list of candidate answer texts
    (COPA's choices, ReCoRD's entities). The label is then the index of the right
    candidate, each candidate is scored at the answer slot (see ``length_norm``) and
    the verbalizer is not used."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The prompt encoder (paper: ``lstm``)."""
    label_field: str = "label"
    """The example field holding the gold label."""
    x_field: str = "subject"
    """The field that a LAMA-style ``[X]`` stands for."""
    normalize: Literal["labels", "vocab"] = "labels"
    """``labels``: train with cross-entropy over the labels (PET-style classification);
    ``vocab``: label scores are LM log-probabilities over the whole vocabulary and the
    loss is the LM cross-entropy of the gold word (the paper's LAMA loss)."""
    length_norm: Literal["sum", "mean"] = "sum"
    """Multi-token words: sum of token log-probabilities, or their mean."""
    multi_token: Literal["parallel", "iterative"] = "parallel"
    """Masked LMs, multi-token words at evaluation: ``parallel`` reads every mask in one
    pass; ``iterative`` (PET) fills the word's tokens one at a time, the most probable
    first, each pass seeing the tokens filled so far. Training always reads in parallel."""
    max_length: int | None = None
    """Longest input in tokens (default: the tokenizer's limit)."""
    truncation: Literal["longest_first", "last_first"] = "longest_first"
    """Which shortenable field is cut first when an input is too long."""
    token_types: Literal["segments", "zero"] = "segments"
    """Token type (segment) ids of models that take them: ``segments`` counts the
    template's ``[SEP]`` markers (0 before the first, 1 after it...); ``zero`` gives 0
    everywhere, as the paper's few-shot SuperGLUE code (one text segment per pattern)."""
    padding_side: Literal["right", "left"] = "right"
    """Where batches are padded; results do not depend on it."""
    kind: Literal["masked", "causal"] | None = None
    """``masked`` or ``causal``; ``None`` reads it from the model."""

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or not self.template.strip():
            raise ConfigError("template", "must be a non-empty string")
        # canonical form: label -> list of words, label order kept (it is the output order)
        if self.candidates_field is not None:
            if not isinstance(self.candidates_field, str) or not self.candidates_field:
                raise ConfigError("candidates_field", f"must be a field name, got {self.candidates_field!r}")
            if self.verbalizer:
                raise ConfigError("verbalizer", "give a verbalizer or a candidates_field, not both")
            object.__setattr__(self, "verbalizer", {})
        else:
            object.__setattr__(self, "verbalizer", Verbalizer(self.verbalizer).to_dict())
        if isinstance(self.encoder, str):
            object.__setattr__(self, "encoder", EncoderConfig(type=self.encoder))  # type: ignore[arg-type]
        elif isinstance(self.encoder, Mapping):
            object.__setattr__(self, "encoder", EncoderConfig.from_dict(dict(self.encoder)))
        _check_choice("normalize", self.normalize, ("labels", "vocab"))
        _check_choice("length_norm", self.length_norm, ("sum", "mean"))
        _check_choice("multi_token", self.multi_token, ("parallel", "iterative"))
        _check_choice("truncation", self.truncation, ("longest_first", "last_first"))
        _check_choice("token_types", self.token_types, ("segments", "zero"))
        _check_choice("padding_side", self.padding_side, ("right", "left"))
        _check_choice("kind", self.kind, ("masked", "causal", None))
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError("max_length", f"must be at least 2, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self, dict_factory=_json_shaped), "encoder": self.encoder.to_dict()}

    @classmethod
    def check_fields(cls, given: Mapping[str, Any], fixed: tuple[str, ...], who: str) -> dict[str, Any]:
        """``given``: some PromptConfig fields for prompts that a harness builds (which
        decides the ``fixed`` ones), checked as a PromptConfig checks them.

        Raises:
            ConfigError: ``prompt.<key>`` for an unknown or fixed key or a bad value.
        """
        given = _from_dict(cls, dict(given), "prompt")
        for key in given:
            if key in fixed:
                raise ConfigError(f"prompt.{key}", f"set by {who} for each prompt; cannot be given")
        try:
            stand_in = {"template": "[MASK]", **({} if {"verbalizer", "candidates_field"} & set(given)
                                                  else {"verbalizer": {"a": "a"}})}
            canonical = cls(**{**stand_in, **given}).to_dict()
        except ConfigError as e:
            raise ConfigError(f"prompt.{e.field}", str(e)[len(e.field) + 2:]) from None
        return {key: canonical[key] for key in given}


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Mapped):
    """How to train a prompt (and optionally the LM with it)."""

    key: ClassVar[str] = "train"

    steps: int | None = None
    """Optimizer steps to train; exclusive with ``epochs``."""
    epochs: int | None = None
    """Passes over the training data; exclusive with ``steps`` (default 10 if neither)."""
    batch_size: int = 8
    """Global batch size: examples per optimizer step over all processes."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (each of batch_size/grad_accum)."""
    lr: float = 1e-3
    """Learning rate of the prompt encoder."""
    lm_lr: float = 1e-5
    """Learning rate of the LM when it is tuned jointly."""
    weight_decay: float = 0.0
    """AdamW weight decay of the prompt encoder."""
    lm_weight_decay: float = 0.01
    """AdamW weight decay of the LM (not applied to biases and norms)."""
    schedule: Literal["linear", "exponential", "constant"] = "linear"
    """Learning-rate decay after warmup."""
    gamma: float = 0.98
    """Exponential decay factor per epoch (``schedule="exponential"``, the paper's LAMA)."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping norm (``None``: no clipping)."""
    eval_every: int | None = None
    """Evaluate on dev every N steps (default: once per epoch)."""
    patience: int | None = None
    """Stop after this many evaluations without a strict improvement (``None``: never)."""
    metric: str = "accuracy"
    """The dev metric that selects the best checkpoint (higher is better). A tie with the best:
    see ``ties``."""
    ties: Literal["loss", "later"] = "loss"
    """An evaluation equal to the best: ``loss``: it wins when its dev loss is lower (on small
    dev sets accuracy moves in coarse steps while the prompt still improves, and early
    stopping should not end such a run); ``later``: it wins, but counts against patience
    (the paper's few-shot code). See :mod:`ptune.selection`."""
    select_all: tuple[str, ...] = ()
    """Dev metrics that must all be at least their best for an evaluation to win (the
    paper's CB and MultiRC: accuracy and F1); empty: ``metric`` alone."""
    seed: int = 42
    """Seed of every random generator."""
    finetune_lm: bool = False
    """Tune the LM jointly with the prompt (the paper's SuperGLUE setting)."""
    lm_dropout: bool | None = None
    """LM dropout while training; ``None``: on when the LM is tuned, off when it is frozen."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast on GPU."""
    compile: bool | CompileMode = False
    """``torch.compile`` the LM (in place) before training: fewer kernel launches on a GPU,
    where length buckets keep recompilations rare; no gain on a CPU. A mode picks
    torch.compile's mode: ``reduce-overhead`` adds CUDA graphs (one launch per graph),
    ``max-autotune``, ``max-autotune-no-cudagraphs`` or ``default`` (= true)."""
    eval_batch_size: int = 32
    """Batch size for evaluation."""
    report_to: tuple[str, ...] = ()
    """Experiment trackers to log to through Accelerate: tensorboard, wandb, mlflow, comet_ml,
    aim, clearml, dvclive, swanlab, trackio, or all (every installed one). The run's config,
    the loss, the learning rates and the dev metrics are logged; TensorBoard writes into the
    run folder's logs/."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("steps", "give steps or epochs, not both")
        for name in ("steps", "epochs", "eval_every", "patience"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(name, f"must be a positive integer, got {v!r}")
        for name in ("batch_size", "grad_accum", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(name, f"must be a positive integer, got {v!r}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                "grad_accum", f"batch_size {self.batch_size} is not divisible by {self.grad_accum}"
            )
        for name in ("lr", "lm_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        for name in ("lr", "lm_lr", "weight_decay", "lm_weight_decay", "gamma", "max_grad_norm"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ConfigError(name, f"must be a finite number, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0 < self.gamma <= 1:
            raise ConfigError("gamma", f"must be in (0, 1], got {self.gamma}")
        _check_choice("schedule", self.schedule, ("linear", "exponential", "constant"))
        _check_choice("ties", self.ties, ("loss", "later"))
        if isinstance(self.select_all, str) or not all(isinstance(m, str) and m for m in self.select_all):
            raise ConfigError("select_all", f"must be a list of metric names, got {self.select_all!r}")
        object.__setattr__(self, "select_all", tuple(self.select_all))
        _check_choice("mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        if not isinstance(self.compile, bool):
            _check_choice("compile", self.compile, COMPILE_MODES)
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError("max_grad_norm", f"must be positive, got {self.max_grad_norm}")
        if isinstance(self.report_to, str):
            object.__setattr__(self, "report_to", tuple(t.strip() for t in self.report_to.split(",") if t.strip()))
        object.__setattr__(self, "report_to", tuple(self.report_to))
        check_trackers(self.report_to)

    def updated(self, changes: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``changes`` (field -> value); ``steps`` replaces ``epochs`` and the
        other way round, so a harness's default length gives way to the one asked for.

        Raises:
            ConfigError: ``train.<key>`` for an unknown key; the field for a bad value.
        """
        changes = _from_dict(TrainConfig, dict(changes), "train")
        for given, other in (("steps", "epochs"), ("epochs", "steps")):
            if changes.get(given) is not None and other not in changes:
                changes[other] = None
        return replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class SpeedConfig(_Mapped):
    """How a P-tuned model runs its LM: exact shortcuts that change speed, never results.

    Every shortcut is checked against the plain full forward in the tests; each can be
    turned off, e.g. ``model.speed = SpeedConfig(prefix_cache=False)``.
    """

    key: ClassVar[str] = "speed"
    prefix_cache: bool = True
    """Causal LMs: run the rows' shared start and a frozen LM's text prefix once, as a
    key/value cache (:mod:`ptune.cache`)."""
    lm_shortcuts: bool = True
    """Faster kernels for the same functions inside the LM while ptune runs it (fused
    tanh-GELU; a masked LM's last layer only at the answer positions: :mod:`ptune.kernels`)."""
    shared_prefix_min_tokens: int | None = None
    """Least number of saved tokens for running the rows' shared start once; ``None``: any
    saving on CPU, 2048 tokens on accelerators (where the extra pass costs kernel launches)."""
    pad_to_multiple_of: int = 1
    """Round padded lengths up to a multiple (fixed-shape buckets: fewer recompilations on GPU)."""

    def __post_init__(self) -> None:
        for name in ("prefix_cache", "lm_shortcuts"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        v = self.shared_prefix_min_tokens
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError("shared_prefix_min_tokens", f"must be a positive integer, got {v!r}")
        v = self.pad_to_multiple_of
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError("pad_to_multiple_of", f"must be a positive integer, got {v!r}")



@dataclass(frozen=True, kw_only=True)
class GenerateConfig(_Mapped):
    """How a causal LM continues the text at the answer slot (open-ended generation)."""

    key: ClassVar[str] = "generate"
    max_new_tokens: int = 32
    """Most tokens to write per example."""
    do_sample: bool = False
    """Sample the next token (with ``temperature`` and ``top_p``) instead of taking the most
    probable one (greedy)."""
    temperature: float = 1.0
    """Sampling temperature (only with ``do_sample``)."""
    top_p: float = 1.0
    """Nucleus sampling: sample among the most probable tokens whose probabilities sum to
    ``top_p`` (only with ``do_sample``)."""
    seed: int | None = None
    """Seed of the sampling (only with ``do_sample``); the same seed, examples and batch size
    give the same texts."""
    stop: tuple[str, ...] = ()
    """Stop strings: an example's text ends before the first of them that it writes."""

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be a positive integer, got {self.max_new_tokens!r}")
        if not isinstance(self.do_sample, bool):
            raise ConfigError("do_sample", f"must be true or false, got {self.do_sample!r}")
        if not self.temperature > 0:
            raise ConfigError("temperature", f"must be positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        if not self.do_sample:
            for name, default in (("temperature", 1.0), ("top_p", 1.0), ("seed", None)):
                if getattr(self, name) != default:
                    raise ConfigError(name, "applies to sampling only; set do_sample as well")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise ConfigError("stop", f"must be non-empty strings, got {list(stop)!r}")
        object.__setattr__(self, "stop", stop)
