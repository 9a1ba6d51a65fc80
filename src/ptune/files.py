"""Files written atomically, and strict JSON in and out.

A file or folder is written under a temporary name next to its destination, flushed to
disk and renamed into place, so a crash never leaves half of one. Every writer in ptune
goes through these functions. A destination that is a symbolic link is followed (the file
it points to is replaced, the link stays); a character device or a FIFO (``/dev/null``, a
pipe) is written in place; a folder, a block device, a socket or a read-only file is
refused with :class:`~ptune.errors.OutputError`.

A folder is committed in two renames (:func:`atomic_dir`): the finished temporary folder
becomes ``.NAME.new``, then the old ``NAME`` moves to ``.NAME.old`` and ``.NAME.new`` to
``NAME``. :func:`recover_dir` finishes or undoes a commit that a crash interrupted, from
any point, and removes temporary folders that a crash left behind.

JSON is strict both ways: :func:`dumps_json` refuses NaN and infinities (they are not JSON)
and :func:`loads_json` rejects them when reading.

Example:
    >>> write_json_atomic("runs/x/results.json", {"p@1": 0.5})          # doctest: +SKIP
    >>> with atomic_dir("runs/x/best") as tmp:                           # doctest: +SKIP
    ...     (tmp / "weights.bin").write_bytes(b"...")
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DataError, OutputError

__all__ = ["atomic_file", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "write_jsonl_atomic",
           "append_jsonl_atomic", "atomic_dir",
           "commit_dir", "recover_dir", "remove_temporaries", "save_figure", "write_output", "dumps_json",
           "loads_json", "read_text", "read_json", "sha256_file", "crash_point", "CRASH_ENV"]

CRASH_ENV = "PTUNE_CRASH_AT"
"""Tests only: ``NAME`` or ``NAME#K`` kills the process (SIGKILL) the K-th time (default
the first) it reaches :func:`crash_point` ``NAME``."""
_crash_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """A point where the crash tests kill the process (see :data:`CRASH_ENV`); a no-op
    unless that variable names it."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted or wanted.partition("#")[0] != name:
        return
    _crash_hits[name] = _crash_hits.get(name, 0) + 1
    if _crash_hits[name] == int(wanted.partition("#")[2] or 1):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- strict JSON
def _nonfinite_at(data: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinity in ``data``, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return where or "the value"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for k, v in items:
        found = _nonfinite_at(v, f"{where}[{k!r}]" if where else repr(k))
        if found:
            return found
    return None


def dumps_json(data: Any, *, indent: int | None = None) -> str:
    """``json.dumps`` that refuses NaN and infinities.

    Raises:
        ValueError: naming the key that holds a non-finite number.
    """
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError:
        raise ValueError(f"{_nonfinite_at(data)} is not a finite number; JSON has no NaN or infinity") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (no NaN or infinity)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {twice!r} is given twice")
    return out


def loads_json(text: str, source: str) -> Any:
    """``json.loads`` that rejects NaN, infinities and a key given twice in one object.

    Raises:
        DataError: ``source`` with the line and column of the error.
    """
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise DataError(source, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:
        raise DataError(source, f"invalid JSON: {e}") from None
    except RecursionError:
        raise DataError(source, "invalid JSON: nested too deeply") from None


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text(path: str | os.PathLike) -> str:
    """A file's UTF-8 text.

    Raises:
        DataError: naming the file: not UTF-8 (with the byte offset), or not readable.
    """
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise DataError(str(path), "is a folder, not a file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}", f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value (strict: :func:`loads_json`; errors name the file)."""
    return loads_json(read_text(path), str(path))


# ----------------------------------------------------------------------------- destinations
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_mode(path: str | Path, directory: bool) -> None:
    """Give a temporary file or folder (created private, 0600/0700) the mode an ordinary
    ``open``/``mkdir`` would have given it under the current umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _destination(path: Path) -> tuple[Path, bool]:
    """Where to write for ``path`` and whether in place: a link's target; a character
    device or FIFO in place.

    Raises:
        OutputError: a folder, block device, socket or read-only file.
    """
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        return (Path(os.path.realpath(path)) if path.is_symlink() else path), False
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return path, True
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a folder; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: is a device or socket, not a file; ptune writes only files, FIFOs and "
                          "character devices")
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
        raise OutputError(f"{path}: is read-only; ptune does not replace it")
    return Path(os.path.realpath(path)), False


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """Yield a binary file to write; on success it is fsynced and renamed to ``path`` (a
    link is followed; a FIFO or character device is written in place), on an error
    deleted (``path`` is left as it was). For output written piece by piece."""
    target, in_place = _destination(Path(path))
    if in_place:
        with open(target, "wb") as fh:
            yield fh
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        _ordinary_mode(tmp, directory=False)
        with os.fdopen(fd, "wb") as fh:
            yield fh  # type: ignore[misc]
            fh.flush()
            os.fsync(fh.fileno())
        crash_point("file-written")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename (see
    :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented strict JSON (key order kept: a verbalizer's label order is
    the order of the model's outputs)."""
    return write_text_atomic(path, dumps_json(data, indent=2) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write one strict JSON line per row (rows are written as they come: a generator is
    not held in memory)."""
    with atomic_file(path) as fh:
        for r in rows:
            fh.write((dumps_json(r) + "\n").encode("utf-8"))
    return Path(path)


def append_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Add one strict JSON line per row at the end of a JSON-lines file (made if missing).
    The old lines and the new ones go to a temporary file that replaces the file, so a
    crash leaves it as it was or with every new line, never half a line."""
    p = Path(path)
    old = p.read_bytes() if p.is_file() else b""  # a FIFO or a device: written in place, nothing read
    if old and not old.endswith(b"\n"):
        old += b"\n"
    return write_bytes_atomic(p, old + b"".join((dumps_json(r) + "\n").encode("utf-8") for r in rows))


def write_output(path: str | os.PathLike | None, text: str) -> None:
    """A command's ``--output``: ``-`` or None is standard output, anything else a file
    written atomically (:func:`write_text_atomic`)."""
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(path, text)


# ----------------------------------------------------------------------------- folders
def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}"


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file() and not f.is_symlink():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, commit: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success its files are fsynced,
    it becomes ``.NAME.new`` and (with ``commit``) replaces ``path`` (:func:`commit_dir`);
    on an error it is deleted and ``path`` is left as it was. With ``commit=False`` the
    caller commits later with :func:`commit_dir`."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError(f"{path}: is {'a symbolic link' if path.is_symlink() else 'not a folder'}; ptune puts a "
                          "folder here only in place of a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _ordinary_mode(tmp, directory=True)
        yield tmp
        _fsync_tree(tmp)
        crash_point("dir-written")
        new = _sibling(path, "new")
        if new.exists():
            shutil.rmtree(new)
        os.replace(tmp, new)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if commit:
        commit_dir(path)


def commit_dir(path: str | os.PathLike) -> None:
    """Put the finished ``.NAME.new`` in place of ``path``: the old folder moves aside
    first and is removed last."""
    path = Path(path)
    new, old = _sibling(path, "new"), _sibling(path, "old")
    crash_point("dir-staged")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        crash_point("dir-between-renames")
    os.replace(new, path)
    crash_point("dir-renamed")
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: str | os.PathLike, *, promote: bool = True) -> None:
    """Finish or undo a folder commit that a crash interrupted: temporary folders are
    removed; a finished ``.NAME.new`` replaces ``path`` (``promote``) or is removed; an old
    folder that was moved aside is removed, or put back when nothing replaced it."""
    path = Path(path)
    remove_temporaries(path.parent, path.name)
    new, old = _sibling(path, "new"), _sibling(path, "old")
    if new.exists():
        if promote:
            commit_dir(path)
        else:
            shutil.rmtree(new)
    if old.exists():
        if path.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, path)


def remove_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Remove the temporary files and folders (``.NAME.tmp-*``) that a crash left in
    ``folder``; returns them."""
    gone = sorted(Path(folder).glob(f".{name}.tmp-*")) if Path(folder).is_dir() else []
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    return gone


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return write_bytes_atomic(path, buf.getvalue())
