"""The optimizer and its learning-rate schedule.

AdamW over parameter groups: the prompt encoder (or the classifier head) with
``TrainConfig.lr`` and, when the LM is tuned jointly (``finetune_lm``), the LM's weights
with ``lm_lr``, its biases and norms without weight decay. The schedule is linear warmup
then linear decay or a constant rate (``transformers.get_scheduler``), or the paper's
per-epoch exponential decay (its LAMA code).

Example:
    >>> optimizer = make_optimizer(model, TrainConfig(lr=1e-3))         # doctest: +SKIP
    >>> scheduler = make_scheduler(optimizer, TrainConfig(lr=1e-3), total=300, steps_per_epoch=10)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from .config import TrainConfig
from .errors import ConfigError

__all__ = ["make_optimizer", "make_scheduler", "param_groups"]


def param_groups(model: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """The prompt (or head) with ``lr``; with ``finetune_lm`` the rest of the LM with
    ``lm_lr``, biases and norms without weight decay. Each group is named (``prompt``,
    ``lm``, ``lm_no_decay``) for the logs and trackers."""
    groups = []
    prompt = [p for p in model.prompt_parameters() if p.requires_grad]
    if prompt:
        groups.append({"params": prompt, "lr": config.lr, "weight_decay": config.weight_decay, "name": "prompt"})
    if config.finetune_lm:
        taken = set(map(id, prompt))
        decay, no_decay = [], []
        for name, p in model.lm.named_parameters():
            if p.requires_grad and id(p) not in taken:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups.append({"params": decay, "lr": config.lm_lr, "weight_decay": config.lm_weight_decay, "name": "lm"})
        groups.append({"params": no_decay, "lr": config.lm_lr, "weight_decay": 0.0, "name": "lm_no_decay"})
    if not groups:
        raise ConfigError("finetune_lm", "nothing to train: the template has no pseudo tokens and the LM is frozen")
    return groups


def make_optimizer(model: Any, config: TrainConfig, *, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (``fused``: the GPU kernel)."""
    return torch.optim.AdamW(param_groups(model, config), fused=fused)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int, steps_per_epoch: int):
    """The learning-rate schedule: ``transformers.get_scheduler``'s linear decay or constant
    rate after ``warmup_steps`` of linear warmup, or (``exponential``, the paper's LAMA) a
    factor ``gamma`` per epoch after the warmup."""
    from transformers import get_scheduler

    if config.schedule != "exponential":
        name = "linear" if config.schedule == "linear" else "constant_with_warmup"
        return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=total)
    w = config.warmup_steps

    def factor(step: int) -> float:
        return step / w if step < w else config.gamma ** (step // steps_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
