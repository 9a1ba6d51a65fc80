"""The one training and evaluation loop.

AdamW with separate learning rates for the prompt encoder and (when tuned jointly) the
LM, warmup then linear / exponential / constant decay, gradient clipping and
accumulation, dev evaluation with early stopping, seeds, autocast, a progress bar and a
``metrics.jsonl`` log. Accelerate is the engine: the same code runs on one CPU or GPU
and under ``accelerate launch`` / ``torchrun`` on several processes.

Batches are *global*: ``batch_size`` examples per optimizer step whatever the number of
processes; each process takes its slice of every global batch, so a 2-process run
makes the same updates as a 1-process run. The data order of epoch ``e`` is a
permutation seeded by ``seed + e``, which also makes resuming exact.

A run folder holds::

    best/            the checkpoint with the best dev metric (or the final one)
    last/            the latest training checkpoint, with optimizer and trainer state
    metrics.jsonl    one JSON line per step and per evaluation
    train_config.json
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .checkpoint import load_training_state, save_checkpoint, write_json_atomic
from .config import TrainConfig
from .errors import CheckpointError, ConfigError
from .model import Item, PTunedModel

__all__ = ["train", "evaluate", "TrainResult", "accuracy"]

logger = logging.getLogger(__name__)

MetricFn = Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
EvalFn = Callable[[Any, Sequence[Item]], dict[str, float]]


def accuracy(pred: torch.Tensor, gold: torch.Tensor) -> dict[str, float]:
    """``{"accuracy": ..., "n": ...}`` of predicted vs gold label indices."""
    n = int(gold.numel())
    return {"accuracy": float((pred == gold).float().mean()) if n else 0.0, "n": n}


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


def _accelerator(config: TrainConfig):
    from accelerate import Accelerator

    gpu = torch.cuda.is_available()
    # cpu=True on a machine without a GPU: torchrun / accelerate launch then join the
    # processes in one gloo group (without it each process trains alone)
    return Accelerator(mixed_precision=config.mixed_precision if gpu else "no", cpu=not gpu)


@torch.no_grad()
def evaluate(
    model: PTunedModel,
    items: Sequence[Item],
    *,
    batch_size: int = 32,
    metric_fn: MetricFn = accuracy,
    accelerator: Any = None,
) -> dict[str, float]:
    """Metrics of ``model`` on labelled ``items`` (sharded over processes if distributed)."""
    from accelerate.utils import gather_object

    was = model.training
    model.eval()
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = next(model.parameters()).device
    shard = list(items[rank::world])
    preds, golds, losses = [], [], []
    try:
        for i in range(0, len(shard), batch_size):
            batch = model.collate(shard[i : i + batch_size]).to(device)
            ctx = accelerator.autocast() if accelerator else nullcontext()
            with ctx:
                out = model(batch)
            preds += out.scores.argmax(-1).tolist()
            golds += batch.labels.tolist()
            if out.loss is not None:
                losses.append((float(out.loss), len(batch)))
    finally:
        model.train(was)
    if world > 1:
        preds, golds, losses = (sum(gather_object([x]), []) for x in (preds, golds, losses))
    metrics = metric_fn(torch.tensor(preds, dtype=torch.long), torch.tensor(golds, dtype=torch.long))
    if losses:
        metrics["loss"] = sum(l * n for l, n in losses) / sum(n for _, n in losses)
    return metrics


def _param_groups(model: PTunedModel, config: TrainConfig) -> list[dict[str, Any]]:
    groups = []
    prompt = [p for p in model.prompt_parameters() if p.requires_grad]
    if prompt:
        groups.append({"params": prompt, "lr": config.lr, "weight_decay": config.weight_decay, "name": "prompt"})
    if config.finetune_lm:
        decay, no_decay = [], []
        for name, p in model.lm.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups.append({"params": decay, "lr": config.lm_lr, "weight_decay": config.lm_weight_decay, "name": "lm"})
        groups.append({"params": no_decay, "lr": config.lm_lr, "weight_decay": 0.0, "name": "lm_no_decay"})
    if not groups:
        raise ConfigError(
            "finetune_lm", "nothing to train: the template has no pseudo tokens and the LM is frozen"
        )
    return groups


def _lr_lambda(config: TrainConfig, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "linear":
            return max(0.0, (total - step) / max(1, total - config.warmup_steps))
        if config.schedule == "exponential":  # stepped once per epoch, as the paper's LAMA code
            return config.gamma ** (step // steps_per_epoch)
        return 1.0

    return f


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state().tolist(),
        "python": repr(random.getstate()),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import ast

    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))


def _better(value: float, loss: float | None, state: dict[str, Any]) -> bool:
    """Whether a dev evaluation beats the best so far: a higher metric, or the same metric
    with a dev loss lower by more than float noise (0.01%; when both evaluations have one)."""
    best, best_loss = state["best"], state.get("best_loss")
    if best is None or value > best:
        return True
    return (value == best and loss is not None and best_loss is not None
            and loss < best_loss - 1e-4 * max(1.0, abs(best_loss)))


def train(
    model: PTunedModel,
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
) -> TrainResult:
    """Train the prompt (and optionally the LM) of ``model``.

    Args:
        model: the P-tuned model (its LM frozen unless ``config.finetune_lm``).
        train_items: labelled examples (dicts or items from :meth:`PTunedModel.prepare`).
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
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        A :class:`TrainResult`. With a dev set, ``model`` ends with the best weights.

    Example:
        >>> result = train(model, train_examples, dev_examples,          # doctest: +SKIP
        ...                TrainConfig(steps=300, lr=1e-3), output_dir="runs/x")
    """
    from accelerate.utils import set_seed

    config = config or TrainConfig()
    out = Path(output_dir) if output_dir is not None else None
    if resume and (out is None or not (out / "last").is_dir()):
        raise CheckpointError(f"{out}: nothing to resume (no last/ checkpoint)")
    if out is not None and not resume and (out / "last").exists():
        raise ConfigError("output_dir", f"{out} already holds a run; resume it or choose another folder")
    if train_items and not isinstance(train_items[0], Item):
        train_items = model.prepare(train_items, require_labels=True)  # type: ignore[arg-type]
    if dev_items and not isinstance(dev_items[0], Item):
        dev_items = model.prepare(dev_items, require_labels=True)  # type: ignore[arg-type]
    train_items = list(train_items)  # type: ignore[assignment]
    if any(it.label < 0 for it in train_items):  # type: ignore[union-attr]
        bad = next(it for it in train_items if it.label < 0)  # type: ignore[union-attr]
        raise ConfigError("train", f"{bad.source}: training examples need a label")  # type: ignore[union-attr]

    accelerator = _accelerator(config)
    world = accelerator.num_processes
    if config.batch_size % (world * config.grad_accum):
        raise ConfigError(
            "batch_size",
            f"{config.batch_size} is not divisible by {world} processes x {config.grad_accum} accumulation steps",
        )
    n = len(train_items)
    if n < config.batch_size:
        raise ConfigError("batch_size", f"{config.batch_size} is larger than the {n} training examples")
    per_process = config.batch_size // world
    micro = per_process // config.grad_accum
    steps_per_epoch = n // config.batch_size
    total = config.steps or steps_per_epoch * (config.epochs or 10)
    eval_every = config.eval_every or steps_per_epoch

    set_seed(config.seed)
    model.set_lm_trainable(config.finetune_lm, dropout=config.lm_dropout)
    model.to(accelerator.device)
    if config.compile and not getattr(model.lm, "_compiled_by_ptune", False):
        mode = None if config.compile is True else config.compile
        model.lm.compile(mode=mode)  # in place: the parameters, state dict and head stay where they are
        model.lm._compiled_by_ptune = True
    on_gpu = accelerator.device.type == "cuda"
    if on_gpu:
        model.pad_to_multiple_of = 8  # length buckets: fixed shapes for kernels and compilers
    optimizer = torch.optim.AdamW(_param_groups(model, config), fused=on_gpu)
    lr_factor = _lr_lambda(config, total, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    state: dict[str, Any] = {"step": 0, "best": None, "best_step": None, "bad_evals": 0, "history": []}
    if resume:
        assert out is not None
        state, opt_state = _restore(model, out / "last", accelerator)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
        scheduler.last_epoch = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor(state["step"])
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    if out is not None and accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", config.to_dict())
    log = _Log(out / "metrics.jsonl" if out is not None and accelerator.is_main_process else None)
    show = progress if progress is not None else sys.stderr.isatty()
    bar = _bar(total, state["step"], show and accelerator.is_main_process)

    stopped_early = False
    last_metrics = None
    best_weights: dict[str, torch.Tensor] | None = None
    model.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    while state["step"] < total:
        step = state["step"]
        epoch, k = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + epoch))
        glob = order[k * config.batch_size : (k + 1) * config.batch_size]
        mine = glob[accelerator.process_index * per_process : (accelerator.process_index + 1) * per_process]
        t0 = time.perf_counter()
        loss_sum = 0.0
        chunks = [mine[i : i + micro] for i in range(0, per_process, micro)]
        for j, idx in enumerate(chunks):
            batch = model.collate([train_items[i] for i in idx.tolist()]).to(accelerator.device)  # type: ignore[index]
            sync = j == len(chunks) - 1
            with (nullcontext() if sync else accelerator.no_sync(wrapped)), accelerator.autocast():
                loss = wrapped(batch).loss * (len(idx) / per_process)
                accelerator.backward(loss)
            loss_sum += float(loss.detach())
        if config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step = step + 1
        loss_mean = float(accelerator.reduce(torch.tensor(loss_sum, device=accelerator.device), "mean"))
        record = {"step": step, "epoch": epoch, "loss": loss_mean, "lr": scheduler.get_last_lr()[0],
                  "seconds": round(time.perf_counter() - t0, 4)}
        log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_mean:.4f}", **({config.metric: f"{state['best']:.4f}"} if state["best"] is not None else {}))

        at_eval = step % eval_every == 0 or step == total
        stopping = stop_at_step is not None and step >= stop_at_step
        if at_eval and dev_items:
            if eval_fn is not None:
                was = model.training
                with accelerator.autocast():
                    last_metrics = dict(eval_fn(model, dev_items))  # type: ignore[arg-type]
                model.train(was)
            else:
                last_metrics = evaluate(model, dev_items, batch_size=config.eval_batch_size, metric_fn=metric_fn,
                                        accelerator=accelerator)  # type: ignore[arg-type]
            if config.metric not in last_metrics:
                raise ConfigError("metric", f"{config.metric!r} is not among the metrics {sorted(last_metrics)}")
            value = last_metrics[config.metric]
            improved = _better(value, last_metrics.get("loss"), state)
            log.write({"step": step, "eval": "dev", **last_metrics, "improved": improved})
            state["history"].append({"step": step, **last_metrics})
            if improved:
                state["best"], state["best_step"], state["bad_evals"] = value, step, 0
                state["best_loss"] = last_metrics.get("loss")
                if out is not None and accelerator.is_main_process:
                    _save(model, out / "best")
                elif out is None:  # keep the best weights in memory
                    best_weights = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
            else:
                state["bad_evals"] += 1
            if config.patience is not None and state["bad_evals"] >= config.patience:
                stopped_early = True
        if out is not None and (at_eval or stopping or stopped_early) and accelerator.is_main_process:
            _save(model, out / "last", optimizer=optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                            trainer_state={**state, "rng": _rng_state(), "config": config.to_dict()})
        accelerator.wait_for_everyone()
        if stopped_early or stopping:
            break
    bar.close()
    log.close()
    if out is not None and accelerator.is_main_process and not dev_items:
        _save(model, out / "best")
    accelerator.wait_for_everyone()
    if dev_items and state["best_step"] is not None and state["best_step"] != state["step"]:
        if out is not None:
            _load_weights(model, out / "best")
        elif best_weights is not None:
            model.load_state_dict(best_weights, strict=False)
    model.eval()
    return TrainResult(
        steps=state["step"],
        best_step=state["best_step"],
        best_metrics=next((h for h in state["history"] if h["step"] == state["best_step"]), None),
        last_metrics=last_metrics,
        stopped_early=stopped_early,
        output_dir=out,
        history=state["history"],
        num_processes=world,
    )


def _save(model: Any, path: Path, **kw: Any) -> None:
    """A prompt checkpoint, or the model's own format (the fine-tuning baseline's)."""
    if isinstance(model, PTunedModel):
        save_checkpoint(model, path, **kw)
    else:
        model.save(path, **kw)


def _load_weights(model: Any, path: Path) -> None:
    """Put the weights of checkpoint ``path`` into ``model`` (same architecture)."""
    if not isinstance(model, PTunedModel):
        model.load_weights(path)
        return
    from .checkpoint import _load_prompt

    _load_prompt(model, path)
    if model.lm_trainable and (path / "lm").is_dir():
        from safetensors.torch import load_file

        sd = {}
        for f in sorted((path / "lm").glob("*.safetensors")):
            sd.update(load_file(str(f)))
        model.lm.load_state_dict(sd, strict=False)


def _restore(model: PTunedModel, path: Path, accelerator: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from .checkpoint import _check_fingerprint, read_meta

    state, opt = load_training_state(path)
    if isinstance(model, PTunedModel):
        meta = read_meta(path)
        if not meta.get("lm_included"):
            _check_fingerprint(meta["base"], model.lm, model.tokenizer, path, model.base_model)
    _load_weights(model, path)
    _set_rng_state(state.pop("rng"))
    state.pop("config", None)
    logger.info("resuming from %s at step %d", path, state["step"])
    return state, opt


class _Log:
    def __init__(self, path: Path | None):
        self.fh = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, record: dict[str, Any]) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(record) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def _bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)
