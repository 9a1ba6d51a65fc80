"""The fine-tuning baseline: a classification head on the LM's pooled state, no pattern.

Each example becomes one or two text segments (``inputs``, each a format such as
``"{premise}"`` or ``"{word} : {sentence1}"``) given to the tokenizer's pair API; the LM
runs once and the state that its LM head would read is pooled — the first token
(CLS/BOS) of a masked LM, the last real token of a causal LM — and fed to a dropout +
linear head. For multiple choice (``candidates_field``) every (example, candidate) pair is
one row, ``{candidate}`` is substituted per candidate and the head gives one score per row.

:class:`ClassifierModel` has the duck-typed interface of :class:`~ptune.model.PTunedModel`
(``prepare``, ``collate``, ``forward``, ``set_lm_trainable``, ``prompt_parameters``), so
:func:`ptune.trainer.train` trains it unchanged: the head gets ``lr``, the LM ``lm_lr``
when ``finetune_lm``.

Example:
    >>> model = ClassifierModel.from_base(                           # doctest: +SKIP
    ...     "bert-base-cased", inputs=["{premise}", "{hypothesis}"],
    ...     labels=["entailment", "not_entailment"], seed=0)
    >>> train(model, train_examples, dev_examples, TrainConfig(finetune_lm=True))  # doctest: +SKIP
    >>> model.predict([{"premise": "A cat sleeps.", "hypothesis": "A cat rests."}])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
from dataclasses import asdict, dataclass, fields as dc_fields
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import _check_fingerprint, base_fingerprint, load_checkpoint_base, write_checkpoint_dir
from .config import _check_choice, _from_dict
from .errors import CheckpointError, ConfigError, DataError
from .lm import LMWrapper, _max_positions, _pad_id, head_input, load_base
from .model import Item, Output
from .verbalizer import find_label

__all__ = ["ClassifierConfig", "ClassifierModel", "ClassifierBatch", "ChoiceItem", "CONFIG_NAME", "HEAD_NAME"]

CONFIG_NAME = "classifier_config.json"
HEAD_NAME = "head.safetensors"
CANDIDATE = "candidate"
_FIELD = re.compile(r"\{(\w+)\}")


def _fields_of(fmt: str) -> list[str]:
    return _FIELD.findall(fmt)


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class ClassifierConfig:
    """What a fine-tuning classifier is: everything needed to rebuild it on its base model."""

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
    dropout: float = 0.1
    """Dropout before the linear head."""
    kind: Literal["masked", "causal"] | None = None
    """``masked`` or ``causal``; ``None`` reads it from the model."""

    def __post_init__(self) -> None:
        inputs = self.inputs
        if isinstance(inputs, str) or not isinstance(inputs, (list, tuple)) or not 1 <= len(inputs) <= 2:
            raise ConfigError("inputs", f"must be a list of 1 or 2 text formats, got {inputs!r}")
        if not all(isinstance(s, str) and s.strip() for s in inputs):
            raise ConfigError("inputs", f"each segment must be a non-empty string, got {inputs!r}")
        object.__setattr__(self, "inputs", list(inputs))
        names = [n for s in inputs for n in _fields_of(s)]
        if not [n for n in names if n != CANDIDATE]:
            raise ConfigError("inputs", f"no {{field}} in {inputs!r}; e.g. ['{{premise}}', '{{hypothesis}}']")
        if self.candidates_field is not None:
            if not isinstance(self.candidates_field, str) or not self.candidates_field:
                raise ConfigError("candidates_field", f"must be a field name, got {self.candidates_field!r}")
            if CANDIDATE not in names:
                raise ConfigError("inputs", "multiple choice needs {candidate} in one of the segments")
            if self.labels is not None:
                raise ConfigError("labels", "must be None for multiple choice (the label is a candidate index)")
        else:
            if CANDIDATE in names:
                raise ConfigError("inputs", "{candidate} needs candidates_field (the field with the candidates)")
            labels = self.labels
            if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or len(labels) < 2:
                raise ConfigError("labels", f"must be a list of at least 2 labels (or set candidates_field), got {labels!r}")
            if not all(isinstance(x, str) and x for x in labels):
                raise ConfigError("labels", f"must be non-empty strings, got {labels!r}")
            dup = sorted({x for x in labels if list(labels).count(x) > 1})
            if dup:
                raise ConfigError("labels", f"duplicate labels {dup}")
            object.__setattr__(self, "labels", list(labels))
        if not isinstance(self.label_field, str) or not self.label_field:
            raise ConfigError("label_field", f"must be a field name, got {self.label_field!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ConfigError("max_length", f"must be an integer of at least 2, got {self.max_length!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout!r}")
        _check_choice("kind", self.kind, ("masked", "causal", None))

    @property
    def multiple_choice(self) -> bool:
        return self.candidates_field is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierConfig":
        return cls(**_from_dict(cls, d, "classifier"))


# ----------------------------------------------------------------------------- batches
@dataclass
class ChoiceItem(Item):
    """A prepared multiple-choice example: ``fields`` hold one id list per candidate."""

    candidates: tuple[str, ...] = ()


@dataclass
class ClassifierBatch:
    """R rows of T tokens for B examples (R = B for classification, one row per
    candidate for multiple choice)."""

    input_ids: torch.Tensor  # (R, T)
    attention_mask: torch.Tensor  # (R, T)
    token_type_ids: torch.Tensor | None  # (R, T)
    row_example: torch.Tensor  # (R,) example of each row
    row_candidate: torch.Tensor  # (R,) candidate index of each row (0 for classification)
    n_candidates: int  # C_max (1 for classification)
    labels: torch.Tensor  # (B,), -100: unknown

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: Any, non_blocking: bool = False) -> "ClassifierBatch":
        kw = {}
        for f in dc_fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        return ClassifierBatch(**kw)


# ----------------------------------------------------------------------------- the model
class ClassifierModel(LMWrapper):
    """A masked or causal LM with a classification (or multiple-choice scoring) head.

    Args:
        lm: an ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM`` model.
        tokenizer: its tokenizer.
        config: inputs, labels and options.
        base_model: the name or folder the LM was loaded from (recorded in checkpoints).
        seed: seed of the head's initial weights (default: the global RNG state).

    The LM starts frozen (``requires_grad=False``, dropout off); see :meth:`set_lm_trainable`.
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, config: ClassifierConfig, *, base_model: str | None = None,
                 seed: int | None = None):
        super().__init__(lm, tokenizer, config, base_model)
        self.max_length = config.max_length or _max_positions(lm, tokenizer)
        out_emb = lm.get_output_embeddings()
        weight = getattr(out_emb, "weight", None) if out_emb is not None else None
        # softcapped logits are a nonlinear function of the head's output: read hidden states
        self._use_head = (
            isinstance(weight, torch.Tensor) and weight.ndim == 2
            and getattr(lm.config, "final_logit_softcapping", None) is None
        )
        if self._use_head:
            self.hidden_size = int(weight.shape[1])  # type: ignore[union-attr]
        else:
            text_cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
            self.hidden_size = int(text_cfg.hidden_size)
        n_out = 1 if config.multiple_choice else len(config.labels or [])
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            linear = nn.Linear(self.hidden_size, n_out)
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        # float32 on the LM's device, so that a model built on a GPU-resident LM runs as is
        self.head = nn.Sequential(nn.Dropout(config.dropout), linear).to(lm.get_input_embeddings().weight.device)
        self.pad_id = _pad_id(tokenizer)
        sig = inspect.signature(lm.forward).parameters
        self._pass_token_types = (
            "token_type_ids" in sig and "token_type_ids" in getattr(tokenizer, "model_input_names", [])
        )
        self._type_vocab = int(getattr(lm.config, "type_vocab_size", 1) or 1)
        self._accepts_positions = "position_ids" in sig
        self._own_lm = False  # True when the LM was loaded from a checkpoint's lm/ folder
        self.lm_dropout = False
        self.pad_to_multiple_of = 1  # >1 gives fixed-shape buckets (fewer recompiles on GPU)
        self.set_lm_trainable(False)

    @classmethod
    def from_base(cls, model: str, *, inputs: list[str], labels: list[str] | None = None,
                  seed: int | None = None, **options: Any) -> "ClassifierModel":
        """Load a base model by hub name or folder and put a head on it.

        Args:
            model: e.g. ``"gpt2"``, ``"bert-base-cased"`` or a local folder.
            inputs: the text segments.
            labels: class labels (``None`` with ``candidates_field`` for multiple choice).
            seed: seed of the head's initial weights.
            **options: other :class:`ClassifierConfig` fields.
        """
        config = ClassifierConfig(inputs=inputs, labels=labels, **options)
        lm, tokenizer, kind = load_base(model, config.kind)
        return cls(lm, tokenizer, ClassifierConfig.from_dict({**config.to_dict(), "kind": kind}),
                   base_model=model, seed=seed)

    @property
    def labels(self) -> list[str] | None:
        return self.config.labels

    # ------------------------------------------------------------------ modes
    def prompt_parameters(self) -> list[nn.Parameter]:
        """The head's parameters (what the trainer tunes with ``lr``)."""
        return list(self.head.parameters())

    # ------------------------------------------------------------------ data
    def _render(self, example: dict[str, Any], source: str, candidate: str | None = None) -> list[str]:
        def value(m: re.Match) -> str:
            name = m.group(1)
            if name == CANDIDATE and candidate is not None:
                return candidate
            if name not in example:
                raise DataError(
                    source,
                    f"missing (the inputs need {', '.join(self._needed())}; "
                    f"the example has {', '.join(sorted(map(str, example))) or 'no fields'})",
                    field=name,
                )
            if example[name] is None:
                raise DataError(source, "is null; a text is needed", field=name)
            return str(example[name])

        return [_FIELD.sub(value, fmt) for fmt in self.config.inputs]

    def _needed(self) -> list[str]:
        names = [n for s in self.config.inputs for n in _fields_of(s) if n != CANDIDATE]
        return list(dict.fromkeys(names + ([self.config.candidates_field] if self.config.multiple_choice else [])))

    def _label_index(self, ex: dict[str, Any], src: str, require: bool) -> int:
        lf = self.config.label_field
        value = ex.get(lf)
        if value is None:
            if require:
                raise DataError(src, "missing; training and evaluation need a label", field=lf)
            return -100
        labels = self.config.labels or []
        found = find_label(value, {label: i for i, label in enumerate(labels)})
        if found is not None:
            return found
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise DataError(src, f"{value!r} is not a label ({shown})", field=lf)

    def _candidates(self, ex: dict[str, Any], src: str) -> list[str]:
        cf = self.config.candidates_field
        assert cf is not None
        if cf not in ex:
            raise DataError(src, f"missing (the inputs need {', '.join(self._needed())})", field=cf)
        cands = ex[cf]
        if isinstance(cands, (str, bytes)) or not isinstance(cands, (list, tuple)):
            raise DataError(src, f"must be a list of candidate strings, got {type(cands).__name__}", field=cf)
        if not cands:
            raise DataError(src, "is empty; multiple choice needs at least one candidate", field=cf)
        if any(c is None or isinstance(c, (dict, list)) for c in cands):
            raise DataError(src, "candidates must be strings", field=cf)
        return [str(c) for c in cands]

    def _choice_index(self, ex: dict[str, Any], src: str, n: int, require: bool) -> int:
        lf = self.config.label_field
        value = ex.get(lf)
        if value is None:
            if require:
                raise DataError(src, "missing; training and evaluation need a label", field=lf)
            return -100
        idx: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            idx = value
        elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
            idx = int(value)
        if idx is None:
            raise DataError(src, f"{value!r} is not a candidate index (an integer)", field=lf)
        if not 0 <= idx < n:
            raise DataError(src, f"candidate index {idx} is out of range for {n} candidates", field=lf)
        return idx

    def prepare(
        self,
        examples: Sequence[dict[str, Any]],
        sources: Sequence[str] | None = None,
        *,
        require_labels: bool = False,
    ) -> list[Item]:
        """Validate and tokenize examples (once, in one tokenizer call).

        Args:
            examples: dicts with the inputs' fields (and the label field).
            sources: where each example comes from (``file:line``), for error messages.
            require_labels: raise if an example has no label.

        Raises:
            DataError: naming the source and field of the first bad example.
        """
        sources = list(sources) if sources is not None else [f"example {i + 1}" for i in range(len(examples))]
        if len(sources) != len(examples):
            raise ValueError(f"{len(sources)} sources for {len(examples)} examples")
        segments: list[list[str]] = []  # one entry per row
        owner: list[int] = []
        labels: list[int] = []
        cands_of: list[tuple[str, ...]] = []
        for i, (ex, src) in enumerate(zip(examples, sources)):
            if not isinstance(ex, dict):
                raise DataError(src, f"expected an object with fields, got {type(ex).__name__}")
            if self.config.multiple_choice:
                cands = self._candidates(ex, src)
                labels.append(self._choice_index(ex, src, len(cands), require_labels))
                cands_of.append(tuple(cands))
                for c in cands:
                    segments.append(self._render(ex, src, c))
                    owner.append(i)
            else:
                segments.append(self._render(ex, src))
                owner.append(i)
                labels.append(self._label_index(ex, src, require_labels))
        if not examples:
            return []
        rows = self._tokenize(segments)
        for (ids, _), i in zip(rows, owner):
            if not ids:
                raise DataError(sources[i], "gives no tokens; the inputs need some text", field=self._needed()[0])
        if not self.config.multiple_choice:
            return [Item(self._fields(r), y, s) for r, y, s in zip(rows, labels, sources)]
        items: list[Item] = []
        k = 0
        for cands, y, s in zip(cands_of, labels, sources):
            mine = rows[k : k + len(cands)]
            k += len(cands)
            fields = {"input_ids": [ids for ids, _ in mine]}
            if self._pass_token_types:
                fields["token_type_ids"] = [types for _, types in mine]
            items.append(ChoiceItem(fields, y, s, candidates=cands))  # type: ignore[arg-type]
        return items

    def _fields(self, row: tuple[list[int], list[int] | None]) -> dict[str, list[int]]:
        ids, types = row
        out = {"input_ids": ids}
        if self._pass_token_types and types is not None:
            out["token_type_ids"] = types
        return out

    def _tokenize(self, segments: list[list[str]]) -> list[tuple[list[int], list[int] | None]]:
        first = [s[0] for s in segments]
        if len(self.config.inputs) == 2:
            enc = self.tokenizer(first, [s[1] for s in segments], truncation="longest_first",
                                 max_length=self.max_length)
        else:
            enc = self.tokenizer(first, truncation="only_first", max_length=self.max_length)
        ids = enc["input_ids"]
        types = enc.get("token_type_ids") if self._pass_token_types else None
        return [(list(ids[i]), list(types[i]) if types is not None else None) for i in range(len(ids))]

    def collate(self, items: Sequence[Item]) -> ClassifierBatch:
        """Assemble and right-pad a batch (one row per example, or per candidate)."""
        rows: list[list[int]] = []
        types: list[list[int]] = []
        row_example: list[int] = []
        row_candidate: list[int] = []
        c_max = 1
        for b, it in enumerate(items):
            if self.config.multiple_choice:
                ids_list = it.fields["input_ids"]
                type_list = it.fields.get("token_type_ids") or [[0] * len(x) for x in ids_list]  # type: ignore[union-attr,arg-type]
                c_max = max(c_max, len(ids_list))
                for c, (ids, tt) in enumerate(zip(ids_list, type_list)):
                    rows.append(ids)  # type: ignore[arg-type]
                    types.append(tt)  # type: ignore[arg-type]
                    row_example.append(b)
                    row_candidate.append(c)
            else:
                rows.append(it.fields["input_ids"])
                types.append(it.fields.get("token_type_ids") or [0] * len(it.fields["input_ids"]))
                row_example.append(b)
                row_candidate.append(0)
        t = max((len(r) for r in rows), default=1)
        t = -(-t // self.pad_to_multiple_of) * self.pad_to_multiple_of  # round up to a bucket
        ids_t = torch.full((len(rows), t), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        type_t = torch.zeros((len(rows), t), dtype=torch.long)
        for i, (r, tt) in enumerate(zip(rows, types)):
            ids_t[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
            type_t[i, : len(tt)] = torch.tensor(tt, dtype=torch.long)
        return ClassifierBatch(
            input_ids=ids_t,
            attention_mask=mask,
            token_type_ids=type_t if self._pass_token_types else None,
            row_example=torch.tensor(row_example, dtype=torch.long),
            row_candidate=torch.tensor(row_candidate, dtype=torch.long),
            n_candidates=c_max,
            labels=torch.tensor([it.label for it in items], dtype=torch.long),
        )

    def batches(self, items: Sequence[Item], batch_size: int):
        for i in range(0, len(items), batch_size):
            yield self.collate(items[i : i + batch_size])

    # ------------------------------------------------------------------ forward
    def pooled(self, batch: ClassifierBatch) -> torch.Tensor:
        """The pooled state of each row, (R, H): the LM head's input at the first token
        (masked LMs) or at the last real token (causal LMs)."""
        mask = batch.attention_mask
        kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "attention_mask": mask}
        if self.kind == "causal":
            if self._accepts_positions:
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs["use_cache"] = False
        if self._pass_token_types and batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids.clamp(max=self._type_vocab - 1)
        ctx = head_input(self.lm) if self._use_head else contextlib.nullcontext(False)
        h = None
        with ctx as ok:
            if ok:
                h = self.lm(**kwargs).logits
        if h is None:
            h = self.lm(**kwargs, output_hidden_states=True).hidden_states[-1]
        if h.shape[-1] != self.hidden_size:
            raise ConfigError("model", f"pooled states have size {h.shape[-1]}, the head expects {self.hidden_size}")
        if self.kind == "causal":
            pos = (mask.sum(1) - 1).clamp(min=0)
        else:
            pos = torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
        return h[torch.arange(h.shape[0], device=h.device), pos]

    def forward(self, batch: ClassifierBatch) -> Output:
        """Scores (B, n_labels) — or (B, C_max), ``-inf`` where an example has fewer
        candidates — and, when every label is known, the cross-entropy loss."""
        with self.lm_kernels():
            pooled = self.pooled(batch)
        weight = self.head[1].weight
        s = self.head(pooled.to(weight.dtype)).float()  # (R, n_out)
        if self.config.multiple_choice:
            b = len(batch)
            scores = torch.full((b, batch.n_candidates), float("-inf"), device=s.device, dtype=s.dtype)
            scores = scores.index_put((batch.row_example, batch.row_candidate), s[:, 0])
        else:
            scores = s
        loss = None
        if bool((batch.labels >= 0).all()):
            loss = F.cross_entropy(scores, batch.labels)
        return Output(scores, loss)

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, examples: Sequence[dict[str, Any]] | Sequence[Item], batch_size: int = 32) -> list[dict[str, Any]]:
        """Predict labels (or candidates).

        Returns:
            Classification: ``{"label": best label, "scores": {label: probability}}``.
            Multiple choice: ``{"label": best candidate, "index": its index,
            "scores": [probability of each candidate]}``.
        """
        items = examples if examples and isinstance(examples[0], Item) else self.prepare(examples)  # type: ignore[arg-type]
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        out: list[dict[str, Any]] = []
        try:
            for i in range(0, len(items), batch_size):
                chunk = items[i : i + batch_size]
                probs = self(self.collate(chunk).to(device)).scores.float().softmax(-1).cpu()  # type: ignore[arg-type]
                for it, row in zip(chunk, probs):
                    best = int(row.argmax())
                    if self.config.multiple_choice:
                        cands = getattr(it, "candidates", ())
                        n = len(it.fields["input_ids"])
                        out.append({"label": cands[best] if cands else str(best), "index": best,
                                    "scores": row[:n].tolist()})
                    else:
                        labels = self.config.labels or []
                        out.append({"label": labels[best], "scores": dict(zip(labels, row.tolist()))})
        finally:
            self.train(was)
        return out

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike, *, optimizer: torch.optim.Optimizer | None = None,
             trainer_state: dict[str, Any] | None = None) -> Path:
        """Save atomically to folder ``path`` (replaced if it exists).

        The folder holds ``classifier_config.json`` (config, base model and its
        fingerprint), ``head.safetensors`` and, when the LM was tuned, the LM and its
        tokenizer under ``lm/``. ``optimizer`` and ``trainer_state`` add the files that
        :func:`ptune.checkpoint.load_training_state` reads (to resume training).
        """
        tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        meta = {
            "classifier": {**self.config.to_dict(), "kind": self.kind},
            "base_model": self.base_model,
            "base": base_fingerprint(self.lm, self.tokenizer),
            "hidden_size": self.hidden_size,
        }
        tuned = bool(self.lm_trainable or self._own_lm)
        return write_checkpoint_dir(path, meta=meta, tensors=tensors, config_name=CONFIG_NAME, weights_name=HEAD_NAME,
                                    lm=self.lm if tuned else None, tokenizer=self.tokenizer, optimizer=optimizer,
                                    trainer_state=trainer_state)

    @classmethod
    def load(cls, path: str | os.PathLike, base: str | tuple[nn.Module, Any] | None = None, *,
             device: str | torch.device | None = None) -> "ClassifierModel":
        """Load a saved classifier.

        Args:
            path: the folder written by :meth:`save`.
            base: the base model as a hub name or folder, or a loaded ``(model, tokenizer)``;
                default: the base recorded at save time. Not allowed when the checkpoint holds
                its own tuned LM.
            device: where to put the model.

        Raises:
            CheckpointError: not a classifier checkpoint, or a base other than the one trained.
        """
        path = Path(path)
        meta = _read_meta(path)
        config = ClassifierConfig.from_dict(meta["classifier"])
        lm, tokenizer, base_name = load_checkpoint_base(path, meta, base, config.kind)
        model = cls(lm, tokenizer, config, base_model=base_name)
        model._own_lm = bool(meta.get("lm_included"))
        model._load_head(path)
        if device is not None:
            model.to(device)
        model.eval()
        return model

    def load_weights(self, path: str | os.PathLike) -> None:
        """Put the weights of checkpoint ``path`` (written by :meth:`save` of a classifier
        with the same config) into this model: the head and, if saved, the tuned LM.

        Raises:
            CheckpointError: another config, or a frozen-LM checkpoint of another base.
        """
        path = Path(path)
        meta = _read_meta(path)
        if ClassifierConfig.from_dict(meta["classifier"]) != ClassifierConfig.from_dict(
                {**self.config.to_dict(), "kind": self.kind}):
            raise CheckpointError(f"{path}: saved for another classifier config ({meta['classifier']})")
        if meta.get("lm_included") and (path / "lm").is_dir():
            from safetensors.torch import load_file

            state: dict[str, torch.Tensor] = {}
            for f in sorted((path / "lm").glob("*.safetensors")):
                state.update(load_file(str(f)))
            self.lm.load_state_dict(state, strict=False)  # tied weights are saved once
        else:
            _check_fingerprint(meta["base"], self.lm, self.tokenizer, path, self.base_model)
        self._load_head(path)

    def _load_head(self, path: Path) -> None:
        from safetensors.torch import load_file

        weights = path / HEAD_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: {HEAD_NAME} is missing")
        tensors = load_file(str(weights))
        state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        expected = self.head.state_dict()
        if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
            raise CheckpointError(
                f"{weights}: does not fit the head ({sorted((k, tuple(v.shape)) for k, v in state.items())} vs "
                f"{sorted((k, tuple(v.shape)) for k, v in expected.items())})"
            )
        self.head.load_state_dict(state)


def _read_meta(path: Path) -> dict[str, Any]:
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: not a ptune classifier checkpoint (no {CONFIG_NAME})")
    try:
        meta = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: damaged JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(meta, dict) or "classifier" not in meta or "base" not in meta:
        raise CheckpointError(f"{cfg_file}: not a ptune classifier config")
    return meta
