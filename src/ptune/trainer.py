"""The one training loop, for P-tuned models and the fine-tuning baseline.

AdamW with separate learning rates for the prompt encoder (or classifier head) and, when
tuned jointly, the LM, warmup then linear / constant decay or the paper's per-epoch
exponential decay (:mod:`ptune.optimization`); gradient clipping and accumulation; dev
evaluation (:func:`ptune.evaluation.evaluate`, or a task's own) with early stopping;
seeds, autocast, a progress bar and a ``metrics.jsonl`` log. Accelerate is the engine:
the same code runs on one CPU or GPU and under ``accelerate launch`` / ``torchrun`` on
several processes.

Batches are *global*: ``batch_size`` examples per optimizer step whatever the number of
processes; each process takes its slice of every global batch, so a 2-process run
makes the same updates as a 1-process run. The data order of epoch ``e`` is a
permutation seeded by ``seed + e``; with Accelerate's saved optimizer, scheduler and
random-generator states in ``last/`` (:mod:`ptune.trainstate`) this makes resuming exact.

A run folder holds::

    best/            the checkpoint with the best dev metric (or the final one)
    last/            the latest checkpoint, with trainer_state.json and accelerate/
                     (Accelerate's save_state: optimizer, scheduler, each process's RNG)
    metrics.jsonl    one JSON line per step and per evaluation
    train_config.json
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .batch import Item
from .card import RunFacts
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, TrainingError
from .evaluation import EvalFn, MetricFn, accuracy, evaluate
from .files import write_json_atomic
from .lock import locks_folder
from .optimization import make_optimizer, make_scheduler
from .placement import place
from .progress import Progress
from .runfolder import MetricsLog, holds_run, recover_run
from .selection import judge, remember
from .sharding import average_gradients, outside_accelerate_fsdp, shard_for_launch
from .tracking import Tracking, accelerator_kwargs
from .trainstate import Run, check_weights, load_last, save_last, snapshot

__all__ = ["train", "TrainResult"]


@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    best_step: int | None
    best_metrics: dict[str, float] | None
    last_metrics: dict[str, float] | None
    stopped_early: bool
    output_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    num_processes: int = 1


# ----------------------------------------------------------------------------- setup
def _accelerator(config: TrainConfig, out: Path | None):
    from accelerate import Accelerator

    gpu = torch.cuda.is_available()
    # cpu=True on a machine without a GPU: torchrun / accelerate launch then join the
    # processes in one gloo group (without it each process trains alone)
    with outside_accelerate_fsdp():  # ptune shards a frozen LM itself (ptune.sharding)
        acc = Accelerator(mixed_precision=config.mixed_precision if gpu else "no", cpu=not gpu,
                          **accelerator_kwargs(config.report_to, out))
    # resume state holds the optimizer, scheduler and RNG; the weights are in the checkpoint
    acc.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    acc.register_load_state_pre_hook(lambda models, folder: models.clear())
    return acc


def _items(model: Any, items: Any) -> list[Item]:
    """Prepared items from items, a list of dicts or a ``datasets.Dataset``."""
    if items is None:
        return []
    if isinstance(items, Sequence) and (not items or isinstance(items[0], Item)):
        return list(items)
    return model.prepare(items, require_labels=True)


def _check_run_folder(out: Path, resume: bool, acc: Any) -> None:
    """Rank 0 repairs whatever a crash left (back to the last checkpoint); then every process
    looks at the folder, and none writes to it before all have looked (a process that looked
    after another had begun the run would find a run there)."""
    if acc.is_main_process:
        recover_run(out)
    acc.wait_for_everyone()
    if resume and not holds_run(out):
        raise CheckpointError(f"{out}: nothing to resume (no last/ checkpoint)")
    if not resume and holds_run(out):
        raise ConfigError("output_dir", f"{out} already holds a run; resume it or choose another folder")
    acc.wait_for_everyone()


def _setup(model: Any, items: list[Item], config: TrainConfig, out: Path | None, resume: bool,
           alone: bool = False) -> Run:
    """Check the run, then build the accelerator, optimizer and schedule; resume if asked."""
    if alone and out is not None:
        raise ConfigError("output_dir", "a run in one process of several keeps its weights in memory; "
                                        "give no output folder")
    if resume and out is None:
        raise CheckpointError("nothing to resume: no output folder")
    bad = next((it for it in items if it.label < 0), None)
    if bad is not None:
        raise ConfigError("train", f"{bad.source}: training examples need a label")
    accelerator = _accelerator(config, out)
    if out is not None:
        _check_run_folder(out, resume, accelerator)
    world = 1 if alone else accelerator.num_processes
    if config.batch_size % (world * config.grad_accum):
        raise ConfigError("batch_size", f"{config.batch_size} is not divisible by {world} processes x "
                                        f"{config.grad_accum} accumulation steps")
    if len(items) < config.batch_size:
        raise ConfigError("batch_size", f"{config.batch_size} is larger than the {len(items)} training examples")
    steps_per_epoch = len(items) // config.batch_size
    total = config.steps or steps_per_epoch * (config.epochs or 10)

    from accelerate.utils import set_seed

    set_seed(config.seed)
    model.set_lm_trainable(config.finetune_lm, dropout=config.lm_dropout)
    place(model, accelerator.device)  # a dispatched LM stays where it is (ptune.placement)
    sharded = not alone and shard_for_launch(model, accelerator, config.finetune_lm, out is not None)
    if config.compile and not getattr(model.lm, "_compiled_by_ptune", False):
        model.lm.compile(mode=None if config.compile is True else config.compile)  # in place: same state dict
        model.lm._compiled_by_ptune = True
    on_gpu = accelerator.device.type == "cuda"
    if on_gpu and hasattr(model, "speed"):  # length buckets: fixed shapes for kernels and compilers
        model.speed = dataclasses.replace(model.speed, pad_to_multiple_of=8)
    optimizer = make_optimizer(model, config, fused=on_gpu)
    scheduler = make_scheduler(optimizer, config, total, steps_per_epoch)
    if alone or sharded:  # no DDP wrapper: other work elsewhere, or ptune averages the prompt's gradients
        wrapped, optimizer = model, accelerator.prepare_optimizer(optimizer)
    else:
        wrapped, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: it steps once per optimizer step
    state: dict[str, Any] = {"step": 0, "best": None, "best_loss": None, "best_step": None, "bad_evals": 0,
                             "history": []}
    run = Run(model, wrapped, accelerator, optimizer, scheduler, config, items, out, total, steps_per_epoch, state,
              alone=alone, sharded=sharded)
    if resume and (out / "last").is_dir():  # type: ignore[operator]
        load_last(run)  # (a run killed before its first checkpoint starts again from step 0)
    if out is not None and accelerator.is_main_process:
        write_json_atomic(out / "train_config.json", config.to_dict())
    return run


# ----------------------------------------------------------------------------- steps
def _step(run: Run) -> float:
    """One optimizer step on this process's slice of the next global batch; the mean loss."""
    acc, cfg, model = run.accelerator, run.config, run.model
    epoch, k = divmod(run.state["step"], run.steps_per_epoch)
    order = torch.randperm(len(run.items), generator=torch.Generator().manual_seed(cfg.seed + epoch))
    world, index = (1, 0) if run.alone else (acc.num_processes, acc.process_index)
    per_process = cfg.batch_size // world
    glob = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
    mine = glob[index * per_process : (index + 1) * per_process]
    chunks = mine.split(per_process // cfg.grad_accum)
    loss_sum = 0.0
    for j, idx in enumerate(chunks):
        batch = model.collate([run.items[i] for i in idx.tolist()]).to(acc.device)
        sync = j == len(chunks) - 1
        with (nullcontext() if sync else acc.no_sync(run.wrapped)), acc.autocast():
            loss = run.wrapped(batch).loss * (len(idx) / per_process)
            acc.backward(loss)
        loss_sum += float(loss.detach())
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    if run.sharded:  # the replicated prompt: every process's gradient made the mean, as DDP does
        average_gradients(params)
    if cfg.max_grad_norm is not None:
        clip = torch.nn.utils.clip_grad_norm_ if run.sharded else acc.clip_grad_norm_
        clip(params, cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.state["step"] += 1
    if run.alone:
        return loss_sum
    return float(acc.reduce(torch.tensor(loss_sum, device=acc.device), "mean"))


def _dev_metrics(run: Run, dev: list[Item], metric_fn: MetricFn, eval_fn: EvalFn | None) -> dict[str, float]:
    check_weights(run, run.state["step"])
    if eval_fn is None:
        metrics = evaluate(run.model, dev, batch_size=run.config.eval_batch_size, metric_fn=metric_fn,
                           accelerator=None if run.alone or run.sharded else run.accelerator)
    else:
        was = run.model.training
        with run.accelerator.autocast():
            metrics = dict(eval_fn(run.model, dev))
        run.model.train(was)
    for name, wanted in (("metric", (run.config.metric,)), ("select_all", run.config.select_all)):
        missing = [m for m in wanted if m not in metrics]
        if missing:
            raise ConfigError(name, f"{missing[0]!r} is not among the metrics {sorted(metrics)}")
    return metrics


def _record_eval(run: Run, metrics: dict[str, float]) -> bool:
    """Update the best so far (:mod:`ptune.selection`); keep its weights (and write
    ``best/``) when it wins."""
    state, cfg = run.state, run.config
    verdict = judge(metrics, state, cfg.ties, cfg.metric, cfg.select_all)
    state["history"].append({"step": state["step"], **metrics})
    state["bad_evals"] = 0 if verdict.reset else state["bad_evals"] + 1
    if verdict.best:
        remember(state, metrics, cfg.metric, cfg.select_all)
        state["best_step"] = state["step"]
        run.best_weights = snapshot(run.model)
        if run.out is not None and run.accelerator.is_main_process:  # committed after last/ (see save_last)
            save_checkpoint(run.model, run.out / "best", step=state["step"], commit=False, facts=RunFacts(
                metrics={"step": state["step"], **metrics}, training=run.config.to_dict()))
            run.best_staged = True
    return verdict.best


# ----------------------------------------------------------------------------- fit
@locks_folder("output_dir")
def train(
    model: Any,
    train_items: Sequence[Item] | Sequence[dict[str, Any]],
    dev_items: Sequence[Item] | Sequence[dict[str, Any]] | None = None,
    config: TrainConfig | None = None,
    output_dir: str | Path | None = None,
    *,
    resume: bool = False,
    stop_at_step: int | None = None,
    metric_fn: MetricFn = accuracy,
    eval_fn: EvalFn | None = None,
    progress: bool | None = None,
    alone: bool = False,
) -> TrainResult:
    """Train the prompt (or classifier head) of ``model``, and optionally its LM.

    Args:
        model: a :class:`~ptune.model.PTunedModel` or :class:`~ptune.finetune.ClassifierModel`
            (its LM frozen unless ``config.finetune_lm``).
        train_items: labelled examples (a list of dicts, a ``datasets.Dataset``, or items from
            ``model.prepare``).
        dev_items: labelled examples for model selection and early stopping.
        config: the training configuration.
        output_dir: run folder (``best/``, ``last/``, ``metrics.jsonl``); None: keep in memory.
        resume: continue from ``output_dir/last``.
        stop_at_step: stop after this step as if interrupted (the schedule still aims at
            the full run); resume later with ``resume=True``.
        metric_fn: metrics of (predicted, gold) label indices; its ``config.metric`` key
            selects the best checkpoint.
        eval_fn: replaces the built-in evaluation: ``eval_fn(model, dev_items)`` returns the
            dev metrics (tasks whose metrics need more than argmax labels, e.g. grouped
            answers or generated text). Every process calls it on all dev items.
        progress: ``False``: no progress; otherwise a bar on a terminal, a line every 30 s
            elsewhere (:mod:`ptune.progress`; quiet mode turns both off).
        alone: train in this process only, also under ``accelerate launch`` / ``torchrun``
            (a harness's unit of work while the other processes run other units): no
            gradient exchange, no waiting for the others; needs ``output_dir=None``.

    Returns:
        A :class:`TrainResult`. With a dev set, ``model`` ends with the best weights.

    Example:
        >>> result = train(model, train_examples, dev_examples,          # doctest: +SKIP
        ...                TrainConfig(steps=300, lr=1e-3), output_dir="runs/x")
    """
    config = config or TrainConfig()
    out = Path(output_dir) if output_dir is not None else None
    dev = _items(model, dev_items)
    run = _setup(model, _items(model, train_items), config, out, resume, alone)
    acc, state = run.accelerator, run.state
    main = acc.is_main_process or alone
    log = MetricsLog(out if main else None)
    tracking = Tracking(acc, config.report_to, {"train": config.to_dict(), "model": _config_of(model)})
    bar = Progress(run.total, "train", "step", initial=state["step"], enabled=progress is not False and main)
    eval_every = config.eval_every or run.steps_per_epoch
    stopped_early, last_metrics = False, None
    model.train()
    while state["step"] < run.total:
        t0 = time.perf_counter()
        loss = _step(run)
        step = state["step"]
        _report_step(run, loss, time.perf_counter() - t0, log, tracking, bar)
        at_eval = step % eval_every == 0 or step == run.total
        stopping = stop_at_step is not None and step >= stop_at_step
        if at_eval and dev:
            last_metrics = _dev_metrics(run, dev, metric_fn, eval_fn)
            log.write({"step": step, "eval": "dev", **last_metrics, "improved": _record_eval(run, last_metrics)})
            tracking.evaluation(step, last_metrics)
            stopped_early = config.patience is not None and state["bad_evals"] >= config.patience
        if out is not None and (at_eval or stopping or stopped_early):
            save_last(run)
        if stopped_early or stopping:
            break
    bar.close()
    log.close()
    tracking.end()
    best_metrics = _finish(run, main and not dev, alone)
    return TrainResult(state["step"], state["best_step"], best_metrics, last_metrics, stopped_early, out,
                       state["history"], 1 if alone else acc.num_processes)


def _report_step(run: Run, loss: float, seconds: float, log: MetricsLog, tracking: Tracking, bar: Progress) -> None:
    """A step's line in ``metrics.jsonl``, the trackers and the progress bar; a loss that is
    not finite stops training."""
    step, lrs = run.state["step"], run.scheduler.get_last_lr()
    if not math.isfinite(loss):
        kept = f"; {run.out} keeps its last finite checkpoint" if run.out is not None else ""
        raise TrainingError(f"step {step}: the training loss is {loss}; training stopped (a lower learning rate "
                            f"or gradient clipping helps){kept}")
    log.write({"step": step, "epoch": (step - 1) // run.steps_per_epoch, "loss": loss, "lr": lrs[0],
               "seconds": round(seconds, 4)})
    tracking.step(step, loss, {g["name"]: lr for g, lr in zip(run.optimizer.param_groups, lrs)})
    bar.update(1)
    best = run.state["best"]
    bar.note(f"loss {loss:.4f}" + (f", best {run.config.metric} {best:.4f}" if best is not None else ""))


def _finish(run: Run, save_best: bool, alone: bool) -> dict[str, Any] | None:
    """After the last step: ``best/`` of a run without dev data (``save_best``); the best
    weights back in the model. Returns the best evaluation's metrics."""
    model, state = run.model, run.state
    if save_best and run.out is not None:
        save_checkpoint(model, run.out / "best", facts=RunFacts(training=run.config.to_dict()))
    if run.best_weights is not None and state["best_step"] != state["step"]:
        model.load_state_dict(run.best_weights, strict=False)
    if not alone:
        run.accelerator.wait_for_everyone()
    model.eval()
    return next((h for h in state["history"] if h["step"] == state["best_step"]), None)


def _config_of(model: Any) -> dict[str, Any]:
    """The model's configuration for the trackers (prompt or classifier settings, base model)."""
    config = getattr(model, "config", None)
    values = config.to_dict() if hasattr(config, "to_dict") else {}
    return {**values, "base_model": getattr(model, "base_model", None)}
