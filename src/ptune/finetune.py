"""The fine-tuning baseline: transformers' sequence-classification model on the LM, no pattern.

Each example becomes one or two text segments (``inputs``, formats such as ``"{premise}"``)
given to the tokenizer's pair API and scored by ``AutoModelForSequenceClassification``
built on the LM's backbone weights: transformers decides how its architecture pools and
applies the head. For multiple choice (``candidates_field``) every (example, candidate)
pair is one row scored by a one-output head, as ``AutoModelForMultipleChoice`` does.

:class:`ClassifierModel` follows the model protocol of :class:`~ptune.model.PTunedModel`,
so :func:`ptune.trainer.train` trains it (the head with ``lr``, the backbone with ``lm_lr``
when ``finetune_lm``) and :mod:`ptune.checkpoint` saves and loads it.

Example:
    >>> model = ClassifierModel.from_base("bert-base-cased", inputs=["{premise}", "{hypothesis}"],
    ...                                   labels=["entailment", "not_entailment"], seed=0)  # doctest: +SKIP
    >>> model.predict([{"premise": "A cat sleeps.", "hypothesis": "A cat rests."}])  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .batch import Item, Output
from .config import SpeedConfig, _check_choice, _Mapped
from .data import as_examples, is_stream, iter_examples
from .errors import ConfigError, DataError
from .inference import iter_outputs, iter_predictions
from .lm import detect_kind, load_base, max_positions, pad_token_id
from .template import check_fields
from .verbalizer import find_label

__all__ = ["ClassifierConfig", "ClassifierModel", "ClassifierBatch"]

CANDIDATE = "candidate"
_FIELD = re.compile(r"\{(\w+)\}")


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class ClassifierConfig(_Mapped):
    """What a fine-tuning classifier is: everything needed to rebuild it on its base model."""

    key: ClassVar[str] = "classifier"

    inputs: list[str]
    """One or two text segments, e.g. ``["{premise}", "{hypothesis}"]``; ``{field}`` is
    replaced by the example's field (``{candidate}`` by each candidate)."""
    labels: list[str] | None
    """Class labels in output order; ``None`` for multiple choice."""
    candidates_field: str | None = None
    """Multiple choice: the field holding the list of candidate strings (the label is
    an index into it)."""
    label_field: str = "label"
    """The example field holding the gold label."""
    max_length: int | None = None
    """Longest input in tokens (default: the model's limit)."""
    dropout: float | None = None
    """Dropout before the head, for architectures whose head has one (BERT, RoBERTa,
    ALBERT: ``classifier_dropout``); ``None``: the architecture's default."""
    kind: Literal["masked", "causal"] | None = None
    """``masked`` or ``causal``; ``None`` reads it from the model."""

    def __post_init__(self) -> None:
        inputs, labels, cf = self.inputs, self.labels, self.candidates_field
        if isinstance(inputs, str) or not isinstance(inputs, (list, tuple)) or not 1 <= len(inputs) <= 2 or not all(
                isinstance(x, str) and x.strip() for x in inputs):
            raise ConfigError("inputs", f"must be a list of 1 or 2 non-empty text formats, got {inputs!r}")
        object.__setattr__(self, "inputs", list(inputs))
        names = [n for x in inputs for n in _FIELD.findall(x)]
        if not [n for n in names if n != CANDIDATE]:
            raise ConfigError("inputs", f"no {{field}} in {inputs!r}; e.g. ['{{premise}}', '{{hypothesis}}']")
        if (cf is not None) != (CANDIDATE in names):
            raise ConfigError("inputs", "{candidate} in one segment and candidates_field (the field with the "
                                        "candidates) go together: multiple choice needs both")
        if cf is not None and (not isinstance(cf, str) or not cf):
            raise ConfigError("candidates_field", f"must be a field name, got {cf!r}")
        if cf is not None and labels is not None:
            raise ConfigError("labels", "must be None for multiple choice (the label is a candidate index)")
        if cf is None:
            if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or len(labels) < 2 or not all(
                    isinstance(x, str) and x for x in labels):
                raise ConfigError("labels", f"must be a list of at least 2 non-empty labels (or set candidates_field), "
                                            f"got {labels!r}")
            if len(set(labels)) < len(labels):
                raise ConfigError("labels", f"duplicate labels {sorted({x for x in labels if labels.count(x) > 1})}")
            object.__setattr__(self, "labels", list(labels))
        if not isinstance(self.label_field, str) or not self.label_field:
            raise ConfigError("label_field", f"must be a field name, got {self.label_field!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ConfigError("max_length", f"must be an integer of at least 2, got {self.max_length!r}")
        d = self.dropout
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1):
            raise ConfigError("dropout", f"must be in [0, 1), got {d!r}")
        _check_choice("kind", self.kind, ("masked", "causal", None))

    @property
    def multiple_choice(self) -> bool:
        return self.candidates_field is not None

    @property
    def fields(self) -> list[str]:
        """The example fields the inputs read (besides the candidates)."""
        return list(dict.fromkeys(n for s in self.inputs for n in _FIELD.findall(s) if n != CANDIDATE))


# ----------------------------------------------------------------------------- batches
@dataclass
class ClassifierBatch:
    """R padded rows for B examples (R = B for classification, one row per candidate for
    multiple choice): the model's keyword inputs and where each row's score goes."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask (and token_type_ids): (R, T)
    row_example: torch.Tensor  # (R,) example of each row
    row_candidate: torch.Tensor  # (R,) candidate index of each row (0 for classification)
    labels: torch.Tensor  # (B,), -100: unknown

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: Any, non_blocking: bool = False) -> "ClassifierBatch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return ClassifierBatch({k: move(v) for k, v in self.inputs.items()}, move(self.row_example),
                               move(self.row_candidate), move(self.labels))


def _sequence_classifier(lm: nn.Module, tokenizer: Any, config: ClassifierConfig, seed: int | None):
    """``AutoModelForSequenceClassification`` of ``lm``'s architecture with ``lm``'s backbone
    weights, and the names of its parameters that the LM did not provide (the head)."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(lm.config)
    cfg.num_labels = 1 if config.multiple_choice else len(config.labels or [])
    cfg.use_cache = False
    if cfg.pad_token_id is None:  # causal LMs find each row's last token by it
        cfg.pad_token_id = pad_token_id(tokenizer)
    for name in ("classifier_dropout", "classifier_dropout_prob"):
        if config.dropout is not None and hasattr(cfg, name):
            setattr(cfg, name, float(config.dropout))
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        seq = AutoModelForSequenceClassification.from_config(cfg)
    loaded = seq.base_model.load_state_dict(lm.base_model.state_dict(), strict=False)
    if loaded.unexpected_keys:
        raise ConfigError("model", f"{type(seq).__name__} has no place for the LM's {loaded.unexpected_keys[:5]}")
    prefix = seq.base_model_prefix + "."
    new = {prefix + k for k in loaded.missing_keys}  # e.g. BERT's pooler, absent from its masked LM
    head = [n for n, _ in seq.named_parameters() if not n.startswith(prefix) or n in new]
    weight = lm.get_input_embeddings().weight
    return seq.to(device=weight.device, dtype=weight.dtype), head


# ----------------------------------------------------------------------------- the model
class ClassifierModel(nn.Module):
    """A masked or causal LM turned into a classifier (or a multiple-choice scorer).

    Args:
        lm: an ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM`` model; its backbone
            weights are copied into ``AutoModelForSequenceClassification`` (``seq``).
        tokenizer: its tokenizer.
        config: inputs, labels and options.
        base_model: the name or folder the LM was loaded from (recorded in checkpoints).
        seed: seed of the head's initial weights (default: the global RNG state).
        head: with ``lm`` already this classifier's sequence-classification model (a
            checkpoint's ``lm/``): the names of its head parameters.

    The LM starts frozen (``requires_grad=False``, dropout off); see :meth:`set_lm_trainable`.
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, config: ClassifierConfig, *, base_model: str | None = None,
                 seed: int | None = None, head: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.kind = config.kind or detect_kind(lm)
        self.tokenizer = tokenizer
        self.base_model = base_model or getattr(lm.config, "_name_or_path", "") or "unknown"
        if head is None:
            self.seq, self.head_names = _sequence_classifier(lm, tokenizer, config, seed)
        else:
            self.seq, self.head_names = lm, list(head)
        limit = max_positions(self.seq, tokenizer)
        if config.max_length is not None and config.max_length > limit:
            raise ConfigError("max_length", f"{config.max_length} is more than the {limit} positions the model takes")
        self.max_length = config.max_length or limit
        self.speed = SpeedConfig()
        self.own_lm = False  # True when the LM came from a checkpoint's lm/ (it is saved again)
        self.lm_dropout = False
        self.set_lm_trainable(False)

    @classmethod
    def from_base(cls, model: str, *, inputs: list[str], labels: list[str] | None = None,
                  seed: int | None = None, **options: Any) -> "ClassifierModel":
        """Load a base model by hub name (e.g. ``"gpt2"``) or folder and put a head on it;
        ``options`` are the other :class:`ClassifierConfig` fields."""
        config = ClassifierConfig(inputs=inputs, labels=labels, **options)
        lm, tokenizer, kind = load_base(model, config.kind)
        return cls(lm, tokenizer, ClassifierConfig.from_dict({**config.to_dict(), "kind": kind}),
                   base_model=model, seed=seed)

    @property
    def lm(self) -> nn.Module:
        """The LM backbone (``seq.base_model``), as the trainer and checkpoints see it."""
        return self.seq.base_model

    # ------------------------------------------------------------------ modes
    def prompt_parameters(self) -> list[nn.Parameter]:
        """The head's parameters (what the trainer tunes with ``lr``)."""
        params = dict(self.seq.named_parameters())
        return [params[n] for n in self.head_names]

    def set_lm_trainable(self, trainable: bool, dropout: bool | None = None) -> None:
        """Freeze (default) or unfreeze the backbone; ``dropout`` keeps its dropout while training."""
        self.lm_trainable = trainable
        self.lm_dropout = trainable if dropout is None else dropout
        head = set(self.head_names)
        for name, p in self.seq.named_parameters():
            p.requires_grad_(trainable or name in head)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ClassifierModel":
        super().train(mode)
        self.lm.train(mode and self.lm_dropout)
        return self

    # ------------------------------------------------------------------ data
    def _label_index(self, ex: dict[str, Any], src: str, require: bool, n_candidates: int) -> int:
        lf = self.config.label_field
        if ex.get(lf) is None:
            if require:
                raise DataError(src, "missing; training and evaluation need a label", field=lf)
            return -100
        if self.config.multiple_choice:
            found = find_label(ex[lf], {str(i): i for i in range(n_candidates)})
            wanted = f"a candidate index (0 to {n_candidates - 1})"
        else:
            labels = self.config.labels or []
            found = find_label(ex[lf], {label: i for i, label in enumerate(labels)})
            wanted = f"a label ({', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''})"
        if found is None:
            raise DataError(src, f"{ex[lf]!r} is not {wanted}", field=lf)
        return found

    def _candidates(self, ex: dict[str, Any], src: str) -> list[str]:
        cf = self.config.candidates_field
        if cf is None:
            return []
        if cf not in ex:
            raise DataError(src, "missing; multiple choice needs the list of candidates", field=cf)
        cands = ex[cf]
        if isinstance(cands, (str, bytes)) or not isinstance(cands, (list, tuple)) or not all(
                isinstance(c, str) for c in cands):
            raise DataError(src, f"must be a list of candidate strings, got {cands!r:.60}", field=cf)
        if not cands:
            raise DataError(src, "is empty; multiple choice needs at least one candidate", field=cf)
        return list(cands)

    def prepare(self, examples: Sequence[dict[str, Any]], sources: Sequence[str] | None = None, *,
                require_labels: bool = False) -> list[Item]:
        """Validate and tokenize examples (once, in one tokenizer call). An item's ``fields``
        hold the tokenizer's outputs; for multiple choice one list per candidate.

        Raises:
            DataError: naming the source and field of the first bad example.
        """
        examples, sources = as_examples(examples, sources)
        segments: list[list[str]] = []  # one per row
        owner: list[int] = []
        items: list[Item] = []
        for i, (ex, src) in enumerate(zip(examples, sources)):
            if not isinstance(ex, dict):
                raise DataError(src, f"expected an object with fields, got {type(ex).__name__}")
            check_fields(self.config, ex, src)
            cands = self._candidates(ex, src)
            label = self._label_index(ex, src, require_labels, len(cands))
            for c in cands or [None]:
                value = lambda m, c=c, ex=ex: c if m.group(1) == CANDIDATE else str(ex[m.group(1)])  # noqa: E731
                segments.append([_FIELD.sub(value, fmt) for fmt in self.config.inputs])
                owner.append(i)
            items.append(Item({}, label, src, candidate_texts=cands or None))
        if not items:
            return []
        texts = [list(t) for t in zip(*segments)]  # one list per segment
        enc = self.tokenizer(*texts, truncation=True, max_length=self.max_length)
        keys = [k for k in enc if k != "attention_mask"]
        for r, i in enumerate(owner):
            if not enc["input_ids"][r]:
                raise DataError(sources[i], "gives no tokens; the inputs need some text", field=self.config.fields[0])
            for k in keys:
                value = list(enc[k][r])
                if self.config.multiple_choice:
                    items[i].fields.setdefault(k, []).append(value)  # type: ignore[arg-type]
                else:
                    items[i].fields[k] = value
        return items

    def _rows(self, item: Item) -> list[dict[str, list[int]]]:
        if not self.config.multiple_choice:
            return [item.fields]
        return [dict(zip(item.fields, row)) for row in zip(*item.fields.values())]  # type: ignore[call-overload]

    def collate(self, items: Sequence[Item]) -> ClassifierBatch:
        """Assemble and right-pad a batch (one row per example, or per candidate)."""
        rows, where = [], []
        for b, it in enumerate(items):
            for c, row in enumerate(self._rows(it)):
                rows.append(row)
                where.append((b, c))
        multiple = self.speed.pad_to_multiple_of
        t = -(-max(len(r["input_ids"]) for r in rows) // multiple) * multiple  # round up to a bucket
        pad = {"input_ids": self.seq.config.pad_token_id}
        inputs = {k: torch.tensor([r[k] + [pad.get(k, 0)] * (t - len(r[k])) for r in rows]) for k in rows[0]}
        inputs["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * (t - len(r["input_ids"]))
                                                 for r in rows])
        index = torch.tensor(where, dtype=torch.long)
        return ClassifierBatch(inputs, index[:, 0], index[:, 1], torch.tensor([it.label for it in items]))

    # ------------------------------------------------------------------ forward
    def forward(self, batch: ClassifierBatch) -> Output:
        """Scores (B, n_labels) — or (B, C_max), ``-inf`` where an example has fewer
        candidates — and, when every label is known, the cross-entropy loss."""
        logits = self.seq(**batch.inputs).logits.float()  # (R, n_out)
        if self.config.multiple_choice:
            shape = (len(batch), int(batch.row_candidate.max()) + 1)
            scores = logits.new_full(shape, float("-inf")).index_put((batch.row_example, batch.row_candidate),
                                                                     logits[:, 0])
        else:
            scores = logits
        loss = F.cross_entropy(scores, batch.labels) if bool((batch.labels >= 0).all()) else None
        return Output(scores, loss)

    # ------------------------------------------------------------------ prediction
    def predict(self, examples: Any, batch_size: int = 32) -> list[dict[str, Any]] | Iterator[dict[str, Any]]:
        """Predict labels (or candidates) of a list of dicts, a ``datasets.Dataset`` or prepared
        items; an ``IterableDataset`` or generator is read as it comes and gives an iterator
        (see :meth:`ptune.model.PTunedModel.predict`).

        Returns:
            Classification: ``{"label": best label, "scores": {label: probability}}``.
            Multiple choice: ``{"label": best candidate, "index": its index,
            "scores": [probability of each candidate]}``.
        """
        if is_stream(examples):
            return (p for _, _, p in iter_predictions(self, iter_examples(examples), batch_size))
        items = examples if examples and isinstance(examples[0], Item) else self.prepare(examples)  # type: ignore[arg-type]
        out: list[dict[str, Any]] = []
        for start, batch, output in iter_outputs(self, items, batch_size):
            probs = output.scores.float().softmax(-1).cpu()
            for it, row in zip(items[start : start + len(batch)], probs):
                best = int(row.argmax())
                if self.config.multiple_choice:
                    cands = it.candidate_texts or []
                    out.append({"label": cands[best] if cands else str(best), "index": best,
                                "scores": row[: len(it.fields["input_ids"])].tolist()})
                else:
                    labels = self.config.labels or []
                    out.append({"label": labels[best], "scores": dict(zip(labels, row.tolist()))})
        return out
