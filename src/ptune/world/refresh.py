"""Bringing a world folder built by an older ptune up to date, where that is exact.

Each relation's hand-written wordings (``manual_templates`` in ``lama/relations.jsonl``,
what ``ptune demo --wordings`` and ``ptune probe --wording`` read) are newer than the
first worlds. That file is a pure function of the world's config
(:func:`ptune.world.facts.relations_jsonl`) and no LM reads it while pretraining, so
:func:`refresh_wordings` writes it again, byte for byte what a fresh build writes, when
the folder's copy differs from it only by missing wordings, and refuses otherwise: the
world must then be built again.

Example:
    >>> refresh_wordings(".cache/ptune/world-tiny-seed1")               # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data import read_examples
from ..errors import ConfigError, DataError
from ..files import read_json, write_text_atomic
from .build import MANIFEST, verify_manifest, write_manifest
from .facts import relation_records, relations_jsonl
from .spec import WorldConfig

__all__ = ["WORDINGS_FILE", "refresh_wordings"]

WORDINGS_FILE = "lama/relations.jsonl"
"""The world's file that holds the wordings, relative to the world folder."""
WORDINGS_KEY = "manual_templates"


def _without_wordings(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != WORDINGS_KEY}


def refresh_wordings(world_dir: str | os.PathLike[str], *, write: bool = True,
                     fix: str = "build the world again (ptune world build)") -> bool:
    """Add the hand-written wordings to a world's ``lama/relations.jsonl`` where it lacks them.

    The file is replaced with what this ptune's :func:`~ptune.world.build_world` writes for
    the config in ``world.json`` only when every relation's line equals that, either as is or
    without ``manual_templates``. A ``MANIFEST.json`` in the folder is checked before and
    written again after.

    Args:
        world_dir: the world folder.
        write: ``False`` checks only (what other processes do while one writes).
        fix: what the user should do when the file cannot be refreshed (ends the error).

    Returns:
        Whether the file lacked wordings (and was written again, with ``write``).

    Raises:
        DataError: the file lacks wordings and differs from a fresh build's in more than
            them (or ``world.json`` records no world config); names the file and ``fix``.
    """
    root = Path(world_dir)
    path = root / WORDINGS_FILE
    current = read_examples(path).examples
    missing = [r.get("relation", "?") for r in current if WORDINGS_KEY not in r]
    if not missing:
        return False
    lacks = (f"has no {WORDINGS_KEY} (the hand-written wordings that the wording study probes) for "
             f"{len(missing)} of its {len(current)} relations")
    try:
        config = WorldConfig.from_dict(read_json(root / "world.json")["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise DataError(str(path), f"{lacks}, and {root / 'world.json'} records no world config ({e}) to write "
                                   f"them from; {fix}") from None
    fresh = relation_records(config)
    exact = len(current) == len(fresh) and all(c in (f, _without_wordings(f)) for c, f in zip(current, fresh))
    if not exact:
        raise DataError(str(path), f"{lacks}, and differs from what this ptune writes for the world's config in "
                                   f"more than them, so they cannot be added exactly; {fix}")
    if write:
        manifest = (root / MANIFEST).is_file()
        if manifest:
            verify_manifest(root)
        write_text_atomic(path, relations_jsonl(config))
        if manifest:
            write_manifest(root)
    return True
