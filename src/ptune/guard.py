"""The command line's error boundary: input-caused failures become one line and exit 2.

Readers convert their failures where they read (naming file, line and field:
:mod:`ptune.data`, :mod:`ptune.files`, :mod:`ptune.checkpoint`, ...). Here, around
every command, the rest is sorted:

* ptune's own errors (:class:`~ptune.errors.PtuneError`) and operating-system errors on
  the user's paths (a missing file, a permission, a full disk) are the user's input:
  ``ptune: error: <where>: <what>`` on one line, exit code 2;
* errors that only input can cause but that escaped a reader (a byte that is not UTF-8,
  a CSV or JSON syntax error, a damaged safetensors file) also exit 2, with what is
  known of the place;
* anything else is a bug in ptune: one line saying so and exit code 1, or with ``-v``
  the full traceback.

Example:
    >>> guarded(lambda: cmd(options), verbose=False)                 # doctest: +SKIP
    2
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Callable, Sequence

from .errors import PtuneError

__all__ = ["guarded", "parsed", "input_error_line", "EXIT_INPUT", "EXIT_BUG"]

EXIT_INPUT = 2
EXIT_BUG = 1


def _one_line(text: str) -> str:
    return " / ".join(part.strip() for part in str(text).splitlines() if part.strip()) or "(no message)"


def _os_error(e: OSError) -> str:
    what = e.strerror or _one_line(str(e)) or type(e).__name__
    if e.filename is not None and e.filename2 is not None:
        return f"{e.filename} -> {e.filename2}: {what}"
    return f"{e.filename}: {what}" if e.filename is not None else what


def _input_only() -> tuple[type[BaseException], ...]:
    """Exceptions that only bad input raises (readers normally convert them first)."""
    kinds: list[type[BaseException]] = [UnicodeDecodeError, csv.Error, json.JSONDecodeError]
    try:
        from safetensors import SafetensorError

        kinds.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


def input_error_line(e: BaseException) -> str | None:
    """The one line for an input-caused error, or None when ``e`` is a bug."""
    if isinstance(e, PtuneError):
        return f"ptune: error: {_one_line(str(e))}"
    if isinstance(e, OSError):
        return f"ptune: error: {_one_line(_os_error(e))}"
    if isinstance(e, UnicodeDecodeError):
        return f"ptune: error: input is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"
    if isinstance(e, _input_only()):
        return f"ptune: error: unreadable input ({type(e).__name__}): {_one_line(str(e))}"
    return None


def parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed command line, or :data:`EXIT_INPUT` after a usage error's one line."""
    try:
        return parser.parse_args(argv)
    except Exception as e:  # noqa: BLE001 - usage errors are one line; anything else stays visible
        line = input_error_line(e)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return EXIT_INPUT


def guarded(run: Callable[[], int], *, verbose: bool) -> int:
    """Run a command; an input error prints one line and gives 2, a bug 1 (with ``verbose``:
    the traceback)."""
    try:
        return int(run())
    except KeyboardInterrupt:
        print("ptune: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the boundary: every error is sorted here
        line = input_error_line(e)
        if line is not None:
            print(line, file=sys.stderr)
            return EXIT_INPUT
        if verbose:
            raise
        print(f"ptune: internal error: {type(e).__name__}: {_one_line(str(e))} (a bug in ptune; "
              "-v shows the traceback)", file=sys.stderr)
        return EXIT_BUG
