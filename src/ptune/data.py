"""Reading a user's examples from JSON lines or CSV, with errors that name file and line.

Example:
    >>> records = read_examples("train.jsonl")                       # doctest: +SKIP
    >>> records.examples[0], records.sources[0]                       # doctest: +SKIP
    ({'premise': '...', 'label': 'yes'}, 'train.jsonl:1')
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from .errors import DataError

__all__ = ["Records", "read_examples", "keep_valid"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Records:
    """Examples read from a file and where each came from (``file:line``)."""

    examples: list[dict[str, Any]]
    sources: list[str]
    skipped: list[str] = field(default_factory=list)  # messages of bad lines a reader skipped

    def __len__(self) -> int:
        return len(self.examples)


def read_examples(path: str | os.PathLike, *, skip_invalid: bool = False) -> Records:
    """Read ``.jsonl``/``.json`` (one object a line) or ``.csv``/``.tsv`` (a header row).

    Blank lines are skipped. The format comes from the suffix. With ``skip_invalid``, a
    JSON line that does not parse or is not an object is recorded in ``skipped`` instead
    of raising.

    Raises:
        DataError: a missing file, a malformed line, or a line that is not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path, skip_invalid)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, "\t" if suffix == ".tsv" else ",")
    raise DataError(str(path), f"unknown format {suffix!r}; accepted: .jsonl, .json, .csv, .tsv")


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


def _json_object(line: str, src: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(src, f"invalid JSON at column {e.colno}: {e.msg}") from None
    if not isinstance(obj, dict):
        raise DataError(src, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_jsonl(path: Path, skip_invalid: bool = False) -> Records:
    examples, sources, skipped = [], [], []
    with open(path, encoding="utf-8") as fh:
        lines = ((line, f"{path}:{n}") for n, line in enumerate(fh, 1) if line.strip())
        for obj, src in keep_valid(lines, _json_object, skip_invalid, skipped):
            examples.append(obj)
            sources.append(src)
    if not examples and not skipped:
        raise DataError(str(path), "no examples")
    return Records(examples, sources, skipped)


def _read_csv(path: Path, delimiter: str) -> Records:
    examples, sources = [], []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        if not reader.fieldnames:
            raise DataError(f"{path}:1", "no header row with field names")
        for row in reader:
            src = f"{path}:{reader.line_num}"
            if None in row:
                raise DataError(src, f"{len(reader.fieldnames) + len(row[None])} values for "
                                f"{len(reader.fieldnames)} columns")
            missing = [k for k, v in row.items() if v is None]
            if missing:
                raise DataError(src, f"fewer values than columns (no {', '.join(missing)})")
            examples.append(dict(row))
            sources.append(src)
    if not examples:
        raise DataError(str(path), "no examples")
    return Records(examples, sources)
