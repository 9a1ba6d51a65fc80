"""Progress of long steps: a tqdm bar on a terminal, a plain line on stderr otherwise.

Everything in ptune that can take more than a few seconds reports through this module. On a
terminal (or in a notebook) it draws a tqdm bar. Elsewhere (CI logs, output redirected to a
file) it writes one line at most every ``interval`` seconds (30 by default) with the count done,
the rate and an estimate of the time left; a step that ends before the first interval writes
nothing. While a step is open a background timer keeps those lines coming even when a single
unit of work is slow, so the log is never silent for longer than the interval. Quiet mode
(``set_quiet(True)``, ``ptune --quiet`` or ``PTUNE_QUIET=1``) turns both off.

Example:
    >>> for row in track(rows, desc="predict", unit="row"):          # doctest: +SKIP
    ...     ...
    >>> with Progress(total=400, desc="train", unit="step") as bar:  # doctest: +SKIP
    ...     bar.update()
    ...     bar.note("loss 0.41")
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from typing import IO, Any, Callable, Iterable, Iterator, TypeVar

__all__ = ["Progress", "track", "set_quiet", "is_quiet", "format_duration"]

T = TypeVar("T")
_quiet: bool | None = None
_open_bars: list["Progress"] = []  # terminal bars not closed yet, outermost first


def set_quiet(quiet: bool | None) -> None:
    """Turn progress output off (``True``) or on (``False``) for the whole process;
    ``None`` goes back to the ``PTUNE_QUIET`` environment variable."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    """Whether progress output is off (``set_quiet``, else ``PTUNE_QUIET`` set to a non-empty value but 0)."""
    if _quiet is not None:
        return _quiet
    return os.environ.get("PTUNE_QUIET", "") not in ("", "0")


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: a duration as short as it can be read."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _interactive(stream: IO[str]) -> bool:
    if "ipykernel" in sys.modules and stream in (sys.stderr, sys.stdout):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A counter over one long step, shown as a bar on a terminal or as periodic lines otherwise.

    Args:
        total: units of work in the step (``None``: unknown; the line then shows no estimate).
        desc: what the step is (``"train"``, ``"probe P103"``); starts every line.
        unit: the unit's name (``"step"``, ``"row"``).
        initial: units already done (a resumed run); the rate counts only what this step does.
        enabled: ``False`` shows nothing; quiet mode also shows nothing, whatever this says.
        interval: seconds between two lines when not on a terminal.
        leave: keep the bar on the terminal once closed; default: unless it is nested in another
            open bar (the inner bars of a long step then come and go under the outer one).
        stream: where to write (default ``sys.stderr``).
        tty: draw a bar (``True``) or write lines (``False``); default: whether ``stream`` is a terminal.
        clock: the time source (for tests).
        heartbeat: keep writing lines between updates (a timer thread); tests with a fake clock turn it off.
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *, initial: int = 0,
                 enabled: bool = True, interval: float = 30.0, leave: bool | None = None, stream: IO[str] | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic, heartbeat: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.initial = initial, initial
        self.interval, self._clock = interval, clock
        self._stream = stream if stream is not None else sys.stderr
        self._note = ""
        self._lock = threading.Lock()
        self._bar: Any = None
        self._closed = False
        self._lines = 0
        self._start = self._last = clock()
        self._stop: threading.Event | None = None
        self.mode = "off" if not enabled or is_quiet() else (
            "bar" if (tty if tty is not None else _interactive(self._stream)) else "lines")
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self._stream, dynamic_ncols=True,
                             leave=leave if leave is not None else not _open_bars)
            _open_bars.append(self)
        elif self.mode == "lines" and heartbeat:
            self._stop = threading.Event()
            threading.Thread(target=_beat, args=(weakref.ref(self), self._stop, max(0.01, min(1.0, interval / 10))),
                             name=f"progress {desc}", daemon=True).start()

    # ------------------------------------------------------------------ counting
    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        with self._lock:
            self.n += n
            if self._bar is not None:
                self._bar.update(n)
            elif self.mode == "lines":
                self._maybe_write()

    def note(self, text: str) -> None:
        """Show ``text`` after the counts (the current relation, the last loss, ...)."""
        with self._lock:
            self._note = text
            if self._bar is not None:
                self._bar.set_postfix_str(text, refresh=False)

    def set_total(self, total: int | None) -> None:
        """Change the expected number of units (e.g. once it is known)."""
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def close(self) -> None:
        """End the step; where lines were written, a last line says it finished and how long it took."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._stop is not None:
                self._stop.set()
            if self._bar is not None:
                self._bar.close()
                _open_bars.remove(self)
            elif self.mode == "lines" and self._lines:
                self._write(final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ lines
    def line(self, final: bool = False) -> str:
        """The status line as the non-terminal mode writes it."""
        elapsed = self._clock() - self._start
        done = self.n - self.initial
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        count = f"{self.n}/{self.total} {units}" if self.total is not None else f"{self.n} {units}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        parts = [f"{self.desc}: {count}" if self.desc else count]
        if final:
            parts.append(f"done in {format_duration(elapsed)}")
        else:
            if elapsed > 0 and done > 0:
                rate = done / elapsed
                parts.append(f"{rate:.3g} {units}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
                if self.total is not None:
                    parts.append(f"about {format_duration(max(0, self.total - self.n) / rate)} left")
            parts.append(f"{format_duration(elapsed)} elapsed")
        if self._note:
            parts.append(self._note)
        return ", ".join(parts)

    def _maybe_write(self) -> None:
        if not self._closed and self._clock() - self._last >= self.interval:
            self._write()

    def _write(self, final: bool = False) -> None:
        self._last = self._clock()
        self._lines += 1
        try:
            self._stream.write(self.line(final) + "\n")
            self._stream.flush()
        except (ValueError, OSError):  # the stream was closed under us (interpreter exit)
            pass



def _beat(ref: "weakref.ref[Progress]", stop: threading.Event, period: float) -> None:
    """The timer behind the lines mode: holds the progress weakly, so one never closed still ends."""
    while not stop.wait(period):
        progress = ref()
        if progress is None:
            return
        with progress._lock:
            progress._maybe_write()
        del progress


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          **kwargs: Any) -> Iterator[T]:
    """Iterate over ``iterable`` with a :class:`Progress` (``total`` defaults to ``len(iterable)``
    where it has one); the other keyword arguments go to :class:`Progress`."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()
