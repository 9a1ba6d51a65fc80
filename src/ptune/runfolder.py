"""A training run folder after a crash: put back in the state of its last checkpoint.

The trainer writes, at every evaluation, a staged ``best/`` (when the dev metric improved,
finished as ``.best.new``), then ``last/``, and only then commits ``best/``; every folder
goes in place by two renames (:mod:`ptune.files`). A process killed at any point leaves
one of a few states, and :func:`recover_run` maps each to a consistent folder:

* temporary files and folders (``.NAME.tmp-*``, the trainer's staging of its resume state)
  are removed;
* ``last/`` is finished (a complete ``.last.new`` replaces a missing or older ``last/``) or
  put back from ``.last.old``;
* a staged ``best/`` is committed when ``last/`` says it is the best so far (the kill came
  between the two commits), and removed otherwise;
* ``metrics.jsonl`` is cut back to the records of steps up to ``last/``'s step (and a line
  torn by the kill is dropped), so a resumed run logs each step once.

Example:
    >>> recover_run("runs/rte")                                        # doctest: +SKIP
    >>> holds_run("runs/rte")                                          # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .checkpoint import load_training_state, read_meta
from .config import settings_differences
from .errors import ConfigError, PtuneError
from .files import crash_point, dumps_json, recover_dir, remove_temporaries, write_text_atomic

__all__ = ["recover_run", "holds_run", "check_resume", "truncate_metrics", "MetricsLog", "METRICS_NAME", "STAGING_NAME"]

METRICS_NAME = "metrics.jsonl"
STAGING_NAME = ".last.accelerate"  # where the trainer collects Accelerate's state before it moves into last/


def holds_run(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds (part of) a training run: a ``last/`` checkpoint or a metrics log."""
    out = Path(out)
    return (out / "last").exists() or (out / METRICS_NAME).exists()


def check_resume(out: Path, wanted: Any) -> None:
    """Before loading anything: ``out`` (recovered first, under its lock) holds a run to
    resume, started with the prompt config ``wanted``.

    Raises:
        ConfigError: ``--resume``: nothing to resume, or a run with another prompt.
    """
    recover_run(out)
    if not holds_run(out):
        raise ConfigError("--resume", f"{out} holds no run to resume (no last/)")
    if not (out / "last").is_dir():
        return  # killed before its first checkpoint: it starts again
    now = {k: v for k, v in wanted.to_dict().items() if k != "kind"}
    saved = {k: v for k, v in read_meta(out / "last")["prompt"].items() if k in now}
    if saved != now:
        raise ConfigError("--resume", f"the run in {out} was started with other prompt settings "
                                      f"({settings_differences(saved, now)}); resume it with those")


def _staged_best_is_current(out: Path) -> bool:
    """Whether the staged ``.best.new`` is the best that ``last/`` records."""
    if not (out / "last").is_dir():
        return False
    try:
        state, _ = load_training_state(out / "last")
        step = read_meta(out / ".best.new").get("step")
    except PtuneError:
        return False
    return step is not None and step == state.get("best_step")


def recover_run(out: str | os.PathLike) -> int:
    """Bring run folder ``out`` back to its last checkpoint (see the module doc); returns
    that checkpoint's step (0 when there is none). Call it holding the folder's lock."""
    out = Path(out)
    if not out.is_dir():
        return 0
    remove_temporaries(out)
    shutil.rmtree(out / STAGING_NAME, ignore_errors=True)
    recover_dir(out / "last", promote=True)
    recover_dir(out / "best", promote=_staged_best_is_current(out))
    step = 0
    if (out / "last").is_dir():
        step = int(load_training_state(out / "last")[0]["step"])
    truncate_metrics(out / METRICS_NAME, step)
    return step


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of steps up to ``step`` (written atomically); drop torn lines."""
    if not path.is_file():
        return
    kept = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    if "".join(kept) != text:
        write_text_atomic(path, "".join(kept))


class MetricsLog:
    """``metrics.jsonl`` of run folder ``out`` (None: no log), appended one strict JSON
    line per record and flushed, so a kill loses at most the line being written."""

    def __init__(self, out: Path | None):
        self.fh = open(out / METRICS_NAME, "a", encoding="utf-8") if out is not None else None

    def write(self, record: dict[str, Any]) -> None:
        if self.fh is not None:
            self.fh.write(dumps_json(record) + "\n")
            self.fh.flush()
            crash_point("metrics-logged")

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
