"""The language model under the prompt: what kind it is and how ptune runs it.

This module is the one place where masked and causal LMs differ:

* :func:`detect_kind` — the one rule that tells them apart (transformers' Auto mappings);
* :class:`LMKind` (:data:`MASKED`, :data:`CAUSAL`) — everything that follows from the kind:
  where the answer is read (at mask tokens in the input, or as the continuation), whether
  text after the answer slot is visible, how multi-token answers enter the input, how a
  decoding step writes a token, and which speed paths apply;
* :class:`LMRunner` — the facts of one loaded model that ptune needs to run it: which
  arguments its ``forward`` takes, its position numbering, its output head (read only at
  the answer positions), its pad id and length limit.

Other modules ask these objects; none of them compares kind names.

Example:
    >>> lm, tokenizer, kind = load_base("gpt2")                      # doctest: +SKIP
    >>> kind, KINDS[kind].answer_in_input                            # doctest: +SKIP
    ('causal', False)
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import ConfigError
from .kernels import AnswerOnlyLastLayer, FusedActivations, activation_checkpointing

__all__ = ["LMKind", "MASKED", "CAUSAL", "KINDS", "kind_of", "detect_kind", "load_base", "head_input",
           "pad_token_id", "max_positions", "LMRunner", "LMWrapper", "remote_code", "hub_kwargs",
           "model_reference"]


# ----------------------------------------------------------------------------- kinds
class LMKind:
    """What follows from an LM being masked or causal. Two instances exist: :data:`MASKED`
    and :data:`CAUSAL` (look one up with :func:`kind_of`)."""

    name: str
    answer_in_input: bool
    """Masked LMs: the answer slot is mask tokens in the input, and the text after it
    (and the tokenizer's closing special tokens) stays visible. Causal LMs read the
    answer as the continuation: nothing after the slot can be seen."""
    auto_class: str
    """The transformers Auto class that loads such an LM."""

    def __init__(self, name: str, answer_in_input: bool, auto_class: str) -> None:
        self.name, self.answer_in_input, self.auto_class = name, answer_in_input, auto_class

    def __repr__(self) -> str:
        return f"LMKind({self.name!r})"

    def answer_tokens(self, answer_len: int, answer_ids: Any, mask_id: int | None) -> list[int]:
        """The tokens the answer slot puts into the input: ``answer_len`` masks (masked),
        or the answer's tokens but the last, so each is predicted from the ones before
        (causal)."""
        if self.answer_in_input:
            return [mask_id] * answer_len  # type: ignore[list-item]
        if answer_len > 1 and (answer_ids is None or len(answer_ids) != answer_len):
            raise ConfigError("answer_ids", "a causal LM needs the answer tokens to score them")
        return list(answer_ids[:-1]) if answer_len > 1 else []

    def answer_positions(self, slot: int, answer_len: int) -> list[int]:
        """The positions whose output gives answer token 1, 2, ...: the masks at ``slot``
        onwards, or, for a causal LM, the token before each answer token."""
        start = slot if self.answer_in_input else slot - 1
        return list(range(start, start + answer_len))

    def candidate_in_input(self, length: int) -> bool:
        """Whether an answer of ``length`` tokens is part of the input, so that each
        candidate answer needs its own row (causal LMs, more than one token)."""
        return not self.answer_in_input and length > 1

    def fill_step(self, best: torch.Tensor, filled: torch.Tensor, step: int,
                  answer_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One greedy decoding step over R rows: which answer token to fix, (R,), and the
        input column that receives it, (R,). Masked LMs fill the most confident open mask
        (PET); causal LMs write token ``step``, which enters the input one column later."""
        rows = torch.arange(best.shape[0], device=best.device)
        if self.answer_in_input:
            pos = best.masked_fill(filled, float("-inf")).argmax(1)
            return pos, answer_positions[rows, pos]
        pos = torch.full_like(rows, step)
        return pos, answer_positions[rows, pos] + 1


MASKED = LMKind("masked", True, "AutoModelForMaskedLM")
CAUSAL = LMKind("causal", False, "AutoModelForCausalLM")
KINDS = {"masked": MASKED, "causal": CAUSAL}


def kind_of(name: str | LMKind) -> LMKind:
    """The :class:`LMKind` named ``"masked"`` or ``"causal"``."""
    if isinstance(name, LMKind):
        return name
    if name not in KINDS:
        raise ConfigError("kind", f"{name!r} is not a model kind; accepted: masked, causal")
    return KINDS[name]


def _mapped(mapping: dict) -> set[str]:
    out: set[str] = set()
    for v in mapping.values():
        out.update((v,) if isinstance(v, str) else v)
    return out


def detect_kind(model_or_config: Any) -> str:
    """``"masked"`` or ``"causal"`` for a loaded model or its config.

    The rule: the model's class (for a config, its recorded ``architectures``) if
    transformers lists it as a masked-LM or causal-LM class; else the model type's entry
    in those mappings (masked first: BERT-like types also have a causal head class).

    Raises:
        ConfigError: neither applies; pass ``kind="masked"`` or ``"causal"``.
    """
    from transformers import PretrainedConfig
    from transformers.models.auto import modeling_auto as ma

    if isinstance(model_or_config, PretrainedConfig):
        config, classes = model_or_config, list(getattr(model_or_config, "architectures", None) or [])
    else:
        config, classes = model_or_config.config, [type(model_or_config).__name__]
    masked, causal = ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES, ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    for cls in classes:
        if cls in _mapped(masked):
            return "masked"
        if cls in _mapped(causal):
            return "causal"
    model_type = getattr(config, "model_type", None)
    if model_type in masked:
        return "masked"
    if model_type in causal:
        return "causal"
    shown = ", ".join(classes) or str(model_type)
    raise ConfigError("kind", f"cannot tell whether {shown} is a masked or a causal LM; pass kind='masked' or 'causal'")


_REMOTE_CODE = [False]


@contextlib.contextmanager
def remote_code(allowed: bool) -> Iterator[None]:
    """While active, model folders may run their own modelling code (transformers'
    ``trust_remote_code``). Off by default: such a model is refused, never run, and
    nothing asks on standard input."""
    before = _REMOTE_CODE[0]
    _REMOTE_CODE[0] = bool(allowed)
    try:
        yield
    finally:
        _REMOTE_CODE[0] = before


def hub_kwargs() -> dict[str, Any]:
    """Keyword arguments of every ``from_pretrained`` call: remote code only when allowed
    (:func:`remote_code`)."""
    return {"trust_remote_code": _REMOTE_CODE[0]}


def load_base(name_or_path: str, kind: str | None = None, **kwargs: Any) -> tuple[nn.Module, Any, str]:
    """Load an LM and its tokenizer by hub name or local folder (never running the
    folder's own code unless :func:`remote_code` allows it).

    Returns:
        ``(model, tokenizer, kind)``.

    Raises:
        ConfigError: the model or tokenizer cannot be loaded (first line of the reason).
    """
    import transformers
    from safetensors import SafetensorError

    kwargs = {**hub_kwargs(), **kwargs}
    remote = {"trust_remote_code": kwargs["trust_remote_code"]}
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_path, **remote)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, **remote)
        kind = kind_of(kind or detect_kind(config)).name
        lm = getattr(transformers, KINDS[kind].auto_class).from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:  # a damaged folder
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "custom code" in str(e) and not kwargs["trust_remote_code"]:
            first = "it needs its own modelling code, which ptune runs only with --trust-remote-code"
        raise ConfigError("model", f"cannot load {name_or_path!r}: {first}") from None
    return lm, tokenizer, kind


def model_reference(name_or_path: str) -> str:
    """What a checkpoint records as its base model: a local folder as an absolute path (the
    checkpoint then loads from any working folder), a hub name as given."""
    return str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else name_or_path


# ----------------------------------------------------------------------------- running an LM
@contextlib.contextmanager
def head_input(lm: nn.Module) -> Iterator[bool]:
    """While active, ``lm(...).logits`` is the LM head's *input* (the last hidden states
    as the head sees them) instead of full-vocabulary logits, so that ptune computes logits
    only where and for the words it needs. Yields False (and changes nothing) when the
    model has no output embeddings.

    Raises:
        ConfigError: the model's forward never called its output embeddings.

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


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads batches: the tokenizer's pad token, else its end or unknown token, else 0."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if tid is not None:
            return int(tid)
    return 0


def max_positions(lm: nn.Module, tokenizer: Any) -> int:
    """The longest input the model and tokenizer take (512 when neither says)."""
    limits = [getattr(lm.config, name, None) for name in ("max_position_embeddings", "n_positions")]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and tok_limit < 1_000_000:
        limits.append(tok_limit)
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else 512


class LMRunner:
    """How ptune runs one loaded LM: the facts read once from the model, and the
    forward-pass helpers every path shares.

    Args:
        lm: a masked or causal LM.
        tokenizer: its tokenizer.
        kind: ``"masked"`` or ``"causal"`` (default: :func:`detect_kind`).
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, kind: str | None = None) -> None:
        self.lm = lm
        self.kind = kind_of(kind or detect_kind(lm))
        sig = inspect.signature(lm.forward).parameters
        self.pass_token_types = "token_type_ids" in sig and "token_type_ids" in getattr(
            tokenizer, "model_input_names", [])
        self.type_vocab = int(getattr(lm.config, "type_vocab_size", 1) or 1)
        self.accepts_positions = "position_ids" in sig
        # the key/value cache argument: "cache" in recent transformers, "past_key_values" before
        self.cache_arg = next((n for n in ("cache", "past_key_values") if n in sig), None)
        head = lm.get_output_embeddings()
        # softcapped logits are a nonlinear function of the head's output: keep the LM's logits
        self.capture = head is not None and getattr(lm.config, "final_logit_softcapping", None) is None
        self.pad_id = pad_token_id(tokenizer)
        self.max_positions = max_positions(lm, tokenizer)
        self._position_offset: int | None = None
        self._fused = FusedActivations(lm)
        self._answer_only = AnswerOnlyLastLayer(lm) if self.kind.answer_in_input else None

    # ------------------------------------------------------------------ the head
    def capture_head(self) -> contextlib.AbstractContextManager[bool]:
        """While active, the LM returns its head's input (see :func:`head_input`)."""
        return head_input(self.lm) if self.capture else contextlib.nullcontext(False)

    def head_params(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The head's weight and bias; ``(None, None)`` when the LM returns its own logits."""
        head = self.lm.get_output_embeddings()
        if not self.capture:
            return None, None
        return head.weight, getattr(head, "bias", None)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits from what the LM returned under :meth:`capture_head`."""
        weight, bias = self.head_params()
        if weight is None:
            return h  # the LM already returned logits
        logits = h @ weight.T.to(h.dtype)
        return logits + bias.to(logits.dtype) if bias is not None else logits

    # ------------------------------------------------------------------ inputs
    def embed(self, input_ids: torch.Tensor, pseudo_index: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        """Word embeddings (R, T, H) with row ``prompt[j]`` wherever ``pseudo_index`` is j >= 0."""
        emb = self.lm.get_input_embeddings()(input_ids)
        if prompt is None:
            return emb
        # (R, T, H); an embedding lookup, whose CPU backward sums each row's gradients in a
        # fixed order (advanced indexing's accumulates them in thread order)
        rows = torch.nn.functional.embedding(pseudo_index.clamp(min=0), prompt.to(emb.dtype))
        return torch.where((pseudo_index >= 0).unsqueeze(-1), rows, emb)

    def forward_kwargs(self, mask: torch.Tensor, token_types: torch.Tensor | None,
                       padding_side: str) -> dict[str, Any]:
        """Keyword arguments of a full forward pass besides the input embeddings."""
        kwargs: dict[str, Any] = {"attention_mask": mask}
        if self.pass_token_types and token_types is not None:
            kwargs["token_type_ids"] = self.token_types(token_types)
        if not self.kind.answer_in_input:
            kwargs["use_cache"] = False
        pos = self.positions(mask, padding_side) if self.accepts_positions else None
        if pos is not None:
            kwargs["position_ids"] = pos
        return kwargs

    def token_types(self, token_types: torch.Tensor) -> torch.Tensor:
        """Segment ids clamped to the model's segment vocabulary."""
        return token_types.clamp(max=self.type_vocab - 1)

    def positions(self, mask: torch.Tensor, padding_side: str) -> torch.Tensor | None:
        """Position ids that make left padding invisible; None where the default is right."""
        if not self.kind.answer_in_input:  # the convention of transformers' generate()
            return (mask.cumsum(-1) - 1).clamp(min=0)
        if padding_side == "right":
            return None  # masked LMs number positions from the first token by default
        if self._position_offset is None:
            self._position_offset = self._probe_position_offset(mask.device)
        return (mask.cumsum(-1) - 1).clamp(min=0) + self._position_offset

    @torch.no_grad()
    def _probe_position_offset(self, device: torch.device) -> int:
        """The first default position id of a masked LM (0 for BERT, pad+1 for RoBERTa)."""
        with self.eval_mode():
            emb = self.lm.get_input_embeddings()(torch.full((1, 3), self.pad_id, device=device))
            ref = self.lm(inputs_embeds=emb).logits
            pad = getattr(self.lm.config, "pad_token_id", None)
            for off in dict.fromkeys([0, 1, 2] + ([pad + 1] if isinstance(pad, int) else [])):
                pos = torch.arange(3, device=device).unsqueeze(0) + off
                if torch.allclose(self.lm(inputs_embeds=emb, position_ids=pos).logits, ref, atol=1e-5):
                    return off
        raise ConfigError("padding_side", "cannot find this model's position numbering; use padding_side='right'")

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """The LM in eval mode (no dropout) for the duration."""
        was = self.lm.training
        self.lm.eval()
        try:
            yield
        finally:
            self.lm.train(was)

    # ------------------------------------------------------------------ shortcuts
    def checkpointing(self) -> bool:
        """Whether backward will recompute the LM's layers outside ptune's call
        (activation checkpointing while training): swaps inside the LM must step aside."""
        return torch.is_grad_enabled() and self.lm.training and activation_checkpointing(self.lm)

    def kernels(self, enabled: bool) -> contextlib.AbstractContextManager:
        """While active, the LM runs ptune's fused kernels (:class:`ptune.kernels.FusedActivations`)."""
        return self._fused if enabled and not self.checkpointing() else contextlib.nullcontext()

    def answer_only(self, enabled: bool, positions: torch.Tensor) -> contextlib.AbstractContextManager[list[bool]]:
        """The last-layer restriction of :class:`ptune.kernels.AnswerOnlyLastLayer`, where it
        applies to this masked LM (verified once against the full forward); else a no-op
        yielding an empty list."""
        shortcut = self._answer_only
        if shortcut is None or not enabled or self.checkpointing():
            return contextlib.nullcontext([])
        weight = self.lm.get_input_embeddings().weight
        if not shortcut.verified(self._probe_hidden, weight.shape[1], weight.device, weight.dtype):
            return contextlib.nullcontext([])
        return shortcut(positions)

    def _probe_hidden(self, emb: torch.Tensor) -> torch.Tensor:
        """The head's input for input embeddings (1, T, H), dropout off, no autocast."""
        with self.eval_mode(), torch.autocast(emb.device.type, enabled=False), self.capture_head():
            return self.lm(inputs_embeds=emb).logits


# ----------------------------------------------------------------------------- trainable wrappers
class LMWrapper(nn.Module):
    """What every trainable wrapper of an LM shares: the LM frozen or tuned, its dropout
    only when asked (a frozen LM runs without it), the tokenizer, the config, the kind and
    the base model name recorded in checkpoints."""

    lm: nn.Module
    lm_trainable: bool = False
    lm_dropout: bool = False

    def __init__(self, lm: nn.Module, tokenizer: Any, config: Any, base_model: str | None) -> None:
        super().__init__()
        self.config = config
        self.kind = kind_of(getattr(config, "kind", None) or detect_kind(lm)).name
        self.lm = lm
        self.tokenizer = tokenizer
        self.base_model = base_model or getattr(lm.config, "_name_or_path", "") or "unknown"

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
