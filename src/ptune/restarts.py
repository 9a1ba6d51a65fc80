"""Restarts selected on dev: train a prompt again when its run stalled.

Prompt training with the LM frozen can settle, from its first epochs, on an answer that
ignores the input: on LAMA, the relation's most frequent object for every subject. Such a
run stays there whatever its length, and the stall shows on dev: the best dev score stays
low. :func:`train_restarts` trains a first attempt; while every attempt so far scored below
``restart_below`` on dev and fewer than ``restarts`` further attempts ran, it trains another
one (the caller builds each attempt: a new seed, and whatever else it varies). The attempt
with the best dev score is kept, the earliest on ties: the choice is made on dev alone and
is deterministic. A run that does not stall costs nothing more.

Example:
    >>> def make(attempt, config):                                      # doctest: +SKIP
    ...     model = PTunedModel(lm, tok, prompt_config, seed=config.seed)
    ...     return model, train_examples, dev_examples, {}
    >>> kept = train_restarts(make, TrainConfig(epochs=30), RestartConfig())  # doctest: +SKIP
    >>> kept.model, kept.result.best_metrics, kept.attempts                 # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .config import TrainConfig
from .errors import ConfigError
from .trainer import TrainResult, train

__all__ = ["RestartConfig", "Kept", "train_restarts", "stalled"]

Make = Callable[[int, TrainConfig], tuple[Any, Sequence[Any], Sequence[Any] | None, Mapping[str, Any]]]


@dataclass(frozen=True, kw_only=True)
class RestartConfig:
    """When a stalled prompt is trained again."""

    restarts: int = 2
    """At most this many further attempts (seeds ``seed + 1``, ``seed + 2``...) after a
    stalled one; 0: never restart."""
    restart_below: float = 0.5
    """An attempt whose best dev score (``TrainConfig.metric``) is below this stalled."""

    def __post_init__(self) -> None:
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 0:
            raise ConfigError("restarts", f"must be 0 or more, got {self.restarts!r}")
        if not isinstance(self.restart_below, (int, float)) or not math.isfinite(self.restart_below):
            raise ConfigError("restart_below", f"must be a number, got {self.restart_below!r}")

    @classmethod
    def of(cls, value: "RestartConfig | Mapping[str, Any]") -> "RestartConfig":
        return value if isinstance(value, cls) else cls(**dict(value))


@dataclass
class Kept:
    """The attempt kept: its model (with its best dev weights), its training result, and
    one record per attempt (``attempt``, ``seed``, ``dev``: the best dev score, ``steps``,
    plus what ``make`` returned)."""

    model: Any
    result: TrainResult
    attempts: list[dict[str, Any]]

    @property
    def attempt(self) -> int:
        """Which attempt was kept (0: the first)."""
        return next(a["attempt"] for a in self.attempts if a["kept"])


def stalled(score: float | None, config: RestartConfig) -> bool:
    """Whether an attempt with this best dev score stalled (``None``: no dev score, never)."""
    return score is not None and score < config.restart_below


def train_restarts(make: Make, config: TrainConfig, restarts: RestartConfig, **train_kw: Any) -> Kept:
    """Train attempt 0, then further attempts while every one so far stalled on dev.

    Args:
        make: ``make(attempt, config)`` builds attempt ``attempt`` for the training
            configuration ``config`` (whose ``seed`` is the attempt's: ``seed + attempt``)
            and returns ``(model, train_items, dev_items, info)``; ``info`` goes into the
            attempt's record.
        config: the training configuration of attempt 0.
        restarts: when to train again.
        **train_kw: passed to :func:`ptune.trainer.train` (``output_dir`` must stay None).

    Returns:
        The attempt with the best dev score (the earliest on ties); without dev items, the
        only attempt.
    """
    best: tuple[float, int, Any, TrainResult] | None = None
    records: list[dict[str, Any]] = []
    for attempt in range(restarts.restarts + 1):
        cfg = dataclasses.replace(config, seed=config.seed + attempt)
        model, train_items, dev_items, info = make(attempt, cfg)
        result = train(model, train_items, dev_items, cfg, None, **train_kw)
        score = (result.best_metrics or {}).get(cfg.metric) if dev_items else None
        records.append({"attempt": attempt, "seed": cfg.seed, "dev": score, "steps": result.steps, **info,
                        "kept": False})
        rank = -math.inf if score is None else score
        if best is None or rank > best[0]:
            best = (rank, len(records) - 1, model, result)
        if not stalled(score, restarts):
            break
    assert best is not None
    _, index, model, result = best
    records[index]["kept"] = True
    return Kept(model, result, records)
