"""A training run's state, and its ``last/`` checkpoint that resumes it exactly.

:class:`Run` is what the trainer's setup builds and its steps share: the model, Accelerate
and its optimizer and schedule, the items, the step counter and the dev selection so far.
:func:`save_last` writes ``last/``: the checkpoint, this state, and Accelerate's saved
state (optimizer, scheduler, every process's random generators) in ``accelerate/``, put in
place in one rename, and only then commits a staged ``best/``; :func:`load_last` reads it
all back. :func:`check_weights` stops a run before weights that are no longer finite are
evaluated or saved.

Example:
    >>> save_last(run)                                                  # doctest: +SKIP
    >>> load_last(run)  # in a new process: the same weights, state and random generators  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .batch import Item
from .checkpoint import READ_ERRORS, load_training_state, load_weights, save_checkpoint
from .config import TrainConfig
from .errors import CheckpointError, TrainingError
from .files import commit_dir, crash_point
from .runfolder import STAGING_NAME

__all__ = ["Run", "RESUME_DIR", "save_last", "load_last", "snapshot", "check_weights"]

logger = logging.getLogger(__name__)

RESUME_DIR = "accelerate"


@dataclass
class Run:
    """What the trainer's setup builds and the steps share."""

    model: Any
    wrapped: Any  # the model as Accelerate prepared it (DDP on several processes)
    accelerator: Any
    optimizer: Any
    scheduler: Any
    config: TrainConfig
    items: list[Item]
    out: Path | None
    total: int
    steps_per_epoch: int
    state: dict[str, Any]
    best_weights: dict[str, torch.Tensor] | None = None
    best_staged: bool = False  # best/ written as .best.new, committed after last/
    alone: bool = False  # this process only, also under a multi-process launch
    sharded: bool = False  # the LM's layers sharded across the processes (ptune.sharding)


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    """A copy (in CPU memory) of the weights that train: what restoring the best needs."""
    return {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters() if p.requires_grad}


def check_weights(run: Run, step: int) -> None:
    """Stop before evaluating or saving weights that are no longer finite."""
    bad = [n for n, p in run.model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingError(f"step {step}: {len(bad)} trained weights ({bad[0]}, ...) became NaN or infinite; "
                            "training stopped (a lower learning rate or gradient clipping helps)")


def save_last(run: Run) -> None:
    """``last/``: the checkpoint, the trainer state and Accelerate's state (every process
    writes its RNG state), put in place in one rename."""
    assert run.out is not None
    check_weights(run, run.state["step"])
    acc = run.accelerator
    staging = run.out / STAGING_NAME
    if acc.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(staging))
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_checkpoint(run.model, run.out / "last", trainer_state={**run.state, "config": run.config.to_dict()},
                        extra={RESUME_DIR: staging})
        crash_point("last-saved")
        if run.best_staged:
            commit_dir(run.out / "best")
            run.best_staged = False
    acc.wait_for_everyone()


def load_last(run: Run) -> None:
    """Continue from ``last/``: its weights, the best weights so far, and Accelerate's state."""
    assert run.out is not None
    last = run.out / "last"
    state, _ = load_training_state(last)
    if not (last / RESUME_DIR).is_dir():
        raise CheckpointError(f"{last}: no {RESUME_DIR}/ (the optimizer and random states to resume from)")
    if state.get("best_step") is not None and (run.out / "best").is_dir():
        load_weights(run.model, run.out / "best")
        run.best_weights = snapshot(run.model)
    load_weights(run.model, last)
    try:
        run.accelerator.load_state(str(last / RESUME_DIR))  # optimizer, scheduler, every process's RNG
    except (*READ_ERRORS, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{last / RESUME_DIR}: damaged resume state ({first})") from None
    state.pop("config", None)
    run.state = {**run.state, **state}
    logger.info("resuming from %s at step %d", last, state["step"])
