"""Model selection on dev: which evaluation becomes the best checkpoint, and which
ones count against the early-stopping patience.

Two rules (``TrainConfig.ties``):

* ``loss`` (ptune's): a higher ``metric`` wins; an equal one wins when its dev loss is
  lower by more than float noise (0.01%); every evaluation that does not win counts
  against patience;
* ``later`` (the paper's few-shot SuperGLUE code): an evaluation at least as good as the
  best becomes the best, so ties go to the later checkpoint; only a strict improvement
  restarts patience, so a tie both wins and counts against it.

``TrainConfig.select_all`` (the paper's CB and MultiRC: accuracy and F1) asks every listed
metric at once: at least its best to win, and (rule ``later``) all strictly better to
restart patience; the best of each is remembered from the last winning evaluation.

Example:
    >>> state = {"best": 0.5, "best_all": {"accuracy": 0.5, "f1": 0.4}}
    >>> judge({"accuracy": 0.6, "f1": 0.4}, state, "later", "accuracy", ("accuracy", "f1"))
    Verdict(best=True, reset=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["Verdict", "judge", "remember"]


@dataclass(frozen=True)
class Verdict:
    """What one dev evaluation means for the run."""

    best: bool
    """It becomes the best so far (its weights are kept)."""
    reset: bool
    """Patience starts again (otherwise the evaluation counts against it)."""


def judge(metrics: Mapping[str, float], state: Mapping[str, Any], ties: str, metric: str,
          select_all: Sequence[str] = ()) -> Verdict:
    """The verdict on ``metrics`` given the best so far in ``state`` (``best``,
    ``best_loss``, ``best_all``; ``best`` is None before the first evaluation)."""
    if state.get("best") is None:
        return Verdict(True, True)
    names = tuple(select_all) or (metric,)
    best = state.get("best_all") or {metric: state["best"]}
    at_least = all(metrics[m] >= best[m] for m in names)
    strictly = all(metrics[m] > best[m] for m in names)
    if ties == "later":
        return Verdict(at_least, strictly)
    loss, best_loss = metrics.get("loss"), state.get("best_loss")
    lower_loss = (loss is not None and best_loss is not None
                  and loss < best_loss - 1e-4 * max(1.0, abs(best_loss)))
    wins = strictly or (at_least and lower_loss)
    return Verdict(wins, wins)


def remember(state: dict[str, Any], metrics: Mapping[str, float], metric: str, select_all: Sequence[str] = ()) -> None:
    """Store ``metrics`` as the best so far in ``state``."""
    state.update(best=metrics[metric], best_loss=metrics.get("loss"),
                 best_all={m: metrics[m] for m in (tuple(select_all) or (metric,))})
