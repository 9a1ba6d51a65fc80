"""Data sources of the `datasets` ecosystem: parquet and arrow files, saved dataset folders, hub
references, in-memory datasets; the same examples as the jsonl they were made from, and errors
that name the source, row and field."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from ptune import data as D
from ptune.data import as_examples, count_rows, is_stream, iter_examples, read_examples
from ptune.errors import DataError

ROWS = [{"text": "the movie was great .", "label": "pos", "idx": 0},
        {"text": "the film was awful .", "label": "neg", "idx": 1},
        {"text": "a brilliant story .", "label": "pos", "idx": 2}]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    ds = datasets.Dataset.from_list(ROWS)
    ds.to_parquet(str(root / "rows.parquet"))
    ds.save_to_disk(str(root / "saved"))
    datasets.DatasetDict({"train": ds, "validation": ds.select([1])}).save_to_disk(str(root / "dict"))
    feather.write_feather(pa.Table.from_pylist(ROWS), str(root / "rows.arrow"))  # arrow IPC file format
    (root / "plain").mkdir()
    (root / "plain" / "notes.txt").write_text("not a dataset")
    return root


@pytest.mark.parametrize("name", ["rows.parquet", "rows.arrow", "saved"])
def test_same_examples_as_jsonl(sources, name):
    ref = read_examples(sources / "rows.jsonl")
    got = read_examples(sources / name)
    assert got.examples == ref.examples
    assert got.sources == [f"{sources / name} row {i}" for i in range(3)]


def test_saved_datasetdict_needs_a_split_when_it_has_several(sources):
    assert read_examples(sources / "dict", split="validation").examples == [ROWS[1]]
    assert read_examples(sources / "dict", split="validation").sources == [f"{sources / 'dict'}[validation] row 0"]
    with pytest.raises(DataError, match=r"holds the splits train, validation: choose one"):
        read_examples(sources / "dict")
    with pytest.raises(DataError, match=r"no split 'test'; it holds train, validation"):
        read_examples(sources / "dict", split="test")


def test_class_labels_give_their_names_and_minus_one_gives_none(tmp_path):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [1, 0, -1]}, features=features)
    ds.to_parquet(str(tmp_path / "c.parquet"))
    for source in (ds, tmp_path / "c.parquet"):
        examples = [ex for ex, _ in iter_examples(source)]
        assert [ex["label"] for ex in examples] == ["pos", "neg", None]


def test_errors_name_the_source(sources, tmp_path):
    with pytest.raises(DataError, match="not one written by Dataset.save_to_disk"):
        read_examples(sources / "plain")
    with pytest.raises(DataError, match="missing.jsonl: no such file"):
        read_examples(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no such file or folder"):
        read_examples(str(tmp_path / "no" / "such" / "dir"))
    (tmp_path / "x.xlsx").write_text("?")
    with pytest.raises(DataError, match=r"unknown format '.xlsx'; accepted: .jsonl.*\.parquet, \.arrow"):
        read_examples(tmp_path / "x.xlsx")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet: cannot read as parquet"):
        read_examples(tmp_path / "bad.parquet")


class FakeHub:
    """``datasets`` with ``load_dataset`` answering from memory (the tests run offline)."""

    def __init__(self, fail: bool = False):
        self.calls: list[tuple] = []
        self.fail = fail

    def load_dataset(self, name, config=None, split=None):
        self.calls.append((name, config, split))
        if self.fail:
            raise ConnectionError("Couldn't reach 'glue' on the Hub (LocalEntryNotFoundError)\nmore detail")
        dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                                   "validation": datasets.Dataset.from_list(ROWS[:1])})
        return dd[split] if split else dd


def test_hub_reference_goes_through_load_dataset(monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr(D, "_datasets", lambda: hub)
    got = read_examples("nyu-mll/glue:sst2", split="validation")
    assert hub.calls == [("nyu-mll/glue", "sst2", "validation")]
    assert got.examples == ROWS[:1] and got.sources == ["nyu-mll/glue:sst2[validation] row 0"]
    assert read_examples("imdb", split="train").examples == ROWS and hub.calls[-1] == ("imdb", None, "train")
    with pytest.raises(DataError, match="imdb: holds the splits train, validation: choose one"):
        read_examples("imdb")
    monkeypatch.setattr(D, "_datasets", lambda: FakeHub(fail=True))
    with pytest.raises(DataError) as err:
        read_examples("glue:sst2", split="train")
    assert str(err.value) == ("glue:sst2: not a local file or folder, and datasets.load_dataset('glue', 'sst2', "
                              "split='train') failed: ConnectionError: Couldn't reach 'glue' on the Hub "
                              "(LocalEntryNotFoundError)")


def test_python_api_inputs():
    ds = datasets.Dataset.from_list(ROWS)
    assert as_examples(ds) == (ROWS, ["dataset row 0", "dataset row 1", "dataset row 2"])
    assert as_examples(ROWS) == (ROWS, ["example 1", "example 2", "example 3"])
    it = ds.to_iterable_dataset()
    assert is_stream(it) and is_stream(r for r in ROWS) and not is_stream(ds) and not is_stream(ROWS)
    assert [ex for ex, _ in iter_examples(it)] == ROWS
    with pytest.raises(DataError, match="holds the splits"):
        as_examples(datasets.DatasetDict({"a": ds, "b": ds}))


def test_count_rows(sources):
    assert count_rows(sources / "rows.parquet") == 3 and count_rows(sources / "rows.jsonl") == 3
    assert count_rows(datasets.Dataset.from_list(ROWS)) == 3 and count_rows(sources / "saved") is None
    assert count_rows(r for r in ROWS) is None
