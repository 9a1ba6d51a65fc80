"""Evaluation on labelled examples: metrics of a model's argmax labels and its mean loss.

:func:`evaluate` reads scores through the one inference loop (:mod:`ptune.inference`);
under several processes each takes every ``world``-th example and the predictions are
gathered, so every process returns the metrics of all examples. The trainer evaluates
dev data with it unless a task brings its own ``eval_fn``.

Example:
    >>> items = model.prepare(dev_examples, require_labels=True)        # doctest: +SKIP
    >>> evaluate(model, items)["accuracy"]                               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .batch import Item
from .inference import iter_outputs
from .progress import Progress

__all__ = ["evaluate", "accuracy", "MetricFn", "EvalFn"]

MetricFn = Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
"""Metrics of (predicted, gold) label indices."""
EvalFn = Callable[[Any, Sequence[Item]], dict[str, float]]
"""A task's own evaluation: ``eval_fn(model, dev_items)`` -> metrics."""


def accuracy(pred: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """``{"accuracy": ..., "n": ...}`` of predicted vs gold label indices."""
    n = int(gold.numel())
    return {"accuracy": float((pred == gold).float().mean()) if n else 0.0, "n": n}


@torch.no_grad()
def evaluate(
    model: Any,
    items: Sequence[Item],
    *,
    batch_size: int = 32,
    metric_fn: MetricFn = accuracy,
    accelerator: Any = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on labelled ``items`` (sharded over processes if distributed);
    ``progress``: report progress per batch (:mod:`ptune.progress`)."""
    from accelerate.utils import gather_object

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    preds: list[int] = []
    golds: list[int] = []
    losses: list[tuple[float, int]] = []
    autocast = accelerator.autocast if accelerator else None
    mine = list(items[rank::world])
    bar = Progress(-(-len(mine) // batch_size), "eval", "batch", enabled=progress and rank == 0)
    for _, batch, out in iter_outputs(model, mine, batch_size, autocast=autocast):
        bar.update()
        preds += out.scores.argmax(-1).tolist()
        golds += batch.labels.tolist()
        if out.loss is not None:
            losses.append((float(out.loss), len(batch)))
    bar.close()
    if world > 1:
        preds, golds, losses = (sum(gather_object([x]), []) for x in (preds, golds, losses))
    metrics = metric_fn(torch.tensor(preds, dtype=torch.long), torch.tensor(golds, dtype=torch.long))
    if losses:
        metrics["loss"] = sum(l * n for l, n in losses) / sum(n for _, n in losses)
    return metrics
