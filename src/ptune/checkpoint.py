"""Checkpoints that both serve and resume, written atomically.

A checkpoint is a folder::

    ptune_config.json     prompt config, base model, its fingerprint, ptune version
    prompt.safetensors    prompt-encoder parameters ("encoder.*") and the materialized
                          pseudo-token embeddings ("pseudo_embeddings")
    lm/                   only when the LM was tuned jointly: the LM and its tokenizer
    optimizer.pt          only in a training checkpoint: optimizer state (resume)
    trainer_state.json    only in a training checkpoint: step, best metric, RNG states

Every folder is written next to its destination under a temporary name and renamed into
place, so a crash never leaves half a checkpoint. Loading checks that the base model is
the one the prompt was trained for (hidden size, vocabulary, tokenizer and a sample of
its input embeddings) and refuses otherwise, saying what differs.

Example:
    >>> save_checkpoint(model, "runs/rte/best")                      # doctest: +SKIP
    >>> model = load_checkpoint("runs/rte/best")                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .config import PromptConfig
from .errors import CheckpointError
from .model import PTunedModel, load_base

__all__ = ["save_checkpoint", "load_checkpoint", "base_fingerprint", "CONFIG_NAME", "WEIGHTS_NAME"]

CONFIG_NAME = "ptune_config.json"
WEIGHTS_NAME = "prompt.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
STATE_NAME = "trainer_state.json"
_SAMPLE_ROWS = 8
_SAMPLE_DIMS = 16


def base_fingerprint(lm: torch.nn.Module, tokenizer: Any) -> dict[str, Any]:
    """What identifies a base model: sizes, tokenizer hash and an embedding sample."""
    emb = lm.get_input_embeddings().weight.detach()
    rows = torch.linspace(0, emb.shape[0] - 1, _SAMPLE_ROWS).long()
    sample = emb[rows.to(emb.device), :_SAMPLE_DIMS].float().cpu()
    vocab = sorted(tokenizer.get_vocab().items())
    return {
        "model_type": getattr(lm.config, "model_type", None),
        "hidden_size": int(emb.shape[1]),
        "vocab_size": int(emb.shape[0]),
        "tokenizer_sha256": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
        "embedding_sample": [round(x, 6) for x in sample.flatten().tolist()],
    }


def _check_fingerprint(saved: dict[str, Any], lm: torch.nn.Module, tokenizer: Any, path: Path, base: str) -> None:
    now = base_fingerprint(lm, tokenizer)
    problems = []
    for key in ("model_type", "hidden_size", "vocab_size"):
        if saved.get(key) != now[key]:
            problems.append(f"{key} {saved.get(key)} vs {now[key]}")
    if saved.get("tokenizer_sha256") != now["tokenizer_sha256"]:
        problems.append("a different tokenizer vocabulary")
    if not problems:
        a = torch.tensor(saved.get("embedding_sample", []))
        b = torch.tensor(now["embedding_sample"])
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-2, atol=1e-3):
            problems.append("different input-embedding weights")
    if problems:
        raise CheckpointError(
            f"{path}: trained for another base model than {base!r} ({'; '.join(problems)}); "
            "load it onto the model it was trained with"
        )


def _atomic_dir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))


def _commit_dir(tmp: Path, path: Path) -> None:
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename (key order kept:
    the verbalizer's label order is the order of the model's outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_checkpoint_dir(
    path: str | os.PathLike,
    *,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    config_name: str = CONFIG_NAME,
    weights_name: str = WEIGHTS_NAME,
    lm: torch.nn.Module | None = None,
    tokenizer: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically: the tensors (safetensors), the meta JSON, and
    optionally the LM with its tokenizer under ``lm/``, the optimizer state and the
    trainer state. Shared by prompt checkpoints and the fine-tuning baseline's."""
    path = Path(path)
    tmp = _atomic_dir(path)
    try:
        save_file(tensors, str(tmp / weights_name), metadata={"format": "pt", "ptune_version": __version__})
        if lm is not None:
            lm.save_pretrained(tmp / "lm")
            tokenizer.save_pretrained(tmp / "lm")
        write_json_atomic(tmp / config_name, {"ptune_version": __version__, **meta, "lm_included": lm is not None})
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_NAME)
        if trainer_state is not None:
            write_json_atomic(tmp / STATE_NAME, trainer_state)
        _commit_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_checkpoint(
    model: PTunedModel,
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Save a prompt (and, if the LM was tuned, the LM) atomically to folder ``path``.

    Args:
        model: the P-tuned model.
        path: destination folder (replaced if it exists).
        optimizer: include its state to resume training.
        trainer_state: JSON-serializable training state to resume (step, best, RNG).
    """
    tensors: dict[str, torch.Tensor] = {}
    if model.encoder is not None:
        was = model.encoder.training
        model.encoder.eval()
        with torch.no_grad():
            tensors["pseudo_embeddings"] = model.encoder().detach().float().cpu().clone()
        model.encoder.train(was)
        for k, v in model.encoder.state_dict().items():
            tensors[f"encoder.{k}"] = v.detach().cpu().contiguous()
    meta = {
        "prompt": {**model.config.to_dict(), "kind": model.kind},
        "base_model": model.base_model,
        "base": base_fingerprint(model.lm, model.tokenizer),
        "n_pseudo": model.compiled.n_pseudo,
        "labels": list(model.answers.labels) if model.answers is not None else [],
    }
    tuned = bool(model.lm_trainable)
    return write_checkpoint_dir(path, meta=meta, tensors=tensors, lm=model.lm if tuned else None,
                                tokenizer=model.tokenizer, optimizer=optimizer, trainer_state=trainer_state)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's ``ptune_config.json``; a run folder resolves to its ``best/``."""
    path = resolve(path)
    try:
        return json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / CONFIG_NAME}: damaged JSON at line {e.lineno}: {e.msg}") from None


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a training run folder (its ``best/`` checkpoint)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / "best" / CONFIG_NAME).is_file():
        return path / "best"
    raise CheckpointError(f"{path}: not a ptune checkpoint (no {CONFIG_NAME}) nor a run folder with best/")


def load_checkpoint_base(path: Path, meta: dict[str, Any], base: Any, kind: str | None) -> tuple[Any, Any, str]:
    """The LM and tokenizer a checkpoint runs on, and the base name to record: its own tuned
    LM (``lm/``, when saved with one; a loaded ``base`` is then refused), else ``base`` (a hub
    name, folder or loaded ``(model, tokenizer)``; default: the recorded base), checked
    against the recorded fingerprint."""
    if meta.get("lm_included"):
        if base is not None and not isinstance(base, str):
            raise CheckpointError(f"{path}: holds its own tuned LM; do not pass a base model")
        lm, tokenizer, _ = load_base(str(path / "lm"), kind)
        return lm, tokenizer, meta.get("base_model") or str(path / "lm")
    if base is None or isinstance(base, str):
        base_name = base or meta["base_model"]
        lm, tokenizer, _ = load_base(base_name, kind)
    else:
        lm, tokenizer = base
        base_name = meta["base_model"]
    _check_fingerprint(meta["base"], lm, tokenizer, path, base_name)
    return lm, tokenizer, base_name


def load_checkpoint(
    path: str | os.PathLike,
    base: str | tuple[torch.nn.Module, Any] | None = None,
    *,
    device: str | torch.device | None = None,
) -> PTunedModel:
    """Load a checkpoint onto its base model.

    Args:
        path: checkpoint folder (or run folder: its ``best/``).
        base: the base model, as a hub name or folder, or an already loaded
            ``(model, tokenizer)``; default: the base recorded in the checkpoint.
        device: where to put the model.

    Raises:
        CheckpointError: the folder is not a checkpoint, or the base model is not the one
            the prompt was trained for.
    """
    path = resolve(path)
    meta = read_meta(path)
    if meta.get("ptune_version") is None or "prompt" not in meta:
        raise CheckpointError(f"{path / CONFIG_NAME}: not a ptune checkpoint config")
    config = PromptConfig.from_dict(meta["prompt"])
    if list(config.verbalizer) != meta.get("labels", list(config.verbalizer)):
        raise CheckpointError(f"{path / CONFIG_NAME}: the verbalizer's labels are not in the recorded order {meta['labels']}")
    lm, tokenizer, base_name = load_checkpoint_base(path, meta, base, config.kind)
    model = PTunedModel(lm, tokenizer, config, base_model=base_name)
    _load_prompt(model, path)
    if device is not None:
        model.to(device)
    model.eval()
    return model


def _load_prompt(model: PTunedModel, path: Path) -> None:
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{path}: {WEIGHTS_NAME} is missing")
    tensors = load_file(str(weights))
    if model.encoder is None:
        return
    state = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    expected = model.encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights}: does not fit the prompt encoder (missing {missing}, unexpected {unexpected}, "
            f"wrong shape {wrong})"
        )
    model.encoder.load_state_dict(state)
    if "pseudo_embeddings" in tensors:  # serve the materialized embeddings exactly
        model.encoder.eval()
        model.encoder.set_cache(tensors["pseudo_embeddings"].to(model.encoder.embedding.weight.dtype))


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(trainer_state, optimizer_state or None) of a training checkpoint."""
    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise CheckpointError(f"{path}: no {STATE_NAME}; is this a training checkpoint (a run's last/)?")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    opt = None
    if (path / OPTIMIZER_NAME).is_file():
        opt = torch.load(path / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
    return state, opt
