"""What the task harnesses share: a ``results.json`` that a rerun resumes, and tables.

A harness run (LAMA probing, SuperGLUE) writes its results after every finished unit of
work (a relation and method, a task and seed). Rerunning it on the same folder with the
same settings picks up the finished units and runs only the rest; other settings are an
error rather than a silent mix of two runs.

Example:
    >>> results = resume_results("runs/lama", {"model": "bert"}, "relations")   # doctest: +SKIP
    >>> markdown_table(["task", "score"], [["RTE", "71.2"]])
    '| task | score |\\n|---|---|\\n| RTE | 71.2 |\\n'
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..distributed import is_main
from ..config import settings_differences
from ..errors import ConfigError, DataError
from ..files import dumps_json, loads_json, read_json, remove_temporaries

__all__ = ["RESULTS_FILE", "resume_results", "sweep_temporaries", "summarize_seeds", "mean_std_cell", "markdown_table"]

RESULTS_FILE = "results.json"


def resume_results(output_dir: str | Path, settings: dict[str, Any], body: str, *,
                   may_grow: Sequence[str] = ()) -> dict[str, Any]:
    """``{"settings": settings, body: {...}}``: empty, or the finished part of an earlier run
    in ``output_dir`` made with the same settings. Temporaries that a killed run left in the
    folder are removed (by rank 0, before any unit runs).

    Args:
        output_dir: the run folder holding ``results.json``.
        settings: what the results depend on; recorded in the file.
        body: the key of the per-unit results (``"relations"``, ``"tasks"``).
        may_grow: settings that may differ from the earlier run's (lists of units that a
            rerun extends, e.g. more seeds).

    Raises:
        ConfigError: the folder holds results made with other settings.
        DataError: its ``results.json`` is not a JSON object.
    """
    path = Path(output_dir) / RESULTS_FILE
    settings = loads_json(dumps_json(settings), "settings")  # as the file records them: tuples become lists
    results: dict[str, Any] = {"settings": settings, body: {}}
    if not path.is_file():
        _sweep(output_dir)
        return results
    previous = read_json(path)
    if not isinstance(previous, dict) or not isinstance(previous.get(body, {}), dict):
        raise DataError(str(path), f"expected an object with {body!r} results")

    def fixed(s: Any) -> dict[str, Any]:
        return {k: v for k, v in (s or {}).items() if k not in may_grow}

    if fixed(previous.get("settings")) != fixed(settings):
        raise ConfigError("output", f"{output_dir} holds a run with other settings "
                                    f"({settings_differences(fixed(previous.get('settings')), fixed(settings))}); "
                                    "rerun with that run's settings to resume it, or choose another folder")
    results[body] = previous.get(body, {})
    _sweep(output_dir)
    return results


def _sweep(output_dir: str | Path) -> None:
    if is_main():  # before any unit runs (other ranks wait for rank 0's list of units)
        sweep_temporaries(output_dir)


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders (``.NAME.tmp-*``) that a killed run left
    anywhere under ``folder`` (results files, checkpoints); returns them. Only for a folder
    that this process holds (the harnesses lock their output folder)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    gone: list[Path] = []
    for parent in sorted({p.parent for p in root.rglob(".*.tmp-*")}, key=lambda p: len(p.parts)):
        if parent.is_dir() and not any(g in parent.parents for g in gone):
            gone += remove_temporaries(parent)
    return gone


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table: the header row, the rule, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize_seeds(runs: dict[str, dict[str, Any]], splits: Sequence[str] = ("val", "dev32", "dev")) -> dict[str, Any]:
    """Mean and std over the runs (one per seed) of every metric of each split; ``n`` as is."""
    out: dict[str, Any] = {"seeds": len(runs)}
    for split in splits:
        rows = [r[split] for r in runs.values() if split in r]
        if rows:
            keys = [k for k in rows[0] if k != "n"]
            out[split] = {k: _mean_std([r[k] for r in rows]) for k in keys}
            out[split]["n"] = rows[0].get("n")
    return out


def mean_std_cell(stats: dict[str, Any] | None, keys: Sequence[str]) -> str:
    """``"71.2 ± 1.3 / 65.0"``: the metrics ``keys`` of :func:`summarize_seeds` in percent."""
    if not stats:
        return "–"
    parts = []
    for k in keys:
        m = stats.get(k)
        if m is None:
            continue
        parts.append(f"{100 * m['mean']:.1f}" + (f" ± {100 * m['std']:.1f}" if m["std"] else ""))
    return " / ".join(parts) or "–"
