"""Exact shortcuts inside the LM, active only while ptune runs it.

* :class:`FusedActivations`: one kernel for the tanh-GELU that some models compute in Python.
* :class:`AnswerOnlyLastLayer`: a BERT-family masked LM's last layer runs its feed-forward
  block only at the answer positions, the only ones whose output is read.

GPT-2, GPT-J, GPT-Neo and others compute the tanh approximation of GELU in Python
(``NewGELUActivation``/``FastGELUActivation``: five element-wise kernels). PyTorch has it as
one kernel, ``F.gelu(x, approximate="tanh")``: the same formula, equal up to float
rounding (about 2e-7), and on CPU about 3x faster; in gpt2-small at 33 tokens the Python
version takes about a tenth of a forward pass. The user's model is left as it was outside
ptune's calls.

Example:
    >>> swap = FusedActivations(lm)                       # doctest: +SKIP
    >>> with swap:                                        # doctest: +SKIP
    ...     out = lm(input_ids=ids)
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

_TANH_GELU = functools.partial(F.gelu, approximate="tanh")


def _slow_tanh_gelus(lm: nn.Module) -> list[nn.Module]:
    try:
        from transformers.activations import FastGELUActivation, NewGELUActivation
    except ImportError:  # pragma: no cover - transformers always has them today
        return []
    return [m for m in lm.modules() if type(m) in (NewGELUActivation, FastGELUActivation)]


class FusedActivations:
    """A reusable context manager: while active, the LM's Python tanh-GELU modules run
    ``F.gelu(approximate="tanh")``. ``enabled=False`` (or a model without them) changes nothing."""

    def __init__(self, lm: nn.Module, enabled: bool = True) -> None:
        self.lm = lm
        self.modules = _slow_tanh_gelus(lm) if enabled else []
        self._depth = 0

    def __enter__(self) -> "FusedActivations":
        if self._depth == 0:
            for m in self.modules:
                m.forward = _TANH_GELU  # instance attribute shadows the class method
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            for m in self.modules:
                del m.forward


def _last_bert_like_layer(lm: nn.Module) -> nn.Module | None:
    """The last layer of the last stack of BERT-like layers (``attention.output``,
    ``intermediate`` and ``output`` submodules: BERT, RoBERTa, ELECTRA, DeBERTa, ...)."""
    last = None
    for module in lm.modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
            hasattr(layer, "intermediate") and hasattr(layer, "output")
            and hasattr(getattr(layer, "attention", None), "output")
            for layer in module
        ):
            last = module[-1]
    return last


class AnswerOnlyLastLayer:
    """Run a masked LM's last layer after self-attention only at the answer positions.

    In the last layer of a BERT-like encoder, every position's keys and values are
    needed, but after self-attention each position is computed on its own (output
    projection, residual, layer norm, feed-forward block), as is the MLM head: only the
    answer positions matter for the scores. A pre-hook on the layer's attention-output
    module keeps just those rows, so the LM returns ``(R, L, H)`` hidden states at the
    answer positions instead of ``(R, T, H)``. In bert-base at 35 tokens this skips
    about 6% of the forward and backward FLOPs (counted, not timed).

    Used only where a probe on this very model (:meth:`verified`) gives the full
    forward's numbers; ALBERT (one layer object shared by every depth) and models of
    other shapes fail the probe or are not found, and keep the full forward.
    """

    def __init__(self, lm: nn.Module) -> None:
        self.lm = lm
        self.layer = _last_bert_like_layer(lm)
        self._ok: bool | None = None if self.layer is not None else False

    @contextlib.contextmanager
    def __call__(self, positions: torch.Tensor) -> Iterator[list[bool]]:
        """While active, hidden states are kept only at ``positions`` (R, L); yields a
        list that holds True once the restriction was applied."""
        fired: list[bool] = []
        if self.layer is None:
            yield fired
            return

        def keep(module: nn.Module, args: tuple) -> tuple:
            r, t = args[0].shape[:2]
            if positions.shape[0] != r or fired:
                return args
            idx = positions.unsqueeze(-1)
            out = tuple(
                a.gather(1, idx.expand(-1, -1, a.shape[-1])) if torch.is_tensor(a) and a.shape[:2] == (r, t) else a
                for a in args
            )
            fired.append(True)
            return out

        handle = self.layer.attention.output.register_forward_pre_hook(keep)
        try:
            yield fired
        finally:
            handle.remove()

    @torch.no_grad()
    def verified(self, hidden_of: Callable[[torch.Tensor], torch.Tensor], width: int, device: torch.device,
                 dtype: torch.dtype) -> bool:
        """Whether the restriction reproduces the full forward on this model: ``hidden_of``
        maps input embeddings (1, T, H) to the head's input (1, T, H) (or (1, L, H) when
        restricted). Probed once, on random input embeddings."""
        if self._ok is None:
            gen = torch.Generator().manual_seed(0)
            emb = torch.randn(1, 7, width, generator=gen).to(device=device, dtype=dtype)
            pos = torch.tensor([[2, 5]], device=device)
            calls: list[bool] = []
            handle = self.layer.attention.output.register_forward_pre_hook(lambda m, a: calls.append(True))
            try:
                full = hidden_of(emb)[:, [2, 5]]
            finally:
                handle.remove()
            if len(calls) != 1:  # the layer object runs at several depths (ALBERT): not the last layer alone
                self._ok = False
                return False
            with self(pos) as fired:
                part = hidden_of(emb)
            tol = 1e-4 if full.dtype == torch.float32 else 3e-2
            self._ok = bool(fired) and part.shape == full.shape and torch.allclose(part, full, atol=tol, rtol=tol)
        return self._ok


def activation_checkpointing(lm: nn.Module) -> bool:
    """Whether the LM recomputes its layers in backward (``gradient_checkpointing_enable``).
    Backward then runs the layers again outside ptune's call, without its swaps: a
    restricted layer would not match its recomputation."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # transformers 5.x / 4.x
        if hasattr(type(lm), name):
            return bool(getattr(lm, name))
    return False
