"""What a saved checkpoint must be: finite weights, and content hashes that loading verifies.

``save_checkpoint`` refuses non-finite weights (:func:`check_finite`) and records in
``ptune_config.json`` the SHA-256 of every weights file (``sha256``) and of what the prompt
is (``config_sha256``, :func:`config_digest`: template, verbalizer, labels, encoder and
the other prompt settings); loading recomputes both (:func:`verify_hashes`). The hashes
catch edits and damage; they are not signatures.

Example:
    >>> verify_hashes(Path("runs/rte/best"), meta, "ptune_config.json")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError, TrainingError
from .files import sha256_file

__all__ = ["check_finite", "config_digest", "verify_hashes", "CONFIG_KEYS"]

CONFIG_KEYS = ("prompt", "classifier", "labels", "n_pseudo", "head", "lm_included")
"""The keys of ``ptune_config.json`` that ``config_sha256`` covers."""
logger = logging.getLogger(__name__)


def check_finite(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`TrainingError` naming the tensors of ``tensors`` that hold NaN or infinity."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingError(f"{path}: {', '.join(sorted(bad))} hold NaN or infinite values; not saved "
                            "(training diverged: a lower learning rate or gradient clipping helps)")


def config_digest(meta: Mapping[str, Any]) -> str:
    """SHA-256 of what a checkpoint's config says the prompt is: ``config_sha256``."""
    covered = {k: meta[k] for k in CONFIG_KEYS if k in meta}
    return hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()


def verify_hashes(path: Path, meta: Mapping[str, Any], config_name: str) -> None:
    """The content hashes recorded at save against the config and the files of ``path`` now.

    Raises:
        CheckpointError: the config or a file changed since saving, or a file is missing. A
            checkpoint saved without hashes (by an earlier ptune) only logs a warning.
    """
    file = path / config_name
    if "config_sha256" not in meta:
        logger.warning("%s: saved without content hashes (by ptune %s); its files are not verified", path,
                       meta.get("ptune_version", "before 0.1"))
        return
    if meta["config_sha256"] != config_digest(meta):
        raise CheckpointError(f"{file}: the template, verbalizer or prompt settings were changed after the "
                              "checkpoint was saved (config_sha256 differs); a prompt only works with the config "
                              "it was trained with")
    for rel, digest in (meta.get("sha256") or {}).items():
        target = path / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise CheckpointError(f"{file}: sha256: {rel!r} is not a file inside the checkpoint")
        if not target.is_file():
            raise CheckpointError(f"{target}: missing (the checkpoint was saved with it)")
        if sha256_file(target) != digest:
            raise CheckpointError(f"{target}: its content differs from the SHA-256 recorded when it was saved "
                                  "(edited or damaged)")
