"""Checkpoints that both serve and resume, for P-tuned models and the fine-tuning baseline.

A checkpoint is a folder::

    ptune_config.json     the model's config ("prompt" or "classifier"), base model,
                          its fingerprint, ptune version
    prompt.safetensors    a P-tuned model: prompt-encoder parameters ("encoder.*") and the
                          materialized pseudo-token embeddings ("pseudo_embeddings")
    head.safetensors      a classifier: its head (the parameters the LM did not provide)
    lm/                   only when the LM was tuned: the LM (a classifier's whole
                          sequence-classification model) and its tokenizer
    trainer_state.json    only in a training checkpoint: step, best metric, history
    accelerate/           only in a run's last/: the trainer's resume state (Accelerate's
                          save_state: optimizer, scheduler, each process's RNG states)
    optimizer.pt          only in a checkpoint saved with an optimizer
    README.md             the model card: base model, template, verbalizer, metrics,
                          training config (:mod:`ptune.card`)

Every folder is written under a temporary name and renamed into place
(:func:`ptune.files.atomic_dir`), so a crash never leaves half a checkpoint. Nothing
non-finite is saved. ``ptune_config.json`` records the SHA-256 of every weights file
(``sha256``) and of the prompt's config: template, verbalizer, labels (``config_sha256``).

Loading checks, before any forward pass: the config's keys and value types; the content
hashes (a checkpoint edited or damaged after saving is refused; one saved without hashes,
by an earlier ptune, loads with a warning); the tensors' names, shapes, dtypes and
finiteness against the config; and that the base model is the one the checkpoint was
trained on (hidden size, vocabulary, tokenizer and a sample of its input embeddings),
saying what differs.

Example:
    >>> save_checkpoint(model, "runs/rte/best")                      # doctest: +SKIP
    >>> model = load_checkpoint("runs/rte/best")                      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .card import Card, RunFacts, write_card
from .config import PromptConfig
from .errors import CheckpointError, ConfigError, DataError
from .files import atomic_dir, read_json, sha256_file, write_json_atomic
from .finetune import ClassifierConfig, ClassifierModel
from .integrity import check_finite, config_digest, verify_hashes
from .lm import hub_kwargs, load_base
from .model import PTunedModel

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "load_training_state", "read_meta", "resolve",
           "base_fingerprint", "CONFIG_NAME"]

CONFIG_NAME = "ptune_config.json"
PROMPT_NAME = "prompt.safetensors"
HEAD_NAME = "head.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
STATE_NAME = "trainer_state.json"
_SAMPLE_ROWS = 8
_SAMPLE_DIMS = 16
READ_ERRORS = (OSError, SafetensorError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)
"""What reading a damaged weights, optimizer or resume-state file raises."""

Model = PTunedModel | ClassifierModel


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
    problems = [f"{key} {saved.get(key)} vs {now[key]}" for key in ("model_type", "hidden_size", "vocab_size")
                if saved.get(key) != now[key]]
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


# ----------------------------------------------------------------------------- saving
def _prompt_parts(model: PTunedModel) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    if model.encoder is not None:
        was = model.encoder.training
        model.encoder.eval()
        with torch.no_grad():
            tensors["pseudo_embeddings"] = model.encoder().detach().float().cpu().clone()
        model.encoder.train(was)
        tensors.update({f"encoder.{k}": v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()})
    meta = {"prompt": {**model.config.to_dict(), "kind": model.kind}, "n_pseudo": model.compiled.n_pseudo,
            "labels": list(model.answers.labels) if model.answers is not None else []}
    return PROMPT_NAME, tensors, meta


def _classifier_parts(model: ClassifierModel) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    state = model.seq.state_dict()
    tensors = {n: state[n].detach().cpu().contiguous() for n in model.head_names}
    meta = {"classifier": {**model.config.to_dict(), "kind": model.kind}, "head": list(model.head_names)}
    return HEAD_NAME, tensors, meta


def save_checkpoint(
    model: Model,
    path: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra: Mapping[str, Path] | None = None,
    facts: RunFacts | None = None,
    step: int | None = None,
    commit: bool = True,
) -> Path:
    """Save a P-tuned model's prompt or a classifier's head (and, if the LM was tuned, the
    LM) atomically to folder ``path``.

    Args:
        model: a :class:`~ptune.model.PTunedModel` or :class:`~ptune.finetune.ClassifierModel`.
        path: destination folder (replaced if it exists).
        optimizer: include its state (``optimizer.pt``).
        trainer_state: JSON-serializable training state (step, best metric, history).
        extra: folders moved into the checkpoint under the given names before it is put
            in place (e.g. the trainer's resume state).
        facts: what the model card reports besides the config (metrics, training config,
            notes); by default the best evaluation and config found in ``trainer_state``.
        step: the training step of these weights (recorded as ``step``).
        commit: put the folder in place now; False leaves it finished as ``.NAME.new``
            for :func:`ptune.files.commit_dir` (the trainer commits ``best/`` after ``last/``).

    Raises:
        TrainingError: a weight is NaN or infinite (nothing is written).
    """
    parts = _prompt_parts(model) if isinstance(model, PTunedModel) else _classifier_parts(model)
    weights_name, tensors, meta = parts
    check_finite(tensors, Path(path))
    with_lm = bool(model.lm_trainable or getattr(model, "own_lm", False))
    if with_lm:
        check_finite(dict((model.seq if isinstance(model, ClassifierModel) else model.lm).named_parameters()),
                      Path(path) / "lm")
    meta = {"ptune_version": __version__, **meta, "base_model": model.base_model,
            "base": base_fingerprint(model.lm, model.tokenizer), "lm_included": with_lm,
            **({"step": step} if step is not None else {})}
    with atomic_dir(path, commit=commit) as tmp:
        save_file(tensors, str(tmp / weights_name), metadata={"format": "pt", "ptune_version": __version__})
        if with_lm:
            _save_lm(model.seq if isinstance(model, ClassifierModel) else model.lm, tmp / "lm")
            model.tokenizer.save_pretrained(tmp / "lm")
        files = [tmp / weights_name] + sorted(f for f in (tmp / "lm").rglob("*") if f.is_file())
        meta["sha256"] = {f.relative_to(tmp).as_posix(): sha256_file(f) for f in files}
        meta["config_sha256"] = config_digest(meta)
        write_json_atomic(tmp / CONFIG_NAME, meta)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_NAME)
        if trainer_state is not None:
            write_json_atomic(tmp / STATE_NAME, trainer_state)
        for name, folder in (extra or {}).items():
            shutil.move(str(folder), str(tmp / name))
        write_card(tmp, model_card(model, meta, facts or _facts(trainer_state)))
    return Path(path)


def model_card(model: Model, meta: dict[str, Any], facts: RunFacts) -> Card:
    """The card of a checkpoint of ``model`` whose ``ptune_config.json`` holds ``meta``."""
    prompt = "prompt" in meta
    config = meta["prompt"] if prompt else meta["classifier"]
    what = "A P-tuned prompt" if prompt else "A fine-tuned classifier"
    usage = ("```python\nimport ptune\n\nmodel = ptune.load_checkpoint(\"PATH\")  # this folder\n"
             "print(model.predict([{...}]))  # one dict per example: label and scores\n```\n\n"
             "or `ptune predict --checkpoint PATH --data FILE`.")
    return Card(title=f"{what} for {meta['base_model']}" if meta.get("base_model") else what,
                base_model=meta.get("base_model"), config=config, n_pseudo=int(meta.get("n_pseudo", 0)),
                facts=facts, usage=usage)


def _facts(trainer_state: dict[str, Any] | None) -> RunFacts:
    """The best evaluation and the training config recorded in a trainer state."""
    if not trainer_state:
        return RunFacts()
    best = next((h for h in trainer_state.get("history", []) if h.get("step") == trainer_state.get("best_step")), None)
    return RunFacts(metrics=best, training=trainer_state.get("config"))


def _save_lm(lm: Any, folder: Path) -> None:
    """``lm.save_pretrained(folder)`` in whichever process calls it. Under a process group,
    transformers writes only on rank 0 and silently skips the others; a harness's unit that
    runs on another rank writes its own checkpoint, so this process is told to write too,
    and the folder is checked."""
    lm.should_save_on_this_rank = lambda is_main_process: is_main_process  # instance attribute, removed below
    try:
        lm.save_pretrained(folder)
    finally:
        del lm.should_save_on_this_rank
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: the LM was not written (transformers skipped this process)")


# ----------------------------------------------------------------------------- reading
def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a training run folder (its ``best/`` checkpoint)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / "best" / CONFIG_NAME).is_file():
        return path / "best"
    raise CheckpointError(f"{path}: not a ptune checkpoint (no {CONFIG_NAME}) nor a run folder with best/")


_META_TYPES: dict[str, tuple[type, ...]] = {
    "base": (dict,), "prompt": (dict,), "classifier": (dict,), "labels": (list,), "head": (list,),
    "n_pseudo": (int,), "lm_included": (bool,), "base_model": (str,), "sha256": (dict,), "config_sha256": (str,),
    "step": (int,), "ptune_version": (str,)}


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's ``ptune_config.json``, its structure checked; a run folder resolves
    to its ``best/``.

    Raises:
        CheckpointError: naming the file and the key that is missing or of the wrong type.
    """
    file = resolve(path) / CONFIG_NAME
    try:
        meta = read_json(file)
    except DataError as e:
        raise CheckpointError(f"damaged checkpoint config: {e}") from None
    if not isinstance(meta, dict) or "base" not in meta or not ("prompt" in meta) ^ ("classifier" in meta):
        raise CheckpointError(f"{file}: not a ptune checkpoint config")
    for key, kinds in _META_TYPES.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, kinds) or (kinds == (int,) and isinstance(value, bool))):
            raise CheckpointError(f"{file}: {key}: expected {kinds[0].__name__}, got {type(value).__name__}")
    for key in ("labels", "head"):
        if not all(isinstance(x, str) for x in meta.get(key) or []):
            raise CheckpointError(f"{file}: {key}: expected a list of strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in (meta.get("sha256") or {}).items()):
        raise CheckpointError(f"{file}: sha256: expected file -> hex digest")
    return meta


def _config(path: Path, meta: dict[str, Any]) -> PromptConfig | ClassifierConfig:
    try:
        if "classifier" in meta:
            return ClassifierConfig.from_dict(meta["classifier"])
        return PromptConfig.from_dict(meta["prompt"])
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG_NAME}: {e}") from None


def _base(path: Path, meta: dict[str, Any], base: Any, kind: str | None) -> tuple[Any, Any, str]:
    """The LM, tokenizer and base name a frozen-LM checkpoint runs on: ``base`` (a hub name,
    folder or loaded ``(model, tokenizer)``; default: the recorded base), checked against
    the recorded fingerprint."""
    if base is None or isinstance(base, str):
        base_name = base or meta["base_model"]
        lm, tokenizer, _ = load_base(base_name, kind)
    else:
        lm, tokenizer = base
        base_name = meta["base_model"]
    _check_fingerprint(meta["base"], lm, tokenizer, path, base_name)
    return lm, tokenizer, base_name


def _own_lm(path: Path, meta: dict[str, Any], base: Any, kind: str | None, classifier: bool) -> tuple[Any, Any]:
    if base is not None and not isinstance(base, str):
        raise CheckpointError(f"{path}: holds its own tuned LM; do not pass a base model")
    if not classifier:
        lm, tokenizer, _ = load_base(str(path / "lm"), kind)
        return lm, tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        return (AutoModelForSequenceClassification.from_pretrained(path / "lm", **hub_kwargs()),
                AutoTokenizer.from_pretrained(path / "lm", **hub_kwargs()))
    except (*READ_ERRORS, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / 'lm'}: cannot load the tuned LM: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_checkpoint(
    path: str | os.PathLike,
    base: str | tuple[torch.nn.Module, Any] | None = None,
    *,
    device: str | torch.device | None = None,
) -> Model:
    """Load a checkpoint: a :class:`~ptune.model.PTunedModel` or a
    :class:`~ptune.finetune.ClassifierModel`, whichever it holds.

    Args:
        path: checkpoint folder (or run folder: its ``best/``).
        base: the base model, as a hub name or folder, or an already loaded
            ``(model, tokenizer)``; default: the base recorded in the checkpoint. Not
            allowed when the checkpoint holds its own tuned LM.
        device: where to put the model.

    Raises:
        CheckpointError: the folder is not a checkpoint, or the base model is not the one
            the checkpoint was trained for.
    """
    path = resolve(path)
    meta = read_meta(path)
    classifier = "classifier" in meta
    config = _config(path, meta)
    verify_hashes(path, meta, CONFIG_NAME)
    if not classifier and list(config.verbalizer) != meta.get("labels", list(config.verbalizer)):
        raise CheckpointError(f"{path / CONFIG_NAME}: the verbalizer's labels are not in the recorded order {meta['labels']}")
    if meta.get("lm_included"):
        lm, tokenizer = _own_lm(path, meta, base, config.kind, classifier)
        base_name = meta.get("base_model") or str(path / "lm")
    else:
        lm, tokenizer, base_name = _base(path, meta, base, config.kind)
    if classifier:
        head = meta.get("head") if meta.get("lm_included") else None
        model: Model = ClassifierModel(lm, tokenizer, config, base_model=base_name, head=head)
    else:
        model = PTunedModel(lm, tokenizer, config, base_model=base_name)
    model.own_lm = bool(meta.get("lm_included"))
    _load_tensors(model, path, meta)
    if device is not None:
        model.to(device)
    model.eval()
    return model


def load_weights(model: Model, path: str | os.PathLike) -> None:
    """Put the trained weights of checkpoint ``path`` into ``model`` (a model of the same
    config, e.g. the trainer restoring ``best/``): the prompt or head and, when saved, the
    tuned LM.

    Raises:
        CheckpointError: another kind of model or config, or a frozen-LM checkpoint of
            another base.
    """
    path = resolve(path)
    meta = read_meta(path)
    key = "classifier" if isinstance(model, ClassifierModel) else "prompt"
    saved = meta.get(key)
    if saved is None or _config(path, meta) != type(model.config).from_dict(
            {**model.config.to_dict(), "kind": model.kind}):
        raise CheckpointError(f"{path}: saved for another {key} config ({saved or 'none'})")
    verify_hashes(path, meta, CONFIG_NAME)
    if meta.get("lm_included") and (path / "lm").is_dir():
        target = model.seq if isinstance(model, ClassifierModel) else model.lm
        try:
            state = type(target).from_pretrained(path / "lm", **hub_kwargs()).state_dict()
        except (*READ_ERRORS, KeyError, TypeError) as e:
            raise CheckpointError(f"{path / 'lm'}: cannot load the tuned LM: {_first_line(e)}") from None
        target.load_state_dict(state)
    else:
        _check_fingerprint(meta["base"], model.lm, model.tokenizer, path, model.base_model)
    _load_tensors(model, path, meta)


def _load_tensors(model: Model, path: Path, meta: dict[str, Any]) -> None:
    """The prompt encoder's or the head's tensors, checked against the model's: names,
    shapes, dtypes, finiteness, and the pseudo embeddings' shape."""
    if isinstance(model, ClassifierModel):
        module, prefix, name = model.seq, "", HEAD_NAME
        expected = {n: v for n, v in module.state_dict().items() if n in set(model.head_names)}
    else:
        if meta.get("n_pseudo", model.compiled.n_pseudo) != model.compiled.n_pseudo:
            raise CheckpointError(f"{path / CONFIG_NAME}: n_pseudo {meta['n_pseudo']} but the template has "
                                  f"{model.compiled.n_pseudo} pseudo tokens")
        if model.encoder is None:
            return
        module, prefix, name = model.encoder, "encoder.", PROMPT_NAME
        expected = {**module.state_dict(), "pseudo_embeddings": torch.empty(model.compiled.n_pseudo, model.hidden_size)}
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{path}: {name} is missing")
    try:
        tensors = load_file(str(file))
    except READ_ERRORS as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({_first_line(e)})") from None
    state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}
    optional = {"pseudo_embeddings"} if prefix else set()
    wrong = sorted(k for k in expected.keys() & state.keys() if state[k].shape != expected[k].shape)
    missing, unexpected = set(expected) - set(state) - optional, set(state) - set(expected)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{file}: does not fit the model (missing {sorted(missing)}, unexpected "
                              f"{sorted(unexpected)}, wrong shape {wrong})")
    for k, v in state.items():
        if v.is_floating_point() != expected[k].is_floating_point():
            raise CheckpointError(f"{file}: {k} is {v.dtype}, expected {expected[k].dtype}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{file}: {k} holds NaN or infinite values")
    pseudo = state.pop("pseudo_embeddings", None)
    module.load_state_dict(state, strict=False)
    if pseudo is not None:  # serve the materialized embeddings exactly
        model.encoder.eval()
        model.encoder.set_cache(pseudo.to(model.encoder.embedding.weight.dtype))


_STATE_TYPES: dict[str, tuple[type, ...]] = {"step": (int,), "best": (int, float, type(None)),
                                             "best_loss": (int, float, type(None)), "best_step": (int, type(None)),
                                             "bad_evals": (int,), "history": (list,)}


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(trainer_state, optimizer_state or None) of a training checkpoint.

    Raises:
        CheckpointError: naming the file: missing, damaged, or a value of the wrong type.
    """
    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise CheckpointError(f"{path}: no {STATE_NAME}; is this a training checkpoint (a run's last/)?")
    try:
        state = read_json(state_file)
    except DataError as e:
        raise CheckpointError(f"damaged trainer state: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file}: expected an object, got {type(state).__name__}")
    for key, kinds in _STATE_TYPES.items():
        value = state.get(key)
        if key not in state and key != "step":
            continue
        if isinstance(value, bool) or not isinstance(value, kinds) or (
                isinstance(value, int) and value < 0 and key != "best"):
            raise CheckpointError(f"{state_file}: {key}: expected {' or '.join(k.__name__ for k in kinds)}"
                                  f"{' >= 0' if int in kinds and key != 'best' else ''}, got {value!r:.40}")
    if not all(isinstance(h, dict) and isinstance(h.get("step"), int) for h in state.get("history", [])):
        raise CheckpointError(f"{state_file}: history: expected records with a step")
    opt = None
    if (path / OPTIMIZER_NAME).is_file():
        try:
            opt = torch.load(path / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
        except READ_ERRORS as e:
            raise CheckpointError(f"{path / OPTIMIZER_NAME}: damaged ({_first_line(e)})") from None
    return state, opt
