"""The one inference loop: a model's outputs over prepared examples, batch by batch.

Evaluation, prediction, LAMA ranking and the SuperGLUE harness all read scores through
:func:`iter_outputs`; it works for any model with ``collate(items) -> batch`` and
``model(batch) -> Output`` (the P-tuned model and the fine-tuning baseline).

Example:
    >>> for start, batch, out in iter_outputs(model, items, batch_size=32):   # doctest: +SKIP
    ...     best = out.scores.argmax(-1)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

__all__ = ["iter_outputs", "iter_predictions", "model_device"]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def iter_outputs(
    model: Any,
    items: Sequence[Any],
    batch_size: int = 32,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> Iterator[tuple[int, Any, Any]]:
    """Run ``model`` in eval mode, without gradients, over ``items`` in order.

    Yields ``(start, batch, output)``: the index of the batch's first item, the collated
    batch (on the model's device) and the model's output. The model's train/eval mode is
    restored afterwards, also when the caller stops early.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    was = model.training
    model.eval()
    device = model_device(model)
    try:
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                batch = model.collate(items[start : start + batch_size]).to(device)
                with autocast() if autocast is not None else contextlib.nullcontext():
                    out = model(batch)
                yield start, batch, out
    finally:
        model.train(was)


def iter_predictions(model: Any, pairs: Iterable[tuple[dict[str, Any], str]], batch_size: int = 32, *,
                     chunk_size: int = 1024) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """``(example, source, prediction)`` for each ``(example, source)`` pair, read as they come
    (e.g. from :func:`ptune.data.iter_examples` over a file, a ``datasets`` dataset, an
    ``IterableDataset``): ``chunk_size`` examples are prepared and predicted at a time, so
    memory stays bounded however large the input."""
    chunk: list[tuple[dict[str, Any], str]] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == chunk_size:
            yield from _predict_chunk(model, chunk, batch_size)
            chunk = []
    if chunk:
        yield from _predict_chunk(model, chunk, batch_size)


def _predict_chunk(model: Any, chunk: list[tuple[dict[str, Any], str]],
                   batch_size: int) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    examples, sources = [ex for ex, _ in chunk], [src for _, src in chunk]
    predictions = model.predict(model.prepare(examples, sources), batch_size)
    yield from zip(examples, sources, predictions)
