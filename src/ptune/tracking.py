"""Experiment tracking through Accelerate's trackers (TensorBoard, W&B, MLflow, ...).

``TrainConfig.report_to`` (``--report-to tensorboard,wandb``) names the trackers; the trainer
then builds its ``Accelerator(log_with=...)``, starts the trackers with the run's
configuration (training and prompt settings, flattened to ``train.lr``, ``prompt.template``,
...), logs ``train/loss`` and the learning rates every step and ``dev/<metric>`` at every
evaluation, and ends them when training ends. Trackers that write files (TensorBoard)
write into ``<run folder>/logs/ptune``. Only the main process logs.

Example:
    >>> train(model, data, dev, TrainConfig(steps=300, report_to=("tensorboard",)),   # doctest: +SKIP
    ...       output_dir="runs/x")
    >>> # tensorboard --logdir runs/x/logs
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["check_trackers", "accelerator_kwargs", "Tracking", "PROJECT", "flat_config"]

PROJECT = "ptune"
"""The project name given to the trackers (W&B project, MLflow experiment, TensorBoard subfolder)."""


def _known() -> dict[str, Any]:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return dict(LOGGER_TYPE_TO_CLASS)


def check_trackers(names: tuple[str, ...]) -> None:
    """Raise a ConfigError for a tracker Accelerate does not know or that is not installed."""
    if not names:
        return
    from accelerate.tracking import get_available_trackers

    known = _known()
    installed = {str(t) for t in get_available_trackers()}
    for name in names:
        if name == "all":
            continue
        if name not in known:
            raise ConfigError("report_to", f"unknown tracker {name!r}; accepted: all, {', '.join(sorted(known))}")
        if name not in installed:
            raise ConfigError("report_to", f"the tracker {name!r} is not installed (pip install {name})")


def accelerator_kwargs(names: tuple[str, ...], out: Path | None) -> dict[str, Any]:
    """``Accelerator`` keyword arguments for the trackers: ``log_with`` and, for trackers that
    write files, the run folder's ``logs/`` as their directory."""
    if not names:
        return {}
    from accelerate.tracking import get_available_trackers

    known = _known()
    wanted = [str(t) for t in get_available_trackers()] if "all" in names else list(names)
    writers = [n for n in wanted if getattr(known.get(n), "requires_logging_directory", False)]
    if writers and out is None:
        raise ConfigError("report_to", f"{', '.join(writers)} writes files into the run folder: give an output folder")
    kwargs: dict[str, Any] = {"log_with": list(names) if "all" not in names else "all"}
    if out is not None:
        from accelerate.utils import ProjectConfiguration

        kwargs["project_config"] = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs"))
    return kwargs


def flat_config(sections: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train": {"lr": ...}, "prompt": {...}}`` as ``{"train.lr": ...}`` with values every
    tracker takes (numbers, text, booleans; lists and mappings as JSON text)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:
            out[prefix] = json.dumps(value, default=str)

    walk("", dict(sections))
    return out


class Tracking:
    """The trackers of one training run (nothing at all when none were asked for)."""

    def __init__(self, accelerator: Any, names: tuple[str, ...], config: Mapping[str, Any]):
        self.accelerator = accelerator
        self.on = bool(names)
        if self.on:
            accelerator.init_trackers(PROJECT, config=flat_config(config))

    def step(self, step: int, loss: float, lrs: Mapping[str, float]) -> None:
        """The training loss and the learning rate of each parameter group (``train/lr_<group>``) at ``step``."""
        if self.on:
            self.accelerator.log({"train/loss": loss, **{f"train/lr_{k}": v for k, v in lrs.items()}}, step=step)

    def evaluation(self, step: int, metrics: Mapping[str, Any]) -> None:
        """The dev metrics (numbers only) of the evaluation at ``step``."""
        if self.on:
            values = {f"dev/{k}": float(v) for k, v in metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.accelerator.log(values, step=step)

    def end(self) -> None:
        if self.on:
            self.accelerator.end_training()
            self.on = False
