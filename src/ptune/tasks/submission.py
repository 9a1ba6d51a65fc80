"""SuperGLUE prediction files in the leaderboard's submission format.

``ptune superglue`` writes ``predictions/<Task>.jsonl`` for each task it ran: the predictions
of the seed with the best dev32 score on the split ``--eval-set`` names (``val`` or SuperGLUE's
unlabelled ``test``), one JSON object a line, as the SuperGLUE leaderboard takes them::

    BoolQ.jsonl    {"idx": 0, "label": true}             WiC, WSC: the same (true/false)
    CB.jsonl       {"idx": 0, "label": "entailment"}     RTE: "entailment"/"not_entailment"
    COPA.jsonl     {"idx": 0, "label": 1}                the index of the chosen alternative
    ReCoRD.jsonl   {"idx": 0, "label": "Naomi"}          idx of the query; the chosen entity
    MultiRC.jsonl  {"idx": 0, "passage": {"questions": [{"idx": 0, "answers": [{"idx": 0, "label": 1}]}]}}

Labels are spelled as SuperGLUE's own data files spell them (JSON booleans for BoolQ, WiC and
WSC; 0/1 for MultiRC's answers). ``cd predictions && zip ../submission.zip *.jsonl`` gives the
archive the leaderboard uploads (with the diagnostics AX-b and AX-g added, which ptune does not
predict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from ..files import loads_json, read_text, write_jsonl_atomic
from .superglue_data import TASKS

__all__ = ["prediction_rows", "submission_rows", "publish", "EVAL_SETS"]

EVAL_SETS = ("val", "test")
_BOOLEAN = ("BoolQ", "WiC", "WSC")


def prediction_rows(task: str, labels: Sequence[Any], examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per example as a run keeps them: its idx (MultiRC: passage, question and answer
    idx) and the predicted label (``"True"``, ``"entailment"``, COPA's choice index, ReCoRD's entity)."""
    rows = []
    for label, ex in zip(labels, examples):
        row: dict[str, Any] = {"idx": ex["idx"]}
        if task == "MultiRC":
            row = {"passage_idx": ex["passage_idx"], "question_idx": ex["question_idx"], "idx": ex["idx"]}
        row["label"] = label
        rows.append(row)
    return rows


def submission_rows(task: str, rows: Sequence[dict[str, Any]], source: str = "predictions") -> list[dict[str, Any]]:
    """A task's :func:`prediction_rows` in the leaderboard's format (see the module doc)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if task == "MultiRC":
        return _multirc(rows)
    out = []
    for n, row in enumerate(rows):
        label = row["label"]
        if task in _BOOLEAN:
            if label not in ("True", "False"):
                raise DataError(f"{source} row {n}", f"{label!r} is not True or False", field="label")
            label = label == "True"
        elif task == "COPA" and (isinstance(label, bool) or label not in (0, 1)):
            raise DataError(f"{source} row {n}", f"{label!r} is not a choice index (0 or 1)", field="label")
        out.append({"idx": row["idx"], "label": label})
    return out


def _multirc(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answers nested under their question and passage, in the order they came."""
    passages: dict[Any, dict[Any, list[dict[str, Any]]]] = {}
    for row in rows:
        questions = passages.setdefault(row["passage_idx"], {})
        questions.setdefault(row["question_idx"], []).append({"idx": row["idx"], "label": int(row["label"])})
    return [{"idx": p, "passage": {"questions": [{"idx": q, "answers": answers} for q, answers in qs.items()]}}
            for p, qs in passages.items()]


def publish(out: Path, task: str, entry: dict[str, Any], eval_set: str) -> None:
    """Write ``predictions/<Task>.jsonl`` from the run (seed) with the best dev32 score and record
    in ``entry`` which seed and split it came from. Runs of a task without the split (ReCoRD has
    no val in FewGLUE) write nothing."""
    runs = entry["runs"]

    def dev_score(seed: str) -> float:
        return runs[seed].get("dev32", runs[seed].get("dev", {})).get("score", float("-inf"))

    best = max(runs, key=lambda s: (dev_score(s), -int(s)))
    src = out / "runs" / task / f"seed{best}" / run_file(eval_set)
    if src.is_file():
        dst = write_jsonl_atomic(out / "predictions" / f"{task}.jsonl", submission_rows(task, _rows(src), str(src)))
        entry["predictions"] = {"file": str(dst.relative_to(out)), "seed": int(best), "split": eval_set}


def run_file(eval_set: str) -> str:
    """The file of a run's predictions on ``eval_set``."""
    return "predictions.jsonl" if eval_set == "val" else f"{eval_set}_predictions.jsonl"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [loads_json(line, f"{path}:{n}") for n, line in enumerate(read_text(path).splitlines(), 1) if line.strip()]
