"""SuperGLUE readers: the real FewGLUE files, train-time augmentation, and bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from ptune.errors import ConfigError, DataError
from ptune.tasks.superglue_data import (LABELS, TASKS, canonical_task, mirror_copa, read_task,
                                         record_train_examples, split_path)

FEWGLUE = SHARED_DATA / "fewglue"
VAL_SIZES = {"BoolQ": 3270, "CB": 56, "COPA": 100, "RTE": 277, "WiC": 638, "WSC": 104, "MultiRC": 4848}


def _splits(task: str) -> tuple[str, ...]:
    return ("train", "dev32") if task == "ReCoRD" else ("train", "dev32", "val")


def _real(task: str, split: str):
    if not FEWGLUE.is_dir():
        pytest.skip(f"FewGLUE data not found: {FEWGLUE}")
    return read_task(task, split_path(FEWGLUE, task, split))


# ---------------------------------------------------------------- real data


@pytest.mark.parametrize("task", TASKS)
def test_real_files_load_with_valid_labels(task):
    for split in _splits(task):
        recs = _real(task, split)
        path = split_path(FEWGLUE, task, split)
        lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        assert recs.skipped == []
        assert len(recs.sources) == len(recs.examples)
        assert all(s.startswith(f"{path}:") for s in recs.sources)
        if task in ("MultiRC", "ReCoRD"):
            assert len({s for s in recs.sources}) == lines  # every line gives examples
        else:
            assert len(recs) == lines
        if split == "train" and task not in ("MultiRC", "ReCoRD"):
            assert len(recs) == 32
        if split == "val":
            assert len(recs) == VAL_SIZES[task]
        for ex in recs.examples:
            assert "idx" in ex and "label" in ex
            if LABELS[task] is None:
                assert isinstance(ex["label"], int) and 0 <= ex["label"] < len(ex["choices"])
            else:
                assert ex["label"] in LABELS[task]


def test_real_multirc_val_structure():
    recs = _real("MultiRC", "val")
    assert len(recs) == 4848
    assert len({(ex["passage_idx"], ex["question_idx"]) for ex in recs.examples}) == 953
    assert len({ex["passage_idx"] for ex in recs.examples}) == 83
    assert len({ex["idx"] for ex in recs.examples}) == 4848
    first = _real("MultiRC", "train").examples[0]
    assert first["answer"] == "He welcomes him with open arm"
    assert (first["idx"], first["question_idx"], first["passage_idx"], first["label"]) == (333, 56, 6, "0")
    assert first["question"] == "How does Jason react to the stranger who arrives with Susan?"
    assert first["passage"].startswith("A stranger in town meets pretty young Susan")


def test_real_examples_per_task():
    ex = _real("BoolQ", "train").examples[0]
    assert (ex["idx"], ex["label"], ex["question"]) == (7457, "False", "is ghost in the shell based on the anime")
    ex = _real("CB", "train").examples[0]
    assert (ex["idx"], ex["label"], ex["hypothesis"]) == (44, "entailment", "something was amiss")
    ex = _real("RTE", "train").examples[0]
    assert ex["hypothesis"] == "JFK airport is in New York." and ex["hypothesis_stem"] == "JFK airport is in New York"
    assert ex["label"] == "not_entailment"
    ex = _real("WiC", "val").examples[1]
    assert (ex["word"], ex["label"]) == ("stripe", "False")
    assert ex["sentence1"][ex["start1"]:ex["end1"]] == "stripe"
    copa = _real("COPA", "train").examples
    assert copa[0]["choices"] == ["the chandelier dropped from the ceiling",
                                  "the chandelier's lights flickered on and off"]
    assert (copa[0]["connective"], copa[0]["premise_stem"], copa[0]["label"]) == (
        "because", "The chandelier shattered on the floor", 0)
    assert copa[1]["connective"] == "so" and copa[1]["label"] == 1
    assert copa[5]["choices"] == ["I sought a refund", "I paid her back"]  # "I" keeps its capital


def test_real_wsc_marking_and_repairs():
    train = _real("WSC", "train").examples
    assert train[0]["text_marked"].endswith("because she figured *it* was easier to pronounce.")
    assert train[1]["text_marked"] == ("The city councilmen refused the demonstrators a permit because "
                                       "*they* advocated violence.")
    assert train[1]["choices"] == ["The demonstrators"]
    # idx 137: the pronoun is glued to punctuation ('him,"'); only "him" is marked
    assert train[3]["idx"] == 137 and '"Good for *him*," he said.' in train[3]["text_marked"]
    val = {ex["idx"]: ex for ex in _real("WSC", "val").examples}
    # idx 42: span2_index points at "use" in "use it"; repaired by one word
    assert val[42]["span2_index"] == 31 and "to use *it* ," in val[42]["text_marked"]
    for split in ("train", "dev32", "val"):
        for ex in _real("WSC", split).examples:
            assert ex["text_marked"].count("*") == 2
            words = ex["text"].split(" ")
            assert ex["span2"].lower() in words[ex["span2_index"]].lower()


def test_real_record_questions():
    recs = _real("ReCoRD", "train")
    assert len(recs) == 32  # one question per passage in FewGLUE
    for ex in recs.examples:
        assert ex["query_left"] + "@placeholder" + ex["query_right"] == ex["query"]
        assert ex["choices"][ex["label"]] in ex["answers"]
        assert ex["choices"] == ex["entities"] and len(set(ex["entities"])) == len(ex["entities"])
        assert "@highlight" not in ex["passage"]
    first = recs.examples[0]
    assert (first["idx"], first["passage_idx"]) == (4756, 3088)
    assert first["answers"] == ["Olimpija Ljubljana"]  # two spans of the same text: one answer
    assert first["entities"][first["label"]] == "Olimpija Ljubljana"
    assert first["entities"][:3] == ["Hamish Mackay", "Diego Costa", "Kurt Zouma"]
    assert "\n- Nik Kapun put the hosts ahead in first half\n" in first["passage"]


def test_mirror_copa_doubles_and_flips():
    recs = _real("COPA", "train")
    both = mirror_copa(recs)
    assert len(both) == 64 and both.examples[:32] == recs.examples
    m, ex = both.examples[32], recs.examples[0]
    assert (m["choice1"], m["choice2"]) == (ex["choice2"], ex["choice1"])
    assert (m["choice1_stem"], m["choice2_stem"]) == (ex["choice2_stem"], ex["choice1_stem"])
    assert m["choices"] == ex["choices"][::-1] and m["label"] == 1 - ex["label"]
    assert m["choices"][m["label"]] == ex["choices"][ex["label"]]
    assert both.sources[32] == recs.sources[0] + " (mirrored)"
    assert recs.examples[0]["label"] == 0  # the original is left alone


def test_record_train_examples():
    recs = _real("ReCoRD", "train")
    train = record_train_examples(recs)
    assert len(train) == sum(len(ex["answers"]) for ex in recs.examples)
    assert len(train) > len(recs)
    for ex in train.examples:
        assert ex["label"] == 0 and ex["choices"][0] in ex["answers"]
        assert not set(ex["choices"][1:]) & set(ex["answers"])
        assert 2 <= len(ex["choices"]) <= 10 and len(set(ex["choices"])) == len(ex["choices"])
        assert set(ex["choices"][1:]) <= set(ex["entities"])
    # every gold answer of a question gets its own example
    per_q: dict = {}
    for ex in train.examples:
        per_q.setdefault(ex["idx"], []).append(ex["choices"][0])
    assert all(per_q[ex["idx"]] == ex["answers"] for ex in recs.examples)
    again = record_train_examples(recs)
    assert [e["choices"] for e in again.examples] == [e["choices"] for e in train.examples]
    other = record_train_examples(recs, seed=7)
    assert [e["choices"] for e in other.examples] != [e["choices"] for e in train.examples]
    small = record_train_examples(recs, max_negatives=2)
    assert all(len(e["choices"]) <= 3 for e in small.examples)


# ---------------------------------------------------------------- names and paths


def test_canonical_task_and_split_path(tmp_path):
    assert canonical_task("rte") == "RTE" and canonical_task("MULTIRC") == "MultiRC"
    with pytest.raises(ConfigError, match="accepted: BoolQ, CB"):
        canonical_task("squad")
    (tmp_path / "rte").mkdir()
    (tmp_path / "rte" / "train.jsonl").write_text("{}\n")
    assert split_path(tmp_path, "RTE", "train") == tmp_path / "rte" / "train.jsonl"
    with pytest.raises(DataError, match="no val.jsonl for RTE"):
        split_path(tmp_path, "rte", "val")
    with pytest.raises(DataError, match="no train.jsonl for CB"):
        split_path(tmp_path, "cb", "train")
    with pytest.raises(ConfigError):
        split_path(tmp_path, "rte", "dev")


# ---------------------------------------------------------------- bad data


def _write(tmp_path: Path, name: str, objs: list) -> Path:
    path = tmp_path / name
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


GOOD = {
    "CB": {"premise": "It rained.", "hypothesis": "It was wet", "label": "entailment", "idx": 0},
    "WiC": {"word": "bank", "sentence1": "The bank closed.", "sentence2": "A river bank.", "idx": 0,
            "label": True, "start1": 4, "end1": 8, "start2": 8, "end2": 12},
    "WSC": {"text": "Sam hugged Ann because she was sad.", "idx": 0, "label": False,
            "target": {"span1_text": "Ann", "span1_index": 2, "span2_text": "she", "span2_index": 4}},
    "ReCoRD": {"idx": 0, "source": "x", "passage": {"text": "Sam met Ann.\n@highlight\nAnn smiled",
                                                     "entities": [{"start": 0, "end": 2}, {"start": 8, "end": 10}]},
               "qas": [{"idx": 5, "query": "@placeholder was happy", "answers": [{"start": 8, "end": 10, "text": "Ann"}]}]},
    "MultiRC": {"idx": 0, "passage": {"text": "Sam met Ann.", "questions": [
        {"question": "Who met Ann?", "idx": 1, "answers": [{"text": "Sam", "idx": 2, "label": 1},
                                                          {"text": "Ann", "idx": 3, "label": 0}]}]}},
}


def _bad(task: str, change) -> dict:
    obj = json.loads(json.dumps(GOOD[task]))
    change(obj)
    return obj


BAD = [
    ("CB", lambda o: o.pop("hypothesis"), "'hypothesis'", "missing"),
    ("CB", lambda o: o.update(label="maybe"), "'label'", "unknown label 'maybe'; accepted: entailment, contradiction, neutral"),
    ("CB", lambda o: o.update(premise=3), "'premise'", "expected a string, got int"),
    ("WSC", lambda o: o["target"].update(span2_index=40), "'target.span2_index'", "found nothing"),
    ("WSC", lambda o: o["target"].update(span2_index=1), "'target.span2_index'", "found 'hugged'"),
    ("WSC", lambda o: o["target"].update(span1_index=0), "'target.span1_index'", "found 'Sam'"),
    ("ReCoRD", lambda o: o["qas"][0].update(query="Someone was happy"), "'qas[0].query'", "@placeholder"),
    ("ReCoRD", lambda o: o["qas"][0]["answers"][0].update(text="Sam"), "'qas[0].answers[0]'", "differs"),
    ("ReCoRD", lambda o: o["passage"]["entities"].pop(), "'qas[0].answers'", "no gold answer"),
    ("MultiRC", lambda o: o["passage"]["questions"][0]["answers"][1].pop("label"),
     "'passage.questions[0].answers[1].label'", "missing"),
    ("WiC", lambda o: o.update(end1=99), "'end1'", "end1=99"),
    ("WiC", lambda o: o.update(start2=-1), "'start2'", "start2=-1"),
]


@pytest.mark.parametrize("task,change,field,says", BAD)
def test_bad_line_names_file_line_and_field(tmp_path, task, change, field, says):
    path = _write(tmp_path, f"{task.lower()}_bad.jsonl", [GOOD[task], _bad(task, change), GOOD[task]])
    with pytest.raises(DataError) as err:
        read_task(task, path)
    msg = str(err.value)
    assert f"{task.lower()}_bad.jsonl:2" in msg and field in msg and says in msg, msg
    assert err.value.field == field.strip("'")
    recs = read_task(task, path, skip_invalid=True)
    assert len(recs.skipped) == 1 and ":2" in recs.skipped[0] and field in recs.skipped[0]
    assert {s.rsplit(":", 1)[1] for s in recs.sources} == {"1", "3"}
    assert recs.examples == read_task(task, _write(tmp_path, "good.jsonl", [GOOD[task]] * 2)).examples


def test_good_synthetic_lines_and_unlabelled(tmp_path):
    wsc = read_task("WSC", _write(tmp_path, "w.jsonl", [GOOD["WSC"]])).examples[0]
    assert wsc["text_marked"] == "Sam hugged Ann because *she* was sad." and wsc["label"] == "False"
    rec = read_task("ReCoRD", _write(tmp_path, "r.jsonl", [GOOD["ReCoRD"]])).examples[0]
    assert rec["passage"] == "Sam met Ann.\n- Ann smiled" and rec["entities"] == ["Sam", "Ann"]
    assert rec["label"] == 1 and (rec["query_left"], rec["query_right"]) == ("", " was happy")
    # unlabelled (test.jsonl-like) lines give examples without "label"
    cb = {k: v for k, v in GOOD["CB"].items() if k != "label"}
    assert "label" not in read_task("CB", _write(tmp_path, "c.jsonl", [cb])).examples[0]
    mrc = _bad("MultiRC", lambda o: [a.pop("label") for a in o["passage"]["questions"][0]["answers"]])
    assert all("label" not in e for e in read_task("MultiRC", _write(tmp_path, "m.jsonl", [mrc])).examples)
    unl = _bad("ReCoRD", lambda o: o["qas"][0].update(answers=[]))
    ex = read_task("ReCoRD", _write(tmp_path, "u.jsonl", [unl])).examples[0]
    assert "label" not in ex and ex["answers"] == []
    with pytest.raises(DataError, match="no gold answers"):
        record_train_examples(read_task("ReCoRD", _write(tmp_path, "u2.jsonl", [unl])))


def test_copa_bad_question_and_label(tmp_path):
    good = {"premise": "It rained.", "choice1": "I got wet.", "choice2": "The sun shone.",
            "question": "effect", "label": 0, "idx": 1}
    path = _write(tmp_path, "copa.jsonl", [good, dict(good, question="reason"), dict(good, label=2)])
    with pytest.raises(DataError, match=r"copa\.jsonl:2: field 'question'"):
        read_task("COPA", path)
    recs = read_task("COPA", path, skip_invalid=True)
    assert len(recs) == 1 and len(recs.skipped) == 2 and "copa.jsonl:3: field 'label'" in recs.skipped[1]
    assert recs.examples[0]["choices"] == ["I got wet", "the sun shone"]


def test_malformed_json_is_skipped_only_when_asked(tmp_path):
    path = _write(tmp_path, "bq.jsonl", [{"passage": "p", "question": "q", "label": True, "idx": 0}, "{not json"])
    with pytest.raises(DataError, match=r"bq\.jsonl:2: invalid JSON"):
        read_task("BoolQ", path)
    recs = read_task("BoolQ", path, skip_invalid=True)
    assert len(recs) == 1 and recs.examples[0]["label"] == "True" and "invalid JSON" in recs.skipped[0]
    only_bad = _write(tmp_path, "all_bad.jsonl", [{"passage": "p", "question": "q", "label": 1, "idx": 0}])
    with pytest.raises(DataError, match="no valid lines"):
        read_task("BoolQ", only_bad, skip_invalid=True)
