"""The key/value cache of causal LMs, used where it gives the full forward's numbers.

Three ways ptune avoids running a causal LM over the same tokens twice (tests/test_prefix.py
and tests/test_candidates.py check each against the plain full forward):

* the rows' shared start (pseudo tokens, anchors, a BOS token before the input) runs on
  one row and its keys and values serve every row; at evaluation they are kept across
  batches until the prompt or the LM changes (:class:`SharedPrefixMemo`);
* with a frozen LM, the text before the first pseudo token runs without autograd;
* rows that repeat an example (one row per multi-token candidate) run the text before
  the answer once per example.

:func:`answer_hidden_cached` is the entry point; ``SpeedConfig.prefix_cache = False``
turns these paths off.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .batch import View
from .config import SpeedConfig
from .kernels import activation_checkpointing
from .lm import LMRunner

__all__ = ["usable", "answer_hidden_cached", "SharedPrefixMemo", "add_switch_hint"]


def usable(runner: LMRunner, speed: SpeedConfig) -> bool:
    """Whether the cached paths apply: a causal LM that takes position ids and a cache, and
    does not recompute its layers in backward (transformers turns the cache off then)."""
    lm = runner.lm
    return (not runner.kind.answer_in_input and speed.prefix_cache and runner.accepts_positions
            and runner.cache_arg is not None and not (lm.training and activation_checkpointing(lm)))


def add_switch_hint(error: BaseException, what: str, switch: str) -> None:
    """Add to an error raised inside a speed path which switch runs the plain path instead
    (the error itself propagates: a failing shortcut never degrades silently)."""
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(f"ptune: this happened in {what}; `{switch}` runs the model's plain forward instead")


class SharedPrefixMemo:
    """At evaluation, the shared start's keys and values from the last batch, reused while
    nothing they depend on changed (see :func:`_memo_key`)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.cache: Any = None

    def get(self, key: tuple | None) -> Any:
        return copy.deepcopy(self.cache) if key is not None and key == self.key else None

    def put(self, key: tuple | None, cache: Any) -> None:
        if key is not None:
            self.key, self.cache = key, copy.deepcopy(cache)


def _shared_len(view: View, device: torch.device, training: bool, speed: SpeedConfig) -> int:
    """How many leading tokens to run once for the whole view.

    The rows' common start has the same keys and values in every row of a causal LM. Not
    with an LM in train mode (its dropout draws differently per row), and on accelerators
    only when the saved tokens outweigh the extra pass's kernel launches.
    """
    k, r = view.common_prefix, view.input_ids.shape[0]
    if k < 1 or r < 2 or training:
        return 0
    least = speed.shared_prefix_min_tokens
    if least is None:
        least = 1 if device.type == "cpu" else 2048
    return k if (r - 1) * k >= least else 0


def _memo_key(runner: LMRunner, view: View, prompt: torch.Tensor | None, k: int, dtype: torch.dtype) -> tuple | None:
    """At evaluation the shared prefix's keys and values only change with the prompt (the
    encoder's cached output: the same tensor until a parameter changes), the LM's weights,
    the tokens, the device and the autocast setting; None while training."""
    if torch.is_grad_enabled():
        return None
    row = int(view.attention_mask[0].argmax())
    span = slice(row, row + k)
    device = view.input_ids.device
    params = list(runner.lm.parameters())
    autocast = torch.is_autocast_enabled(device.type)
    return (id(prompt), prompt._version if prompt is not None else None,
            tuple(view.input_ids[0, span].tolist()), tuple(view.pseudo_index[0, span].tolist()),
            id(runner.lm), sum(p._version for p in params), sum(p.data_ptr() for p in params), device, dtype,
            autocast, torch.get_autocast_dtype(device.type) if autocast else None)


def _frozen_prefix(pseudo_index: torch.Tensor, answer_positions: torch.Tensor, rows: torch.Tensor,
                   no_prefix_grad: bool) -> tuple[int, torch.Tensor | None]:
    """Leading columns to run once without autograd, and the rows to run them on.

    In a causal LM a position depends only on what precedes it. Two cases make a prefix
    worth running apart, as a key/value cache for the rest of the input:

    * training with a frozen LM: nothing before the first pseudo token needs a gradient,
      so backward covers only what follows it;
    * rows that repeat an example (one row per candidate answer): the text before the
      answer is the same in each, so it runs once per example and the cache is shared.

    ``no_prefix_grad``: while training, whether the columns before the first pseudo token
    may run without autograd (a frozen LM, a prompt, and no shared prefix needing a
    gradient before them). Returns ``(0, None)`` when neither case applies; else the
    prefix length and, when rows repeat examples, each row's source row (or None).
    """
    grad = torch.is_grad_enabled()
    if grad and not no_prefix_grad:
        return 0, None
    limit = answer_positions[:, 0]
    if grad:
        t = pseudo_index.shape[1]
        cols = torch.arange(t, device=pseudo_index.device)
        first = torch.where(pseudo_index >= 0, cols, t).min(1).values
        limit = torch.minimum(first, limit)
    start = int(limit.min())
    repeated = rows.numel() > 1 and bool((rows[1:] == rows[:-1]).any())
    source = None
    if repeated:  # the first row of each example serves all of its rows
        r = torch.arange(rows.numel(), device=rows.device)
        _, inverse = torch.unique(rows, return_inverse=True)
        first_row = torch.full((int(inverse.max()) + 1,), rows.numel(), device=rows.device, dtype=torch.long)
        first_row = first_row.scatter_reduce(0, inverse, r, reduce="amin")
        source = first_row[inverse]
    if start < 1 or (not repeated and (not grad or start < 8)):
        return 0, None
    return start, source


def _drop_shared(view: View, emb: torch.Tensor, token_types: torch.Tensor | None, k: int):
    """Each row without its first ``k`` content columns (right padding: the first k; left:
    the k after the pads), and row 0's shared columns."""
    mask, pseudo = view.attention_mask, view.pseudo_index
    r, t, hid = emb.shape
    first = mask.argmax(1)  # (R,) each row's first content column
    cols = torch.arange(t - k, device=emb.device).unsqueeze(0)
    src = cols + k * (cols >= first.unsqueeze(1)).long()  # (R, T - k)
    span = first[0] + torch.arange(k, device=emb.device)
    shared_emb = emb[0].index_select(0, span).unsqueeze(0)
    shared_pseudo = bool((pseudo[0].index_select(0, span) >= 0).any())
    rest = (emb.gather(1, src.unsqueeze(-1).expand(-1, -1, hid)), mask.gather(1, src), pseudo.gather(1, src),
            token_types.gather(1, src) if token_types is not None else None, view.answer_positions - k)
    return shared_emb, shared_pseudo, rest


def answer_hidden_cached(runner: LMRunner, view: View, emb: torch.Tensor, prompt: torch.Tensor | None,
                         token_types: torch.Tensor | None, *, lm_trainable: bool, speed: SpeedConfig,
                         memo: SharedPrefixMemo) -> torch.Tensor | None:
    """A causal LM's answer hidden states (R, L, H) in up to three passes that share a
    key/value cache, equal to the single full forward:

    1. the shared prefix (:func:`_shared_len`), once for the whole view, with autograd when
       it holds pseudo tokens: its gradient is the sum over the rows, as in the full forward;
    2. the frozen prefix (:func:`_frozen_prefix`), without autograd, once per example;
    3. the rest of every row.

    Returns None when neither 1 nor 2 applies (the caller runs the full forward).
    """
    from transformers import DynamicCache

    k = _shared_len(view, emb.device, runner.lm.training, speed)
    mask, pseudo, answer = view.attention_mask, view.pseudo_index, view.answer_positions
    shared_pseudo = False
    if k:
        shared_emb, shared_pseudo, (emb, mask, pseudo, token_types, answer) = _drop_shared(view, emb, token_types, k)
    no_prefix_grad = not lm_trainable and prompt is not None and not shared_pseudo
    start, source = _frozen_prefix(pseudo, answer, view.row_example, no_prefix_grad)
    if not k and not start:
        return None
    pos = k + (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=runner.lm.config)
    past = lambda n: mask.new_ones(n, k)  # noqa: E731  the shared prefix, seen by every row
    run = lambda **kw: runner.lm(use_cache=True, **{runner.cache_arg: cache}, **kw)  # noqa: E731
    if k:
        key = _memo_key(runner, view, prompt, k, emb.dtype)
        kept = memo.get(key)
        if kept is not None:
            cache = kept
        else:
            with runner.capture_head():
                run(inputs_embeds=shared_emb, attention_mask=past(1),
                    position_ids=torch.arange(k, device=emb.device).unsqueeze(0))
            memo.put(key, cache)  # evaluation: later batches reuse it
    if start:
        uniq = torch.unique(source) if source is not None else torch.arange(emb.shape[0], device=emb.device)
        if k:
            cache.batch_repeat_interleave(uniq.numel())
        with torch.no_grad(), runner.capture_head():
            run(inputs_embeds=emb[uniq, :start], attention_mask=torch.cat([past(uniq.numel()), mask[uniq, :start]], 1),
                position_ids=pos[uniq, :start])
        if source is not None:
            cache.batch_select_indices(torch.searchsorted(uniq, source))  # one cache row per row
    elif k:
        cache.batch_repeat_interleave(emb.shape[0])
    kwargs: dict[str, Any] = {"token_type_ids": token_types[:, start:]} if token_types is not None else {}
    with runner.capture_head():
        h = run(inputs_embeds=emb[:, start:], attention_mask=torch.cat([past(emb.shape[0]), mask], 1),
                position_ids=pos[:, start:], **kwargs).logits
    idx = (answer - start).unsqueeze(-1).expand(-1, -1, h.shape[-1])
    return h.gather(1, idx)
