"""Files written atomically: a file or folder is written under a temporary name next to
its destination, flushed to disk and renamed into place, so a crash never leaves half of
one. Every writer in ptune goes through these functions.

Example:
    >>> write_json_atomic("runs/x/results.json", {"p@1": 0.5})          # doctest: +SKIP
    >>> with atomic_dir("runs/x/best") as tmp:                           # doctest: +SKIP
    ...     (tmp / "weights.bin").write_bytes(b"...")
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["atomic_file", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "write_jsonl_atomic", "atomic_dir",
           "save_figure"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_mode(path: str | Path, directory: bool) -> None:
    """Give a temporary file or folder (created private, 0600/0700) the mode an ordinary
    ``open``/``mkdir`` would have given it under the current umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """Yield a binary file to write; on success it is fsynced and renamed to ``path``, on an
    error deleted (``path`` is left as it was). For output written piece by piece."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        _ordinary_mode(tmp, directory=False)
        with os.fdopen(fd, "wb") as fh:
            yield fh  # type: ignore[misc]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename."""
    with atomic_file(path) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (key order kept: a verbalizer's label order is the
    order of the model's outputs)."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write one JSON line per row (rows are written as they come: a generator is not held in memory)."""
    with atomic_file(path) as fh:
        for r in rows:
            fh.write((json.dumps(r) + "\n").encode("utf-8"))
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success its files are fsynced
    and it replaces ``path`` (an existing folder there is removed only after the new one
    is in place); on an error it is deleted and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _ordinary_mode(tmp, directory=True)
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return write_bytes_atomic(path, buf.getvalue())
