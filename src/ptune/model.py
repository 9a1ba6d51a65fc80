"""The P-tuned model: any Hugging Face causal or masked LM plus a prompt encoder.

Data flow (paper §1): the template renders each example to token ids with placeholder
ids at the pseudo positions; the LM's input embeddings are looked up, the prompt
encoder's output is written into the pseudo positions in one vectorized ``where`` and the
result is fed as ``inputs_embeds``. The LM head runs only at the answer positions, and
only for the verbalizer's words when that is exact.

Nothing here looks at model names: the masked/causal decision comes from the Auto-class
mappings of transformers, the head from ``get_output_embeddings()``, the embeddings from
``get_input_embeddings()``.

Example:
    >>> model = PTunedModel.from_base(                      # doctest: +SKIP
    ...     "gpt2", template="{premise} ? [P*3] [MASK]",
    ...     verbalizer={"entailment": "yes", "not_entailment": "no"})
    >>> model.predict([{"premise": "A cat sleeps."}])        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .batch import Batch, Item, Output, View, pad_view
from .config import PromptConfig
from .encoder import EncoderConfig, PromptEncoder
from .errors import ConfigError, DataError
from .kernels import AnswerOnlyLastLayer, FusedActivations, activation_checkpointing
from .kvcache import KVCacheMixin
from .template import CompiledTemplate, Encoded, Pseudo, Template, check_fields
from .verbalizer import CompiledVerbalizer, Verbalizer, label_logsumexp

__all__ = ["PTunedModel", "LMWrapper", "Item", "Batch", "View", "Output", "detect_kind", "load_base", "head_input"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- base models
def detect_kind(lm: nn.Module) -> str:
    """``"masked"`` or ``"causal"``, from the model class via transformers' Auto mappings."""
    from transformers.models.auto import modeling_auto as ma

    def names(mapping: dict) -> set[str]:
        out: set[str] = set()
        for v in mapping.values():
            out.update((v,) if isinstance(v, str) else v)
        return out

    cls = type(lm).__name__
    if cls in names(ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        return "masked"
    if cls in names(ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        return "causal"
    raise ConfigError(
        "kind", f"cannot tell whether {cls} is a masked or a causal LM; pass kind='masked' or 'causal'"
    )


def _kind_of_config(config: Any) -> str:
    from transformers.models.auto import modeling_auto as ma

    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith("ForMaskedLM"):
            return "masked"
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal"
    if config.model_type in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    if config.model_type in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise ConfigError("model", f"{config.model_type!r} is neither a masked nor a causal LM")


def load_base(name_or_path: str, kind: str | None = None, **kwargs: Any) -> tuple[nn.Module, Any, str]:
    """Load a model and its tokenizer by hub name or local folder.

    Returns:
        (model, tokenizer, kind).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("model", f"cannot load {name_or_path!r}: {first}") from None
    kind = kind or _kind_of_config(config)
    auto = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    lm = auto.from_pretrained(name_or_path, **kwargs)
    return lm, tokenizer, kind


@contextlib.contextmanager
def head_input(lm: nn.Module) -> Iterator[bool]:
    """While active, ``lm(...).logits`` is the LM head's *input* (the last hidden states
    as the head sees them) instead of full-vocabulary logits. Yields False (and changes
    nothing) when the model has no output embeddings.

    Example:
        >>> with head_input(lm) as ok:                               # doctest: +SKIP
        ...     hidden = lm(input_ids=ids).logits                     # (B, T, H) if ok
    """
    head = lm.get_output_embeddings()
    if head is None:
        yield False
        return
    seen: list[bool] = []

    def passthrough(x: torch.Tensor) -> torch.Tensor:
        seen.append(True)
        return x

    head.forward = passthrough  # instance attribute shadows the class method
    try:
        yield True
    finally:
        del head.forward
    if not seen:
        raise ConfigError("model", f"{type(lm).__name__} does not call its output embeddings")


# ----------------------------------------------------------------------------- the model
class LMWrapper(nn.Module):
    """What every trainable wrapper of an LM shares: the LM frozen or tuned, and its
    dropout only when asked (a frozen LM runs without it); the LM, tokenizer, config, kind
    (masked or causal) and the base model name recorded in checkpoints."""

    lm: nn.Module
    lm_trainable: bool = False
    lm_dropout: bool = False
    lm_shortcuts: bool = True  # exact shortcuts inside the LM (ptune.kernels); False: the LM as it is

    def __init__(self, lm: nn.Module, tokenizer: Any, config: Any, base_model: str | None) -> None:
        super().__init__()
        self.config = config
        self.kind = config.kind or detect_kind(lm)
        self.lm = lm
        self.tokenizer = tokenizer
        self.base_model = base_model or getattr(lm.config, "_name_or_path", "") or "unknown"

    def lm_kernels(self) -> contextlib.AbstractContextManager:
        """While active, the LM runs ptune's faster kernels for the same functions
        (:class:`ptune.kernels.FusedActivations`); set ``lm_shortcuts = False`` to keep its own."""
        if not self._shortcuts_now():
            return contextlib.nullcontext()
        swap = self.__dict__.get("_fused")
        if swap is None or swap.lm is not self.lm:
            swap = self.__dict__["_fused"] = FusedActivations(self.lm)
        return swap

    def _shortcuts_now(self) -> bool:
        """``lm_shortcuts``, except while training an LM that recomputes its layers in backward
        (activation checkpointing): the recomputation runs outside ptune's swaps."""
        return self.lm_shortcuts and not (torch.is_grad_enabled() and self.lm.training
                                          and activation_checkpointing(self.lm))

    def set_lm_trainable(self, trainable: bool, dropout: bool | None = None) -> None:
        """Freeze (default) or unfreeze the LM; ``dropout`` keeps LM dropout while training."""
        self.lm_trainable = trainable
        self.lm_dropout = trainable if dropout is None else dropout
        for p in self.lm.parameters():
            p.requires_grad_(trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> "LMWrapper":
        super().train(mode)
        self.lm.train(mode and self.lm_dropout)
        return self


class PTunedModel(LMWrapper, KVCacheMixin):
    """A masked or causal LM with a P-tuning prompt.

    Args:
        lm: an ``AutoModelForMaskedLM`` / ``AutoModelForCausalLM`` model.
        tokenizer: its tokenizer.
        config: template, verbalizer, encoder and scoring options.
        base_model: the name or path the LM was loaded from (recorded in checkpoints).
        seed: seed of the prompt encoder's initial weights (default: the global RNG state).

    The LM starts frozen (``requires_grad=False``, dropout off); see :meth:`set_lm_trainable`.
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, config: PromptConfig, *, base_model: str | None = None,
                 seed: int | None = None):
        super().__init__(lm, tokenizer, config, base_model)
        self.template = Template.parse(config.template, x_field=config.x_field)
        self.compiled: CompiledTemplate = self.template.compile(
            tokenizer, self.kind, max_length=config.max_length or _max_positions(lm, tokenizer),
            truncation=config.truncation,
        )
        self.per_example = config.candidates_field is not None
        self.verbalizer: Verbalizer | None = None
        self.answers: CompiledVerbalizer | None = None
        if not self.per_example:
            self.verbalizer = Verbalizer(config.verbalizer)
            self.answers = self.verbalizer.compile(tokenizer, self.compiled.answer.space_before)
        self.hidden_size = lm.get_input_embeddings().embedding_dim
        n = self.compiled.n_pseudo
        self.encoder = None
        if n:
            table = lm.get_input_embeddings().weight
            # free embeddings start at the LM's own embedding scale; LSTM/MLP inputs at N(0, 1)
            std = float(table.detach().float().std()) if config.encoder.type == "none" else 1.0
            with torch.random.fork_rng(devices=[], enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                self.encoder = PromptEncoder(
                    config.encoder, n, self.hidden_size, init=self._init_from_words(), init_std=std
                )
        self.pad_id = _pad_id(tokenizer)
        sig = inspect.signature(lm.forward).parameters
        self._pass_token_types = (
            "token_type_ids" in sig and "token_type_ids" in getattr(tokenizer, "model_input_names", [])
        )
        self._type_vocab = int(getattr(lm.config, "type_vocab_size", 1) or 1)
        self._accepts_positions = "position_ids" in sig
        # the key/value cache argument: "cache" in recent transformers, "past_key_values" before
        self._cache_arg = next((n for n in ("cache", "past_key_values") if n in sig), None)
        self._position_offset: int | None = None
        self._capture_ok = getattr(lm.config, "final_logit_softcapping", None) is None
        self.pad_to_multiple_of = 1  # >1 gives fixed-shape buckets (fewer recompiles on GPU)
        self.prefix_cache = True  # causal LM: shared and frozen prefixes as a key/value cache (_answer_hidden_cached)
        self.shared_prefix_min_tokens: int | None = None  # None: any saving on CPU, 2048 saved tokens elsewhere
        self.set_lm_trainable(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(
        cls,
        model: str,
        template: str,
        verbalizer: dict[str, Any] | Verbalizer,
        *,
        encoder: str | EncoderConfig = "lstm",
        seed: int | None = None,
        **options: Any,
    ) -> "PTunedModel":
        """Load a base model by hub name or folder and wrap it.

        Args:
            model: e.g. ``"gpt2"``, ``"bert-base-cased"`` or a local folder.
            template: the template text.
            verbalizer: ``{label: word(s)}``.
            encoder: ``"lstm"``, ``"mlp"``, ``"none"`` or an :class:`EncoderConfig`.
            seed: seed of the prompt encoder's initial weights.
            **options: other :class:`~ptune.config.PromptConfig` fields.
        """
        enc = EncoderConfig(type=encoder) if isinstance(encoder, str) else encoder
        vmap = verbalizer.to_dict() if isinstance(verbalizer, Verbalizer) else dict(verbalizer)
        config = PromptConfig(template=template, verbalizer=vmap, encoder=enc, **options)
        lm, tokenizer, kind = load_base(model, config.kind)
        return cls(lm, tokenizer, PromptConfig(**{**config.to_dict(), "kind": kind}), base_model=model, seed=seed)

    def _init_from_words(self) -> torch.Tensor | None:
        inits = [(e.count, e.init) for e in self.compiled.elements if isinstance(e, Pseudo)]
        if not any(word for _, word in inits):
            return None
        table = self.lm.get_input_embeddings().weight.detach()
        rows = []
        for count, word in inits:
            if word is None:
                rows += [torch.full((self.hidden_size,), float("nan"))] * count
                continue
            ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"] or self.tokenizer(
                word, add_special_tokens=False
            )["input_ids"]
            rows += [table[ids].float().mean(0).cpu()] * count
        return torch.stack(rows)

    # ------------------------------------------------------------------ modes
    def prompt_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters()) if self.encoder is not None else []

    def pseudo_embeddings(self) -> torch.Tensor | None:
        """The (n_pseudo, H) pseudo-token embeddings, or ``None`` for a template without any."""
        return self.encoder() if self.encoder is not None else None

    # ------------------------------------------------------------------ data
    def prepare(
        self,
        examples: Sequence[dict[str, Any]],
        sources: Sequence[str] | None = None,
        *,
        require_labels: bool = False,
    ) -> list[Item]:
        """Validate and tokenize examples (once; batches are assembled from the result).

        Args:
            examples: dicts with the template's fields (and the label field).
            sources: where each example comes from (``file:line``), for error messages.
            require_labels: raise if an example has no label.

        Raises:
            DataError: naming the source and field of the first bad example.
        """
        sources = list(sources) if sources is not None else [f"example {i + 1}" for i in range(len(examples))]
        labels = []
        lf = self.config.label_field
        for ex, src in zip(examples, sources):
            if not isinstance(ex, dict):
                raise DataError(src, f"expected an object with fields, got {type(ex).__name__}")
            check_fields(self.template, ex, src)
            if lf in ex and ex[lf] is not None:
                labels.append(self._label_index(ex, src))
            elif require_labels:
                raise DataError(src, "missing; training and evaluation need a label", field=lf)
            else:
                labels.append(-100)
        field_ids = self.compiled.tokenize_fields(examples)
        items = [Item(f, y, s) for f, y, s in zip(field_ids, labels, sources)]
        if self.per_example:
            self._tokenize_candidates(examples, items)
        for it in items:  # fail now, not in the middle of training
            longest = max(self._answer_seqs(it), key=len)
            self.compiled.encode(it.fields, answer_len=len(longest), answer_ids=longest, source=it.source)
        return items

    def _label_index(self, ex: dict[str, Any], src: str) -> int:
        lf = self.config.label_field
        if self.verbalizer is not None:
            return self.verbalizer.label_index(ex[lf], src, lf)
        cands = ex.get(self.config.candidates_field)
        y = ex[lf]
        n = len(cands) if isinstance(cands, (list, tuple)) else 0
        if isinstance(y, bool) or not isinstance(y, int) or not (n == 0 or 0 <= y < n):
            raise DataError(src, f"{y!r} is not the index of one of the {n} candidates", field=lf)
        return y

    def _tokenize_candidates(self, examples: Sequence[dict[str, Any]], items: list[Item]) -> None:
        cf = self.config.candidates_field
        lead = " " if self.compiled.answer.space_before else ""
        texts: list[str] = []
        for ex, it in zip(examples, items):
            cands = ex.get(cf)
            if cands is None:
                raise DataError(it.source, "missing (a list of candidate answers)", field=cf)
            if not isinstance(cands, (list, tuple)) or not cands or not all(
                isinstance(c, str) and c.strip() for c in cands
            ):
                raise DataError(it.source, f"expected a non-empty list of non-empty strings, got {cands!r}", field=cf)
            it.candidate_texts = [c.strip() for c in cands]
            texts += it.candidate_texts
        encoded = self.tokenizer([lead + t for t in texts], add_special_tokens=False)["input_ids"] if texts else []
        k = 0
        for it in items:
            n = len(it.candidate_texts or [])
            it.candidates = [tuple(ids) for ids in encoded[k : k + n]]
            k += n
            for c, ids in enumerate(it.candidates):
                if not ids:
                    raise DataError(it.source, f"candidate {it.candidate_texts[c]!r} gives no tokens", field=f"{cf}[{c}]")  # type: ignore[index]

    def _answer_seqs(self, item: Item) -> list[tuple[int, ...]]:
        """The answer token sequences an item is scored on."""
        if item.candidates is not None:
            return item.candidates
        assert self.answers is not None
        return self.answers.candidates

    def collate(self, items: Sequence[Item]) -> Batch:
        """Assemble and pad a batch: one view per answer length (see :class:`View`)."""
        if self.per_example:
            return self._collate_per_example(items)
        assert self.answers is not None
        views = []
        b = len(items)
        for length, (cidx, cids) in self.answers.groups.items():
            k = len(cidx)
            if self.kind == "masked" or length == 1:
                encs = [self.compiled.encode(it.fields, answer_len=length, source=it.source) for it in items]
                targets = cids.unsqueeze(0).expand(b, k, length)
                cand_index = cidx.unsqueeze(0).expand(b, k)
                rows = torch.arange(b)
                shared = True
            else:  # causal, multi-token: one row per (example, candidate)
                encs = [
                    self.compiled.encode(it.fields, answer_len=length, answer_ids=ids, source=it.source)
                    for it in items
                    for ids in cids.tolist()
                ]
                targets = cids.repeat(b, 1).unsqueeze(1)  # (b*k, 1, L)
                cand_index = cidx.repeat(b).unsqueeze(1)
                rows = torch.arange(b).repeat_interleave(k)
                shared = False
            views.append(self._pad(encs, targets, cand_index, rows, shared))
        labels = torch.tensor([it.label for it in items], dtype=torch.long)
        return Batch(views, labels)

    def _collate_per_example(self, items: Sequence[Item]) -> Batch:
        """Views for per-example candidates: a row holds one example's candidates of one
        length (masked LMs, and single-token answers of causal LMs) or one candidate
        (multi-token answers of causal LMs, whose tokens are part of the input)."""
        groups: dict[int, list[tuple[int, list[tuple[int, tuple[int, ...]]]]]] = {}
        for b, it in enumerate(items):
            by_len: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
            for c, ids in enumerate(it.candidates or []):
                by_len.setdefault(len(ids), []).append((c, ids))
            for length, cs in by_len.items():
                if self.kind == "causal" and length > 1:
                    groups.setdefault(length, []).extend((b, [x]) for x in cs)
                else:
                    groups.setdefault(length, []).append((b, cs))
        views = []
        for length, rows in sorted(groups.items()):
            k = max(len(cs) for _, cs in rows)
            targets = torch.full((len(rows), k, length), self.pad_id, dtype=torch.long)
            cand_index = torch.full((len(rows), k), -1, dtype=torch.long)
            encs = []
            for r, (b, cs) in enumerate(rows):
                for j, (c, ids) in enumerate(cs):
                    targets[r, j] = torch.tensor(ids)
                    cand_index[r, j] = c
                encs.append(self.compiled.encode(items[b].fields, answer_len=length, answer_ids=cs[0][1],
                                                 source=items[b].source))
            views.append(self._pad(encs, targets, cand_index, torch.tensor([b for b, _ in rows]), False))
        labels = torch.tensor([it.label for it in items], dtype=torch.long)
        return Batch(views, labels)

    def _pad(self, encs: list[Encoded], targets, cand_index, rows, shared, side: str | None = None) -> View:
        return pad_view(encs, targets, cand_index, rows, shared, pad_id=self.pad_id,
                        multiple=self.pad_to_multiple_of, left=(side or self.config.padding_side) == "left")

    def batches(self, items: Sequence[Item], batch_size: int) -> Iterator[Batch]:
        for i in range(0, len(items), batch_size):
            yield self.collate(items[i : i + batch_size])

    # ------------------------------------------------------------------ forward
    def embed(self, input_ids: torch.Tensor, pseudo_index: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        """Word embeddings with the pseudo positions overwritten: (R, T, H)."""
        emb = self.lm.get_input_embeddings()(input_ids)
        if prompt is None:
            return emb
        rows = prompt.to(emb.dtype)[pseudo_index.clamp(min=0)]  # (R, T, H)
        return torch.where((pseudo_index >= 0).unsqueeze(-1), rows, emb)

    def forward(self, batch: Batch) -> Output:
        """Label scores (B, n_labels) and, when all labels are known, the loss."""
        with self.lm_kernels():
            return self._forward(batch)

    def _forward(self, batch: Batch) -> Output:
        prompt = self.pseudo_embeddings()
        if self.per_example:
            return self._forward_per_example(batch, prompt)
        assert self.answers is not None
        b = len(batch)
        n_cand = len(self.answers.candidates)
        cand = None
        for view in batch.views:
            s = self._score_view(view, prompt)  # (R, K)
            if cand is None and view.shared and s.shape == (b, n_cand):
                cand = s  # one view covers every candidate in order
                continue
            if cand is None:
                cand = torch.full((b, n_cand), float("-inf"), device=s.device, dtype=s.dtype)
            rows = view.row_example.unsqueeze(1).expand_as(view.cand_index)
            cand = cand.index_put((rows, view.cand_index), s)
        assert cand is not None
        if self.answers.one_per_label:
            scores = cand
        else:
            scores = label_logsumexp(cand, self.answers.cand_label, self.answers.n_labels)
        loss = None
        if bool((batch.labels >= 0).all()):
            loss = self.loss(scores, batch.labels)
        return Output(scores, loss)

    def _forward_per_example(self, batch: Batch, prompt: torch.Tensor | None) -> Output:
        """Scores (B, C) of each example's candidates; -inf where it has fewer than C."""
        c = max(int(v.cand_index.max()) for v in batch.views) + 1
        cand = None
        for view in batch.views:
            s = self._score_view(view, prompt)  # (R, K)
            if cand is None:
                cand = torch.full((len(batch), c + 1), float("-inf"), device=s.device, dtype=s.dtype)
            col = torch.where(view.cand_index >= 0, view.cand_index, c)  # padding -> a dropped column
            rows = view.row_example.unsqueeze(1).expand_as(col)
            cand = cand.index_put((rows, col), s)
        assert cand is not None
        scores = cand[:, :c]
        loss = self.loss(scores, batch.labels) if bool((batch.labels >= 0).all()) else None
        return Output(scores, loss)

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over labels (``normalize="labels"``) or LM NLL of the gold word."""
        if self.config.normalize == "labels":
            return F.cross_entropy(scores.float(), labels)
        return -scores.float().gather(1, labels.unsqueeze(1)).mean()

    def _fast(self, view: View) -> bool:
        """Restricted logits are exact when every word is one token and the loss is a softmax
        over labels: the log-partition is then a per-row constant that cancels."""
        return (
            view.shared and self.answers is not None and self.answers.single_token
            and self.config.normalize == "labels"
        )

    def _score_view(self, view: View, prompt: torch.Tensor | None) -> torch.Tensor:
        if (self.config.multi_token == "iterative" and self.kind == "masked" and view.targets.shape[-1] > 1
                and not torch.is_grad_enabled()):
            return self._score_iterative(view, prompt)
        h = self.answer_hidden(view, prompt)  # (R, L, Hh)
        weight, bias = self._head_params()
        if weight is not None and self._fast(view):
            ids = view.targets[0, :, 0]  # (K,)
            s = h[:, 0] @ weight[ids].T.to(h.dtype)  # (R, K)
            if bias is not None:
                s = s + bias[ids].to(s.dtype)
            return s.float()
        logp = self._logits(h, weight, bias).float().log_softmax(-1)  # (R, L, V)
        g = logp.gather(2, view.targets.transpose(1, 2))  # (R, L, K)
        s = g.sum(1)
        if self.config.length_norm == "mean":
            s = s / view.targets.shape[-1]
        return s

    def _score_iterative(self, view: View, prompt: torch.Tensor | None) -> torch.Tensor:
        """PET's multi-token scoring for masked LMs: one row per (row, candidate); each
        pass writes the candidate's token at the open mask where it is most probable and
        adds its log-probability."""
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
            logp = self.answer_logits(v, prompt).float().log_softmax(-1)  # (RK, L, V)
            lp = logp.gather(2, targets.unsqueeze(-1)).squeeze(-1)  # (RK, L)
            pos = lp.masked_fill(filled, float("-inf")).argmax(1)
            total += lp[rows, pos]
            filled[rows, pos] = True
            v.input_ids[rows, v.answer_positions[rows, pos]] = targets[rows, pos]
        s = total.view(r, k)
        return s / length if self.config.length_norm == "mean" else s

    def _logits(self, h: torch.Tensor, weight, bias) -> torch.Tensor:
        if weight is None:
            return h  # the LM already returned logits
        logits = h @ weight.T.to(h.dtype)
        return logits + bias.to(logits.dtype) if bias is not None else logits

    def _head_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        head = self.lm.get_output_embeddings()
        if not self._capture_ok or head is None:
            return None, None
        return head.weight, getattr(head, "bias", None)

    def answer_hidden(self, view: View, prompt: torch.Tensor | None) -> torch.Tensor:
        """The LM head's input at the answer positions, (R, L, Hh) (or logits if not capturable)."""
        emb = self.embed(view.input_ids, view.pseudo_index, prompt)
        kwargs: dict[str, Any] = {"attention_mask": view.attention_mask}
        pos = self._positions(view.attention_mask) if self._accepts_positions else None
        if self._pass_token_types:
            kwargs["token_type_ids"] = view.token_type_ids.clamp(max=self._type_vocab - 1)
        if self.kind == "causal":
            kwargs["use_cache"] = False
        if self._cache_usable():
            try:
                h = self._answer_hidden_cached(view, emb, prompt, kwargs.get("token_type_ids"))
                if h is not None:
                    return h
            except (TypeError, ValueError, RuntimeError, AttributeError, NotImplementedError) as e:
                # a model whose cache cannot be fed this way: the full forward gives the same numbers
                logger.warning("%s: no frozen-prefix cache (%s: %s); running the full input",
                               type(self.lm).__name__, type(e).__name__, e)
                self.prefix_cache = False
        if pos is not None:
            kwargs["position_ids"] = pos
        answer_only = self._answer_only()
        with self._capture_head() as captured, answer_only(view.answer_positions) as restricted:
            out = self.lm(inputs_embeds=emb, **kwargs)
        h = out.logits
        if not captured:
            self._capture_ok = False
        if restricted:
            return h  # already (R, L, .) at the answer positions
        idx = view.answer_positions.unsqueeze(-1).expand(-1, -1, h.shape[-1])
        return h.gather(1, idx)

    def _answer_only(self) -> Callable[[torch.Tensor], contextlib.AbstractContextManager[list[bool]]]:
        """The last-layer restriction of :class:`ptune.kernels.AnswerOnlyLastLayer` where it
        applies to this masked LM (probed once); else a no-op."""
        if self.kind == "masked" and self._shortcuts_now():
            shortcut = self.__dict__.get("_answer_only_layer")
            if shortcut is None or shortcut.lm is not self.lm:
                shortcut = self.__dict__["_answer_only_layer"] = AnswerOnlyLastLayer(self.lm)
            weight = self.lm.get_input_embeddings().weight
            if shortcut.verified(self._probe_hidden, weight.shape[1], weight.device, weight.dtype):
                return shortcut
        return lambda positions: contextlib.nullcontext([])

    def _probe_hidden(self, emb: torch.Tensor) -> torch.Tensor:
        """The head's input for input embeddings (1, T, H), dropout off, no autocast."""
        was = self.lm.training
        self.lm.eval()
        try:
            with torch.autocast(emb.device.type, enabled=False), self._capture_head():
                return self.lm(inputs_embeds=emb).logits
        finally:
            self.lm.train(was)

    def answer_logits(self, view: View, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Full-vocabulary logits at the answer positions, (R, L, V)."""
        if prompt is None:
            prompt = self.pseudo_embeddings()
        weight, bias = self._head_params()
        return self._logits(self.answer_hidden(view, prompt), weight, bias)

    def _capture_head(self) -> contextlib.AbstractContextManager[bool]:
        if not self._capture_ok:
            return contextlib.nullcontext(False)
        return head_input(self.lm)

    def _positions(self, mask: torch.Tensor) -> torch.Tensor | None:
        """Position ids that make left padding invisible; None where the default is right."""
        if self.kind == "causal":  # the convention of transformers' generate()
            return (mask.cumsum(-1) - 1).clamp(min=0)
        if self.config.padding_side == "right":
            return None  # masked LMs number positions from the first token by default
        if self._position_offset is None:
            self._position_offset = self._probe_position_offset()
        return (mask.cumsum(-1) - 1).clamp(min=0) + self._position_offset

    @torch.no_grad()
    def _probe_position_offset(self) -> int:
        """Find the first default position id of a masked LM (0 for BERT, pad+1 for RoBERTa)."""
        was = self.lm.training
        self.lm.eval()
        try:
            dev = self.lm.get_input_embeddings().weight.device
            ids = torch.full((1, 3), self.compiled.placeholder_id, device=dev)  # only positions differ
            emb = self.lm.get_input_embeddings()(ids)
            ref = self.lm(inputs_embeds=emb).logits
            pad = getattr(self.lm.config, "pad_token_id", None)
            for off in dict.fromkeys([0, 1, 2] + ([pad + 1] if isinstance(pad, int) else [])):
                pos = torch.arange(3, device=dev).unsqueeze(0) + off
                if torch.allclose(self.lm(inputs_embeds=emb, position_ids=pos).logits, ref, atol=1e-5):
                    return off
        finally:
            self.lm.train(was)
        raise ConfigError("padding_side", "cannot find this model's position numbering; use padding_side='right'")

    @torch.no_grad()
    def nearest_tokens(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """What the prompt learned: for each pseudo token, the ``k`` vocabulary tokens whose
        input embeddings are closest to it by cosine similarity (special tokens excluded).

        Example:
            >>> model.nearest_tokens(3)[0]                             # doctest: +SKIP
            [('Ġborn', 0.41), ('Ġbirthplace', 0.38), ('Ġin', 0.35)]
        """
        prompt = self.pseudo_embeddings()
        if prompt is None:
            return []
        table = self.lm.get_input_embeddings().weight.detach().float()
        sims = F.normalize(prompt.detach().float().to(table.device), dim=-1) @ F.normalize(table, dim=-1).T
        special = [i for i in self.tokenizer.all_special_ids if i < sims.shape[1]]
        sims[:, special] = float("-inf")
        values, ids = sims.topk(min(k, sims.shape[1] - len(special)), dim=-1)
        tokens = [self.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
        return [[(t, round(v, 4)) for t, v in zip(ts, vs)] for ts, vs in zip(tokens, values.tolist())]

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, examples: Sequence[dict[str, Any]] | Sequence[Item], batch_size: int = 32) -> list[dict[str, Any]]:
        """Predict labels.

        Returns:
            One dict per example: ``label`` (the best label) and ``scores`` (label ->
            probability, softmax over the labels' scores). With per-example candidates:
            ``label`` (the best candidate's text), ``index`` and ``scores`` (a list).
        """
        items = examples if examples and isinstance(examples[0], Item) else self.prepare(examples)  # type: ignore[arg-type]
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        try:
            for i, batch in enumerate(self.batches(items, batch_size)):  # type: ignore[arg-type]
                probs = self(batch.to(device)).scores.float().softmax(-1).cpu()
                for j, row in enumerate(probs):
                    best = int(row.argmax())
                    if self.answers is not None:
                        labels = self.answers.labels
                        out.append({"label": labels[best], "scores": dict(zip(labels, row.tolist()))})
                    else:
                        texts = items[i * batch_size + j].candidate_texts or []  # type: ignore[union-attr]
                        out.append({"label": texts[best], "index": best, "scores": row[: len(texts)].tolist()})
        finally:
            self.train(was)
        return out


    @torch.no_grad()
    def generate(self, items: Sequence[Item], lengths: Sequence[int], batch_size: int = 32) -> list[dict[str, Any]]:
        """Greedy answers of the given token lengths at the answer slot.

        Masked LMs fill the ``k`` masks iteratively, as PET does: each forward pass fills
        the one remaining mask whose best token is the most probable. Causal LMs continue
        the prompt greedily for ``k`` tokens. Special tokens are never chosen.

        Args:
            items: prepared examples (:meth:`prepare`).
            lengths: number of answer tokens ``k`` for each item.

        Returns:
            One dict per item: ``ids`` (the chosen tokens, in answer order), ``text`` (decoded)
            and ``logprob`` (the sum of the chosen tokens' log-probabilities when chosen).
        """
        if len(lengths) != len(items):
            raise ConfigError("lengths", f"{len(lengths)} lengths for {len(items)} items")
        was = self.training
        self.eval()
        device = next(self.parameters()).device
        banned = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long, device=device)
        prompt = self.pseudo_embeddings()
        results: list[dict[str, Any] | None] = [None] * len(items)
        try:
            order = sorted(range(len(items)), key=lambda i: lengths[i])
            for s in range(0, len(order), batch_size):
                chunk = order[s : s + batch_size]
                for k in sorted({int(lengths[i]) for i in chunk}):
                    idx = [i for i in chunk if lengths[i] == k]
                    with self.lm_kernels():
                        rows = self._generate_rows([items[i] for i in idx], k, prompt, banned, device)
                    for i, res in zip(idx, rows):
                        results[i] = res
        finally:
            self.train(was)
        return results  # type: ignore[return-value]

    def _generate_rows(self, items: Sequence[Item], k: int, prompt, banned, device) -> list[dict[str, Any]]:
        if k < 1:
            raise ConfigError("lengths", f"must be at least 1, got {k}")
        filler = [self.pad_id] * k
        encs = [self.compiled.encode(it.fields, answer_len=k, answer_ids=filler, source=it.source) for it in items]
        r = len(encs)
        if self.kind == "causal" and self.prefix_cache and self._cache_arg is not None and self._accepts_positions:
            try:
                return self._decode_with_cache(encs, k, prompt, banned, device)
            except (TypeError, ValueError, RuntimeError, AttributeError, NotImplementedError) as e:
                logger.warning("%s: no key/value cache for decoding (%s: %s); recomputing each step",
                               type(self.lm).__name__, type(e).__name__, e)
                self.prefix_cache = False
        view = self._pad(encs, torch.zeros((r, 1, k), dtype=torch.long), torch.zeros((r, 1), dtype=torch.long),
                         torch.arange(r), False).to(device)
        chosen = torch.zeros((r, k), dtype=torch.long, device=device)
        logprob = torch.zeros(r, device=device)
        filled = torch.zeros((r, k), dtype=torch.bool, device=device)
        rows = torch.arange(r, device=device)
        for step in range(k):
            logp = self.answer_logits(view, prompt).float().log_softmax(-1)  # (R, k, V)
            logp[..., banned] = float("-inf")
            best, tok = logp.max(-1)  # (R, k)
            if self.kind == "masked":  # the most confident open mask
                pos = best.masked_fill(filled, float("-inf")).argmax(1)
                where = view.answer_positions[rows, pos]
            else:  # the next token; it enters the input one position later
                pos = torch.full((r,), step, dtype=torch.long, device=device)
                where = view.answer_positions[rows, pos] + 1
            t = tok[rows, pos]
            chosen[rows, pos] = t
            filled[rows, pos] = True
            logprob += best[rows, pos]
            if self.kind == "masked" or step < k - 1:
                view.input_ids[rows, where] = t
        return self._decoded(chosen, logprob)

    def _decoded(self, chosen: torch.Tensor, logprob: torch.Tensor) -> list[dict[str, Any]]:
        out = []
        for i in range(chosen.shape[0]):
            ids = chosen[i].tolist()
            out.append({"ids": ids, "text": self.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                        "logprob": float(logprob[i])})
        return out


def _pad_id(tokenizer: Any) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _max_positions(lm: nn.Module, tokenizer: Any) -> int:
    limits = [getattr(lm.config, name, None) for name in ("max_position_embeddings", "n_positions")]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and tok_limit < 1_000_000:
        limits.append(tok_limit)
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else 512
