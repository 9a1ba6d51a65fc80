"""One process at a time in a run or result folder.

Every command that writes a folder of results (``ptune train``, ``probe``, ``superglue``,
``demo``) holds its lock while it runs: a file ``.ptune.lock`` in the folder, locked with
``fcntl.flock`` and holding the owner's pid, host and command. A second run on the same
folder is refused with :class:`~ptune.errors.OutputError` naming the holder. The
operating system releases the lock when its process ends in any way, ``kill -9``
included, so a lock left by a dead process is taken over without asking; the lock file
is removed when the run ends (and the folder too, when the run created it and wrote
nothing). Locks are per machine: on a network file system whose
``flock`` does not reach other machines, two machines can still share a folder.

Within one process the lock is re-entrant (a harness may train into its own folder).
Under ``torchrun`` / ``accelerate launch`` only the process of rank 0 takes it.

Example:
    >>> with folder_lock("runs/rte"):                                 # doctest: +SKIP
    ...     ...                                                        # nobody else writes runs/rte
    >>> @locks_folder("output_dir")                                    # doctest: +SKIP
    ... def probe(lm, tokenizer, data_dir, output_dir): ...
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock
    fcntl = None  # type: ignore[assignment]

__all__ = ["folder_lock", "locks_folder", "LOCK_NAME", "holder"]

LOCK_NAME = ".ptune.lock"
_held: dict[str, tuple[int, int]] = {}  # folder (real path) -> (fd, depth)
F = TypeVar("F", bound=Callable[..., Any])


def holder(folder: str | os.PathLike) -> str | None:
    """What the lock file of ``folder`` says about its holder (None: no lock file)."""
    try:
        return (Path(folder) / LOCK_NAME).read_text(encoding="utf-8", errors="replace").strip() or "unknown"
    except (FileNotFoundError, NotADirectoryError):
        return None


def _prepare(folder: Path) -> tuple[Path, list[Path]]:
    """The folder's real path, created if missing, and the folders created for it."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; give a folder for the run's files")
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(folder)), created


def _acquire(real: Path, shown: Path) -> int:
    path = real / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{shown}: in use by another ptune run ({holder(real)}); wait for it to finish "
                              "or choose another folder") from None
        try:  # the file we locked must still be the one at the path (a holder unlinks it on release)
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3]))
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                 f"{command}\n".encode("utf-8", "replace"))
    return fd


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) for the duration.

    Raises:
        OutputError: another live process holds it (naming pid, host and command), or
            ``folder`` is a file.
    """
    shown = Path(folder)
    real, created = _prepare(shown)
    key = str(real)
    if fcntl is None or int(os.environ.get("RANK", "0")) != 0:
        yield shown
        return
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
    else:
        _held[key] = (_acquire(real, shown), 1)
    try:
        yield shown
    finally:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
        else:
            del _held[key]
            with contextlib.suppress(OSError):
                os.unlink(real / LOCK_NAME)  # while still locked: a waiting process retries on the new file
            os.close(fd)
            for made in created:  # a run that wrote nothing leaves no folder behind
                try:
                    made.rmdir()
                except OSError:
                    break


def locks_folder(argument: str | Callable[..., Any]) -> Callable[[F], F]:
    """Decorate a function so it runs holding the lock of a folder: its argument named
    ``argument``, or ``argument(*args, **kwargs)`` (nothing is locked when that is None)."""
    def wrap(func: F) -> F:
        sig = inspect.signature(func)

        @functools.wraps(func)
        def locked(*args: Any, **kwargs: Any) -> Any:
            if callable(argument):
                folder = argument(*args, **kwargs)
            else:
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                folder = bound.arguments.get(argument)
            if folder is None:
                return func(*args, **kwargs)
            with folder_lock(folder):
                return func(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap
