"""The key/value cache of causal LMs, used where it gives the full forward's numbers.

Three ways ptune avoids running a causal LM over the same tokens twice (tests/test_prefix.py,
tests/test_candidates.py check each against the plain full forward):

* the rows' shared start (pseudo tokens, anchors, a BOS token before the input) runs on
  one row and its keys and values serve every row; at evaluation they are kept across
  batches until the prompt or the LM changes;
* with a frozen LM, the text before the first pseudo token runs without autograd;
* rows that repeat an example (one row per multi-token candidate) run the text before
  the answer once per example; greedy decoding prefills the prompt once.

:class:`KVCacheMixin` holds these methods for :class:`ptune.model.PTunedModel`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .batch import View
from .kernels import activation_checkpointing
from .template import Encoded

__all__ = ["KVCacheMixin"]


class KVCacheMixin:
    """The cached paths of :class:`ptune.model.PTunedModel` (a mixin: it uses the
    model's LM, head capture, embedding and padding)."""

    lm: nn.Module
    kind: str
    lm_trainable: bool
    prefix_cache: bool
    shared_prefix_min_tokens: int | None
    _accepts_positions: bool
    _cache_arg: str | None
    _capture_ok: bool

    def _cache_usable(self) -> bool:
        # transformers turns the cache off for an LM in train mode with activation checkpointing
        return (self.kind == "causal" and self.prefix_cache and self._accepts_positions
                and self._cache_arg is not None and not (self.lm.training and activation_checkpointing(self.lm)))

    def _shared_prefix(self, view: View, device: torch.device) -> int:
        """How many leading tokens to run once for the whole view (see :meth:`_answer_hidden_cached`).

        The rows' common start (pseudo tokens, anchors, a BOS token: whatever the template puts
        before the input) has the same keys and values in every row of a causal LM. Not with an
        LM in train mode (its dropout draws differently per row), and on accelerators only when
        the saved tokens outweigh the extra forward pass's kernel launches
        (``shared_prefix_min_tokens``).
        """
        k, r = view.common_prefix, view.input_ids.shape[0]
        if k < 1 or r < 2 or self.lm.training:
            return 0
        least = self.shared_prefix_min_tokens
        if least is None:
            least = 1 if device.type == "cpu" else 2048
        return k if (r - 1) * k >= least else 0

    def _shared_memo_key(self, view: View, prompt: torch.Tensor | None, k: int, dtype: torch.dtype) -> tuple | None:
        """At evaluation the shared prefix's keys and values only change with the prompt
        (the encoder's cached output: the same tensor until a parameter changes), the LM's
        weights and the tokens: a key for reusing them across batches; None while training."""
        if torch.is_grad_enabled():
            return None
        row = view.attention_mask[0].argmax()
        span = slice(int(row), int(row) + k)
        device = view.input_ids.device
        params = list(self.lm.parameters())
        autocast = torch.is_autocast_enabled(device.type)
        return (id(prompt), prompt._version if prompt is not None else None,
                tuple(view.input_ids[0, span].tolist()), tuple(view.pseudo_index[0, span].tolist()),
                id(self.lm), sum(p._version for p in params), sum(p.data_ptr() for p in params), device, dtype,
                autocast, torch.get_autocast_dtype(device.type) if autocast else None)

    def _frozen_prefix(self, pseudo_index: torch.Tensor, answer_positions: torch.Tensor, rows: torch.Tensor,
                       prompt: torch.Tensor | None, upstream_grad: bool) -> tuple[int, torch.Tensor | None]:
        """Leading columns to run once without autograd, and the rows to run them on.

        In a causal LM a position depends only on what precedes it. Two cases make a
        prefix worth running apart, as a key/value cache for the rest of the input:

        * training with a frozen LM: nothing before the first pseudo token needs a
          gradient, so backward covers only what follows it;
        * rows that repeat an example (one row per candidate answer): the text before
          the answer is the same in each, so it runs once per example (at evaluation,
          pseudo tokens included) and the cache is shared.

        ``upstream_grad``: what precedes these columns (the shared prefix) needs a gradient.
        Returns ``(0, None)`` when neither applies; else the prefix length and, when rows
        repeat examples, the index of each row's source row (or None).
        """
        grad = torch.is_grad_enabled()
        if grad and (self.lm_trainable or prompt is None or upstream_grad):
            return 0, None  # a tuned LM needs gradients everywhere; without a prompt nothing trains
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

    def _answer_hidden_cached(self, view: View, emb: torch.Tensor, prompt: torch.Tensor | None,
                              token_types: torch.Tensor | None) -> torch.Tensor | None:
        """A causal LM's answer hidden states computed in up to three passes that share a
        key/value cache, equal to the single full forward (tests/test_prefix.py):

        1. the shared prefix (:meth:`_shared_prefix`), once for the whole view, with autograd
           when it holds pseudo tokens: its gradient is the sum over the rows, as in the full
           forward;
        2. the frozen prefix (:meth:`_frozen_prefix`), without autograd, once per example;
        3. the rest of every row.

        Returns None when neither 1 nor 2 applies.
        """
        from transformers import DynamicCache

        k = self._shared_prefix(view, emb.device)
        mask, pseudo, answer = view.attention_mask, view.pseudo_index, view.answer_positions
        if k:  # drop each row's first k content columns (right padding: the first k; left: after the pads)
            r, t, hid = emb.shape
            first = mask.argmax(1)  # (R,) each row's first content column
            cols = torch.arange(t - k, device=emb.device).unsqueeze(0)
            src = cols + k * (cols >= first.unsqueeze(1)).long()  # (R, T - k)
            span = first[0] + torch.arange(k, device=emb.device)  # row 0's shared columns
            shared_emb = emb[0].index_select(0, span).unsqueeze(0)
            shared_pseudo = bool((pseudo[0].index_select(0, span) >= 0).any())
            emb = emb.gather(1, src.unsqueeze(-1).expand(-1, -1, hid))
            mask, pseudo = mask.gather(1, src), pseudo.gather(1, src)
            token_types = token_types.gather(1, src) if token_types is not None else None
            answer = answer - k
        else:
            shared_pseudo = False
        start, source = self._frozen_prefix(pseudo, answer, view.row_example, prompt,
                                            shared_pseudo and prompt is not None)
        if not k and not start:
            return None
        pos = k + (mask.cumsum(-1) - 1).clamp(min=0)
        past = lambda n: mask.new_ones(n, k)  # noqa: E731  the shared prefix, seen by every row
        cache = DynamicCache(config=self.lm.config)
        if k:
            memo_key = self._shared_memo_key(view, prompt, k, emb.dtype)
            memo = self.__dict__.get("_shared_memo")
            if memo_key is not None and memo is not None and memo[0] == memo_key:
                cache = copy.deepcopy(memo[1])
            else:
                with self._capture_head():
                    self.lm(inputs_embeds=shared_emb, attention_mask=past(1),
                            position_ids=torch.arange(k, device=emb.device).unsqueeze(0), use_cache=True,
                            **{self._cache_arg: cache})
                if memo_key is not None:  # evaluation: later batches reuse it
                    self.__dict__["_shared_memo"] = (memo_key, copy.deepcopy(cache), prompt)
        if start:
            uniq = torch.unique(source) if source is not None else torch.arange(emb.shape[0], device=emb.device)
            if k:
                cache.batch_repeat_interleave(uniq.numel())
            with torch.no_grad(), self._capture_head():
                self.lm(inputs_embeds=emb[uniq, :start], attention_mask=torch.cat([past(uniq.numel()), mask[uniq, :start]], 1),
                        position_ids=pos[uniq, :start], use_cache=True, **{self._cache_arg: cache})
            if source is not None:
                cache.batch_select_indices(torch.searchsorted(uniq, source))  # one cache row per row
        elif k:
            cache.batch_repeat_interleave(emb.shape[0])
        kwargs: dict[str, Any] = {"token_type_ids": token_types[:, start:]} if token_types is not None else {}
        with self._capture_head() as captured:
            out = self.lm(inputs_embeds=emb[:, start:], attention_mask=torch.cat([past(emb.shape[0]), mask], 1),
                          position_ids=pos[:, start:], use_cache=True, **{self._cache_arg: cache}, **kwargs)
        if not captured:
            self._capture_ok = False
        h = out.logits
        idx = (answer - start).unsqueeze(-1).expand(-1, -1, h.shape[-1])
        return h.gather(1, idx)

    def _decode_with_cache(self, encs: list[Encoded], k: int, prompt, banned, device) -> list[dict[str, Any]]:
        """Greedy decoding of a causal LM: one pass over the prompt (pseudo tokens included,
        left-padded so every row's answer starts in the same column), then one token per
        pass from the key/value cache."""
        from transformers import DynamicCache

        r = len(encs)
        view = self._pad(encs, torch.zeros((r, 1, k), dtype=torch.long), torch.zeros((r, 1), dtype=torch.long),
                         torch.arange(r), False, side="left").to(device)
        mask = view.attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        start = int(view.answer_positions[0, 0]) + 1  # the prompt, through the answer position
        weight, bias = self._head_params()
        cache = DynamicCache(config=self.lm.config)
        emb = self.embed(view.input_ids[:, :start], view.pseudo_index[:, :start], prompt)
        chosen = torch.zeros((r, k), dtype=torch.long, device=device)
        logprob = torch.zeros(r, device=device)
        for step in range(k):
            col = start + step - 1  # the column whose output predicts answer token `step`
            with self._capture_head():
                h = self.lm(inputs_embeds=emb, attention_mask=mask[:, : col + 1],
                            position_ids=pos[:, col + 1 - emb.shape[1] : col + 1], use_cache=True,
                            **{self._cache_arg: cache}).logits[:, -1]
            logp = self._logits(h, weight, bias).float().log_softmax(-1)
            logp[:, banned] = float("-inf")
            best, tok = logp.max(-1)
            chosen[:, step], logprob = tok, logprob + best
            emb = self.lm.get_input_embeddings()(tok).unsqueeze(1)
        return self._decoded(chosen, logprob)
