"""SuperGLUE submissions: ``--eval-set test`` predicts the unlabelled test.jsonl of every task, and
``predictions/<Task>.jsonl`` hold the leaderboard's format (idx, label values as SuperGLUE's
files spell them, MultiRC nested), on small slices of the real files and a tiny model."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from ptune.cli import main
from ptune.errors import DataError
from ptune.tasks import superglue as sg
from ptune.tasks.submission import submission_rows
from ptune.tasks.superglue_data import TASKS
from ptune.tiny import tiny_model, train_tokenizer

FEWGLUE = SHARED_DATA / "fewglue"
needs_data = pytest.mark.skipif(not (FEWGLUE / "RTE" / "train.jsonl").is_file(),
                                reason=f"FewGLUE not found at {FEWGLUE} (the shared data folder is absent)")


def _unlabelled(task: str, obj: dict) -> dict:
    """A line as SuperGLUE's test.jsonl has it: no label, no ReCoRD answers."""
    obj = {k: v for k, v in obj.items() if k != "label"}
    if task == "MultiRC":
        for q in obj["passage"]["questions"]:
            q["answers"] = [{k: v for k, v in a.items() if k != "label"} for a in q["answers"]]
    if task == "ReCoRD":
        obj["qas"] = [{k: v for k, v in qa.items() if k != "answers"} for qa in obj["qas"]]
    return obj


def _lines(task: str, split: str, n: int) -> list[dict]:
    path = FEWGLUE / task / f"{split}.jsonl"
    if not path.is_file():
        return []
    objs = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    if task == "MultiRC":  # two questions a passage keep the slices small
        for o in objs:
            o["passage"]["questions"] = o["passage"]["questions"][:2]
    return objs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sg-test")
    for task in TASKS:
        (root / task).mkdir()
        for split, n in (("train", 6), ("dev32", 3), ("val", 3)):
            objs = _lines(task, split, n)
            if objs:
                (root / task / f"{split}.jsonl").write_text("".join(json.dumps(o) + "\n" for o in objs))
        test = [_unlabelled(task, o) for o in (_lines(task, "val", 3) or _lines(task, "dev32", 3))]
        (root / task / "test.jsonl").write_text("".join(json.dumps(o) + "\n" for o in test))
    return root


@needs_data
def test_eval_set_test_writes_every_task_in_the_submission_format(data, tmp_path):
    corpus = [line[:2000] for t in TASKS for line in (data / t / "train.jsonl").read_text().splitlines()]
    tok = train_tokenizer("bert", corpus, vocab_size=800, extra_tokens=["Yes", "No", "Maybe"])
    config = sg.SuperGlueConfig(tasks=TASKS, eval_set="test", seeds=(1,), prompt={"max_length": 160},
                                train={"steps": 1, "eval_every": 1, "batch_size": 2})
    res = sg.run_superglue("tiny", data, tmp_path, config,
                           loader=lambda: (tiny_model("bert", tok, seed=0, positions=512), tok, "masked"))
    for task in TASKS:
        test = [json.loads(line) for line in (data / task / "test.jsonl").read_text().splitlines()]
        rows = [json.loads(line) for line in (tmp_path / "predictions" / f"{task}.jsonl").read_text().splitlines()]
        assert res["tasks"][task]["predictions"] == {"file": f"predictions/{task}.jsonl", "seed": 1, "split": "test"}
        if task == "MultiRC":  # nested exactly as the test file: passages > questions > answers
            assert [(r["idx"], [(q["idx"], [a["idx"] for a in q["answers"]]) for q in r["passage"]["questions"]])
                    for r in rows] == [(o["idx"], [(q["idx"], [a["idx"] for a in q["answers"]])
                                                   for q in o["passage"]["questions"]]) for o in test]
            assert {a["label"] for r in rows for q in r["passage"]["questions"] for a in q["answers"]} <= {0, 1}
            assert all(set(r) == {"idx", "passage"} and set(r["passage"]) == {"questions"} for r in rows)
            continue
        assert all(set(r) == {"idx", "label"} for r in rows)
        if task == "ReCoRD":  # one row per query: an entity of its passage
            assert [r["idx"] for r in rows] == [qa["idx"] for o in test for qa in o["qas"]]
            entities = [{o["passage"]["text"][e["start"]:e["end"] + 1] for e in o["passage"]["entities"]}
                        for o in test for _ in o["qas"]]
            assert all(r["label"] in ents for r, ents in zip(rows, entities))
            continue
        assert [r["idx"] for r in rows] == [o["idx"] for o in test]
        labels = [r["label"] for r in rows]
        if task in ("BoolQ", "WiC", "WSC"):
            assert all(isinstance(v, bool) for v in labels)
        elif task == "COPA":  # the choice's index, not its text
            assert all(type(v) is int and v in (0, 1) for v in labels)
        else:
            assert set(labels) <= set(sg.LABELS[task])


@needs_data
def test_missing_test_file_is_one_line(data, tmp_path, capsys):
    (tmp_path / "RTE").mkdir()
    for split in ("train", "dev32"):
        (tmp_path / "RTE" / f"{split}.jsonl").write_text((data / "RTE" / f"{split}.jsonl").read_text())
    assert main(["superglue", "--task", "RTE", "--model", "unused", "--data-dir", str(tmp_path), "--output",
                 str(tmp_path / "out"), "--eval-set", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptune: error: ") and "no test.jsonl for RTE" in err and "\n" not in err


def test_submission_rows_per_task():
    assert submission_rows("BoolQ", [{"idx": 3, "label": "True"}, {"idx": 4, "label": "False"}]) == [
        {"idx": 3, "label": True}, {"idx": 4, "label": False}]
    assert submission_rows("COPA", [{"idx": 0, "label": 1}]) == [{"idx": 0, "label": 1}]
    assert submission_rows("RTE", [{"idx": 0, "label": "not_entailment"}]) == [{"idx": 0, "label": "not_entailment"}]
    assert submission_rows("MultiRC", [{"passage_idx": 0, "question_idx": 0, "idx": 0, "label": "1"},
                                       {"passage_idx": 0, "question_idx": 0, "idx": 1, "label": "0"},
                                       {"passage_idx": 0, "question_idx": 1, "idx": 2, "label": "0"},
                                       {"passage_idx": 1, "question_idx": 2, "idx": 3, "label": "1"}]) == [
        {"idx": 0, "passage": {"questions": [{"idx": 0, "answers": [{"idx": 0, "label": 1}, {"idx": 1, "label": 0}]},
                                             {"idx": 1, "answers": [{"idx": 2, "label": 0}]}]}},
        {"idx": 1, "passage": {"questions": [{"idx": 2, "answers": [{"idx": 3, "label": 1}]}]}}]
    with pytest.raises(DataError, match=r"run/predictions.jsonl row 0: field 'label': 'took the bus' is not a choice"):
        submission_rows("COPA", [{"idx": 0, "label": "took the bus"}], "run/predictions.jsonl")
    with pytest.raises(DataError, match="'yes' is not True or False"):
        submission_rows("WSC", [{"idx": 0, "label": "yes"}])
