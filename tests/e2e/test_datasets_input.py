"""The sentiment example from parquet and from a saved `datasets` folder gives the numbers it gives
from jsonl (train, eval, predict on the command line); the Python API takes a `datasets.Dataset`
and streams predictions over an `IterableDataset`."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from conftest import pair, saved_model
from ptune import PromptConfig, PTunedModel, TrainConfig, train
from ptune.cli import main
from ptune.data import iter_examples
from ptune.errors import DataError
from ptune.inference import iter_predictions

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sentiment"
VERB = '{"pos": "good", "neg": "bad"}'


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsin")
    saved_model(root / "gpt2")
    for split in ("train", "dev", "new"):
        ds = datasets.Dataset.from_json(str(EXAMPLE / f"{split}.jsonl"))
        ds.to_parquet(str(root / f"{split}.parquet"))
        ds.save_to_disk(str(root / f"{split}-saved"))
    return root


def _run(root: Path, out: Path, train_src: str, dev_src: str, new_src: str, capsys) -> dict:
    assert main(["train", "--model", str(root / "gpt2"), "--train", train_src, "--dev", dev_src,
                 "--template", "[P*3] {text} [P*3] [MASK]", "--verbalizer", VERB, "--output", str(out),
                 "--steps", "20", "--lr", "1e-2", "--batch-size", "16", "--eval-every", "10", "--encoder", "mlp"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "--checkpoint", str(out), "--data", dev_src]) == 0
    dev = json.loads(capsys.readouterr().out)
    assert main(["predict", "--checkpoint", str(out), "--data", new_src, "--output", str(out / "pred.jsonl")]) == 0
    preds = [json.loads(line) for line in (out / "pred.jsonl").read_text().splitlines()]
    log = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
           for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"summary": {k: summary[k] for k in ("steps", "best_step", "best")}, "log": log,
            "dev": {k: v for k, v in dev.items() if k != "data"}, "preds": preds}


def test_sentiment_example_from_parquet_and_saved_folder_equals_jsonl(setup, tmp_path, capsys):
    ref = _run(setup, tmp_path / "jsonl", str(EXAMPLE / "train.jsonl"), str(EXAMPLE / "dev.jsonl"),
               str(EXAMPLE / "new.jsonl"), capsys)
    assert ref["dev"]["n"] == 48 and len(ref["log"]) == 22 and len(ref["preds"]) == 3
    for kind in ("parquet", "saved"):
        src = {s: str(setup / (f"{s}.parquet" if kind == "parquet" else f"{s}-saved")) for s in ("train", "dev", "new")}
        got = _run(setup, tmp_path / kind, src["train"], src["dev"], src["new"], capsys)
        assert got["summary"] == ref["summary"] and got["log"] == ref["log"]
        assert {**got["dev"], "checkpoint": None} == {**ref["dev"], "checkpoint": None}
        assert [(p["label"], p["scores"]) for p in got["preds"]] == [(p["label"], p["scores"]) for p in ref["preds"]]
        assert [p["source"] for p in got["preds"]] == [f"{src['new']} row {i}" for i in range(3)]


def _model():
    lm, tok = pair("gpt2", hidden=64, init_range=0.2, dropout=0.0)
    return PTunedModel(lm, tok, PromptConfig(template="{text} [P*2] [MASK]", verbalizer={"pos": "good", "neg": "bad"},
                                             encoder="mlp"), seed=0)


def test_python_api_takes_datasets_and_streams_predictions():
    rows = [json.loads(line) for line in (EXAMPLE / "train.jsonl").read_text().splitlines()][:40]
    cfg = TrainConfig(steps=6, lr=1e-2, batch_size=8, eval_every=3)
    a, b = _model(), _model()
    ra = train(a, rows[:32], rows[32:], cfg, progress=False)
    rb = train(b, datasets.Dataset.from_list(rows[:32]), datasets.Dataset.from_list(rows[32:]), cfg, progress=False)
    assert ra.history == rb.history
    expected = a.predict(rows)
    assert b.predict(datasets.Dataset.from_list(rows)) == expected

    read = []

    def gen():
        for r in rows:
            read.append(r)
            yield r

    stream = datasets.IterableDataset.from_generator(gen)
    preds = a.predict(stream)
    assert not isinstance(preds, list) and read == []  # nothing is read before the first prediction is asked for
    assert list(preds) == expected and len(read) == 40
    read.clear()
    chunks = iter_predictions(a, iter_examples(gen()), batch_size=4, chunk_size=8)
    first = next(chunks)
    assert len(read) == 8  # one chunk read, not the whole input
    assert [first[2], *(p for _, _, p in chunks)] == a.predict(rows, batch_size=4)


def test_a_bad_row_names_the_source_row_and_field():
    bad = datasets.Dataset.from_list([{"text": "fine .", "label": "pos"}, {"text": "meh .", "label": "meh"}])
    with pytest.raises(DataError, match=r"^dataset row 1: field 'label': 'meh' is not a label of the verbalizer"):
        _model().prepare(bad, require_labels=True)
