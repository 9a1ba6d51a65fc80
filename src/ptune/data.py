"""Reading a user's examples, from files, folders, the Hugging Face hub or memory.

Accepted sources (``read_examples`` / ``iter_examples``, and every ``--train``, ``--dev`` and
``--data`` option):

- ``.jsonl`` / ``.json`` / ``.ndjson`` (one object a line) and ``.csv`` / ``.tsv`` (a header
  row); errors name ``file:line``;
- ``.parquet`` and ``.arrow`` files, and a folder written by ``Dataset.save_to_disk`` or
  ``DatasetDict.save_to_disk`` (choose a split of the latter with ``split``);
- a hub dataset reference ``name[:config]`` (``glue:sst2``, ``stanfordnlp/imdb``) with a
  ``split``, loaded with ``datasets.load_dataset``;
- in the Python API, a ``datasets.Dataset`` or ``IterableDataset``, or a list of dicts.

Rows of a ``datasets`` source are named ``<source> row <i>`` in errors, with ``i`` counted
from 0 as ``dataset[i]`` does. A ``ClassLabel`` column gives its label names (``-1``, the
benchmarks' "no label", gives none), so a verbalizer names labels as the dataset does.

Example:
    >>> records = read_examples("train.jsonl")                       # doctest: +SKIP
    >>> records.examples[0], records.sources[0]                       # doctest: +SKIP
    ({'premise': '...', 'label': 'yes'}, 'train.jsonl:1')
    >>> read_examples("glue:sst2", split="validation").sources[0]     # doctest: +SKIP
    'glue:sst2[validation] row 0'
"""

from __future__ import annotations

import csv
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from .errors import DataError
from .files import loads_json

__all__ = ["Records", "read_examples", "iter_examples", "as_examples", "is_stream", "count_rows", "keep_valid",
           "ACCEPTED"]

T = TypeVar("T")
R = TypeVar("R")

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
            ".parquet": "parquet", ".arrow": "arrow"}
ACCEPTED = (".jsonl, .json, .csv, .tsv, .parquet, .arrow, a folder written by Dataset.save_to_disk, "
            "or a hub dataset name[:config]")
_HUB_REF = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+)?")
Pairs = Iterator[tuple[dict[str, Any], str]]


@dataclass
class Records:
    """Examples read from a source and where each came from (``file:line`` or ``source row i``)."""

    examples: list[dict[str, Any]]
    sources: list[str]
    skipped: list[str] = field(default_factory=list)  # messages of bad lines a reader skipped

    def __len__(self) -> int:
        return len(self.examples)


def read_examples(source: str | os.PathLike, *, split: str | None = None, skip_invalid: bool = False) -> Records:
    """Read every example of ``source`` (see the module doc for what it may be).

    Blank lines of text files are skipped. The format comes from the suffix. With
    ``skip_invalid``, a JSON line that does not parse or is not an object is recorded in
    ``skipped`` instead of raising. ``split`` chooses the split of a hub dataset or a saved
    ``DatasetDict`` (not needed where there is only one).

    Raises:
        DataError: a missing file, an unknown format, a folder that is not a saved dataset, a
            hub dataset that cannot be loaded, a malformed line or row, or no examples at all.
    """
    skipped: list[str] = []
    examples, sources = [], []
    for ex, src in iter_examples(source, split=split, skip_invalid=skip_invalid, skipped=skipped):
        examples.append(ex)
        sources.append(src)
    if not examples and not skipped:
        raise DataError(str(source), "no examples")
    return Records(examples, sources, skipped)


def iter_examples(data: Any, *, split: str | None = None, skip_invalid: bool = False,
                  skipped: list[str] | None = None) -> Pairs:
    """``(example, source)`` pairs of ``data``, read lazily: a path or hub reference (files and
    hub datasets are streamed, not loaded whole), a ``datasets.Dataset`` / ``IterableDataset``,
    :class:`Records`, or any iterable of dicts (sources ``example 1``, ``example 2``, ...)."""
    if isinstance(data, (str, os.PathLike)):
        yield from _source_rows(str(data), split, skip_invalid, [] if skipped is None else skipped)
    elif isinstance(data, Records):
        yield from zip(data.examples, data.sources)
    elif _is_datasets(data):
        yield from _dataset_rows(_pick_split(data, split, "dataset"), "dataset")
    else:
        for i, ex in enumerate(data, 1):
            yield ex, f"example {i}"


def as_examples(data: Any, sources: Sequence[str] | None = None) -> tuple[Sequence[dict[str, Any]], list[str]]:
    """``(examples, sources)`` for the Python API: a list of dicts as given (sources ``example N``
    unless given), a ``datasets`` dataset or any other iterable of dicts read row by row."""
    if isinstance(data, (list, tuple)):
        if sources is None:
            return data, [f"example {i + 1}" for i in range(len(data))]
        sources = list(sources)
        if len(sources) != len(data):
            raise ValueError(f"{len(sources)} sources for {len(data)} examples")
        return data, sources
    if isinstance(data, (str, os.PathLike)):
        raise TypeError("pass examples (a list of dicts or a datasets.Dataset), or read a file with read_examples")
    pairs = list(iter_examples(data))
    return [ex for ex, _ in pairs], [src for _, src in pairs]


def is_stream(data: Any) -> bool:
    """Whether ``data`` is read as it comes (an ``IterableDataset``, a generator): it has no length."""
    return not isinstance(data, (str, bytes, dict)) and hasattr(data, "__iter__") and not hasattr(data, "__len__")


def count_rows(data: Any) -> int | None:
    """How many examples ``data`` holds, where that is cheap to know (for progress); else ``None``."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        fmt = _FORMATS.get(path.suffix.lower()) if path.is_file() else None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if fmt == "jsonl":
            with open(path, "rb") as fh:
                return sum(1 for line in fh if line.strip())
        return None
    return None if is_stream(data) else len(data)


def keep_valid(pairs: Iterable[tuple[T, str]], convert: Callable[[T, str], R], skip_invalid: bool,
               skipped: list[str]) -> Iterator[tuple[R, str]]:
    """``(convert(value, source), source)`` for each ``(value, source)``; a DataError is
    raised, or with ``skip_invalid`` its message is added to ``skipped`` and the pair left out."""
    for value, src in pairs:
        try:
            converted = convert(value, src)
        except DataError as err:
            if not skip_invalid:
                raise
            skipped.append(str(err))
            continue
        yield converted, src


# ----------------------------------------------------------------------------- sources
def _source_rows(source: str, split: str | None, skip_invalid: bool, skipped: list[str]) -> Pairs:
    path = Path(source)
    fmt = _FORMATS.get(path.suffix.lower())
    if path.is_dir():
        dataset, name = _load_saved(path, split)
        yield from _dataset_rows(dataset, name)
    elif path.is_file():
        if fmt == "jsonl":
            yield from _jsonl_rows(path, skip_invalid, skipped)
        elif fmt in ("csv", "tsv"):
            yield from _csv_rows(path, "\t" if fmt == "tsv" else ",")
        elif fmt in ("parquet", "arrow"):
            yield from _dataset_rows(_load_file(path, fmt), source)
        else:
            raise DataError(source, f"unknown format {path.suffix!r}; accepted: {ACCEPTED}")
    elif fmt is not None or not _HUB_REF.fullmatch(source):
        raise DataError(source, "no such file" if fmt is not None else f"no such file or folder; accepted: {ACCEPTED}")
    else:
        dataset, name = _load_hub(source, split)
        yield from _dataset_rows(dataset, name)


def _datasets() -> Any:
    import datasets

    return datasets


def _is_datasets(data: Any) -> bool:
    mod = sys.modules.get("datasets")
    return mod is not None and isinstance(data, (mod.Dataset, mod.IterableDataset, mod.DatasetDict,
                                                 mod.IterableDatasetDict))


def _load_file(path: Path, fmt: str) -> Any:
    """A parquet or arrow file, streamed (nothing is copied into the datasets cache)."""
    try:
        return _datasets().load_dataset(fmt, data_files=str(path), split="train", streaming=True)
    except Exception as e:  # a damaged or foreign file: datasets and pyarrow raise many kinds
        raise DataError(str(path), f"cannot read as {fmt}: {_first_line(e)}") from e


def _load_saved(path: Path, split: str | None) -> tuple[Any, str]:
    try:
        dataset = _datasets().load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(str(path), "a folder, but not one written by Dataset.save_to_disk (no state.json or "
                                   f"dataset_dict.json); accepted: {ACCEPTED}") from None
    return _pick_split(dataset, split, str(path)), _named(str(path), dataset, split)


def _load_hub(ref: str, split: str | None) -> tuple[Any, str]:
    name, _, config = ref.partition(":")
    try:
        dataset = _datasets().load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown name, config or split: datasets raises many kinds
        raise DataError(ref, f"not a local file or folder, and datasets.load_dataset({name!r}"
                             f"{', ' + repr(config) if config else ''}, split={split!r}) failed: "
                             f"{_first_line(e)}") from e
    return _pick_split(dataset, split, ref), _named(ref, dataset, split)


def _named(source: str, dataset: Any, split: str | None) -> str:
    if split is None and hasattr(dataset, "keys"):
        split = next(iter(dataset.keys()))
    return f"{source}[{split}]" if split is not None else source


def _pick_split(dataset: Any, split: str | None, source: str) -> Any:
    """One split of a ``DatasetDict``: the one asked for, or the only one."""
    if not hasattr(dataset, "keys"):
        return dataset
    splits = list(dataset.keys())
    if split is None and len(splits) == 1:
        return dataset[splits[0]]
    if split is None:
        raise DataError(source, f"holds the splits {', '.join(splits)}: choose one (--split, or split=)")
    if split not in dataset:
        raise DataError(source, f"no split {split!r}; it holds {', '.join(splits)}")
    return dataset[split]


def _dataset_rows(dataset: Any, name: str) -> Pairs:
    """The rows of a ``datasets`` dataset as plain dicts, ``ClassLabel`` values as label names."""
    classes = {k: f for k, f in (dataset.features or {}).items() if type(f).__name__ == "ClassLabel"}
    for i, row in enumerate(dataset):
        src = f"{name} row {i}"
        for key, feature in classes.items():
            value = row.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                if not -1 <= value < feature.num_classes:
                    raise DataError(src, f"{value} is not a class of {feature.names}", field=key)
                row[key] = feature.names[value] if value >= 0 else None
        yield row, src


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


# ----------------------------------------------------------------------------- text files
def _json_object(raw: bytes | str, src: str) -> dict[str, Any]:
    try:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise DataError(src, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
    try:
        obj = loads_json(line.rstrip(), src)
    except DataError as e:  # one line: the column is enough
        raise DataError(src, e.reason.replace("at line 1 column", "at column")) from None
    if not isinstance(obj, dict):
        raise DataError(src, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _jsonl_rows(path: Path, skip_invalid: bool, skipped: list[str]) -> Pairs:
    with open(path, "rb") as fh:
        lines = ((line, f"{path}:{n}") for n, line in enumerate(fh, 1) if line.strip())
        yield from keep_valid(lines, _json_object, skip_invalid, skipped)


def _csv_rows(path: Path, delimiter: str) -> Pairs:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        try:
            yield from _csv_checked(path, reader)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{_bad_utf8_line(path)}", f"not UTF-8 text (byte 0x{e.object[e.start]:02x})") from None
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num + 1}", f"not valid CSV: {e}") from None


def _bad_utf8_line(path: Path) -> int:
    """The number of the first line of ``path`` that is not UTF-8 (the decoder reads ahead)."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return 1


def _csv_checked(path: Path, reader: csv.DictReader) -> Pairs:
    if not reader.fieldnames:
        raise DataError(f"{path}:1", "no header row with field names")
    if len(set(reader.fieldnames)) != len(reader.fieldnames):
        twice = next(f for i, f in enumerate(reader.fieldnames) if f in reader.fieldnames[:i])
        raise DataError(f"{path}:1", f"the column {twice!r} is named twice")
    for row in reader:
        src = f"{path}:{reader.line_num}"
        if None in row:
            raise DataError(src, f"{len(reader.fieldnames) + len(row[None])} values for "
                            f"{len(reader.fieldnames)} columns")
        missing = [k for k, v in row.items() if v is None]
        if missing:
            raise DataError(src, f"fewer values than columns (no {', '.join(missing)})")
        yield dict(row), src
