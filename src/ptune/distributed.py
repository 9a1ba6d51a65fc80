"""The harnesses on several processes: their units of work split across the ranks.

Under ``accelerate launch --num_processes N`` or ``torchrun`` (one or many nodes), ``ptune
probe``, ``ptune superglue`` and ``ptune demo`` split their units (LAMA relation × method,
SuperGLUE task × seed) over the N processes. Each unit trains in one process
(``train(..., alone=True)``) and seeds itself, so its numbers do not depend on which
process runs it or on what ran before: N processes give the results of one.

A unit whose training set is large (at least ``UnitsConfig.data_parallel_from`` examples)
trains data-parallel instead: every process takes its slice of each global batch, as under
``ptune train`` (``train(..., alone=False)``); such units run first, one at a time. The
others run in rounds: round ``k`` gives unit ``k·N + r`` of them to rank ``r``; after each
round (and after each data-parallel unit) every process receives the results, and rank 0
alone writes the result files (what a one-process run writes after each unit). A resumed run
skips the units its files record as finished. Files a unit writes for itself (a checkpoint,
SuperGLUE's ``runs/<Task>/seed<N>/``) are written by the process that ran it (rank 0 for a
data-parallel unit: :func:`writes_unit_files`), so on several nodes the output folder must
be on a filesystem they share.

Example:
    >>> results = run_units(["a", "b", "c"], str.upper, on_round=print, save=lambda: None)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Sequence, TypeVar

import torch

from .errors import ConfigError

__all__ = ["UnitsConfig", "world_size", "rank", "is_main", "device", "barrier", "finish", "exit_with",
           "run_units", "unit_processes", "writes_unit_files", "grid", "in_order"]

U = TypeVar("U")
_SPAN = [1]  # how many processes the unit now running spans


@dataclass(frozen=True, kw_only=True)
class UnitsConfig:
    """How a harness spreads its units of work over the processes of a launch (nothing
    changes in one process; not recorded in the results: a folder resumes under any setting)."""

    data_parallel_from: int | None = 1024
    """A unit (a LAMA relation and method, a SuperGLUE task and seed) whose training set holds
    at least this many examples trains data-parallel over all the processes, one such unit
    at a time (its batch size must be divisible by the processes x accumulation steps, else
    it runs in one process); smaller units run one per process, side by side. 0 or none:
    every unit in one process."""

    def __post_init__(self) -> None:
        if self.data_parallel_from is not None and (isinstance(self.data_parallel_from, bool)
                                                    or self.data_parallel_from < 0):
            raise ConfigError("data_parallel_from", f"must be 0 or more, got {self.data_parallel_from!r}")

    def data_parallel(self, train_examples: int, batch_size: int, grad_accum: int = 1) -> bool:
        """Whether a unit with this many training examples (and this batch) trains over all
        the processes: never in one process."""
        world = world_size()
        return (world > 1 and bool(self.data_parallel_from) and train_examples >= self.data_parallel_from
                and batch_size % (world * grad_accum) == 0)


def world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (``RANK``; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the result files (rank 0)."""
    return rank() == 0


def _state() -> Any:
    """Accelerate's process state: joins the process group (gloo on a CPU-only machine,
    the GPU's backend otherwise) the first time it is asked for."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def device() -> torch.device:
    """This process's device: its own GPU under a launcher, else the GPU or the CPU."""
    if world_size() > 1:
        return _state().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def barrier() -> None:
    """Wait until every process gets here (nothing in one process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def finish() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_with(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` and end the process with its exit code (an exception: its traceback and 1).

    Under a launcher the process then leaves the process group, flushes its output and exits
    at once, without the interpreter's teardown: a process whose teardown meets C++ threads
    still running (gloo's) can abort there (``terminate called without an active
    exception``, SIGABRT) after its work is done, and the launcher then fails the whole run.
    In one process it exits as usual."""
    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) or e.code is None else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - reported, then the exit code says it
        traceback.print_exc()
        code = 1
    code = int(code or 0)
    if world_size() > 1:
        finish()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    sys.exit(code)


def unit_processes() -> int:
    """How many processes train the unit now running: 1 (it runs in this process alone; also
    outside :func:`run_units`) or all of them (a data-parallel unit)."""
    return _SPAN[0]


def writes_unit_files() -> bool:
    """Whether this process writes the running unit's own files: the process running it
    alone, or rank 0 of a data-parallel unit."""
    return _SPAN[0] == 1 or is_main()


def run_units(units: Sequence[U], run: Callable[[U], Any], *, on_round: Callable[[list[tuple[U, Any]]], None],
              save: Callable[[], None], together: Callable[[U], bool] | None = None) -> None:
    """Run every unit once: the ``together`` ones data-parallel over all the processes, one
    at a time, then the others split across the processes in rounds.

    Args:
        units: the unfinished units; rank 0's list counts (the others may have read the
            folder after rank 0 began writing to it).
        run: computes one unit's result (picklable); inside it, :func:`unit_processes` says
            whether it trains alone or data-parallel.
        on_round: called on every process with the round's ``(unit, result)`` pairs in unit
            order, to update its copy of the results.
        save: called on rank 0 after each round, to write the result files.
        together: whether a unit trains data-parallel (asked under a launch only; e.g.
            :meth:`UnitsConfig.data_parallel`).

    Raises:
        The unit's own exception on the process that ran it; ``RuntimeError`` naming the unit
        and the process on the others (after rank 0 has saved the round's finished units).
    """
    world = world_size()
    # every process asks (an error then stops them all alike); rank 0's answers count
    pairs = [(u, world > 1 and together is not None and together(u)) for u in units]
    if world > 1:
        from accelerate.utils import broadcast_object_list

        _state()  # every process joins the group, even one without units
        pairs = broadcast_object_list([pairs])[0]
    for unit in [u for u, t in pairs if t]:  # every process runs it; rank 0's result counts
        _SPAN[0] = world
        try:
            _round([unit], run, on_round, save, everyone=True)
        finally:
            _SPAN[0] = 1
    alone = [u for u, t in pairs if not t]
    for start in range(0, len(alone), world):
        _round(alone[start : start + world], run, on_round, save, everyone=False)


def _round(chunk: list[U], run: Callable[[U], Any], on_round: Callable[[list[tuple[U, Any]]], None],
           save: Callable[[], None], everyone: bool) -> None:
    """Rank ``r`` runs ``chunk[r]`` (``everyone``: every rank runs ``chunk[0]``); the results
    reach every process, rank 0 saves, and a failure anywhere raises everywhere."""
    world, me = world_size(), rank()
    error: BaseException | None = None
    mine: tuple[str, Any] | None = None
    if everyone or me < len(chunk):
        try:
            mine = ("ok", run(chunk[0] if everyone else chunk[me]))
        except Exception as e:  # the others must learn of it, or they would wait forever
            if world == 1:
                raise
            error, mine = e, ("error", f"{type(e).__name__}: {e}")
    gathered = _gather(mine, world)
    failed = [(i, r[1]) for i, r in enumerate(gathered) if r is not None and r[0] == "error"]
    if everyone:  # one unit: its result is rank 0's, and only if no process failed
        gathered = [None if failed else gathered[0]]
    on_round([(u, r[1]) for u, r in zip(chunk, gathered) if r is not None and r[0] == "ok"])
    if is_main():
        save()
    if error is not None:
        raise error
    if failed:
        i, msg = failed[0]
        raise RuntimeError(f"unit {chunk[0 if everyone else i]!r} failed in process {i}: {msg}")


def grid(rows: Sequence[Any], cols: Sequence[Any]) -> list[tuple[Any, Any]]:
    """The units ``(row, col)``: row by row in one process; column by column under several,
    so that a round's units (one column: e.g. one LAMA method) cost about the same."""
    if world_size() == 1:
        return [(r, c) for r in rows for c in cols]
    return [(r, c) for c in cols for r in rows]


def in_order(mapping: dict[Any, Any], order: Sequence[Any]) -> dict[Any, Any]:
    """``mapping`` with its keys in ``order`` (keys not in it after them, as they were): a
    result file's layout does not depend on which process finished first."""
    rank_of = {k: i for i, k in enumerate(order)}
    return {k: mapping[k] for k in sorted(mapping, key=lambda k: rank_of.get(k, len(order)))}


def _gather(mine: Any, world: int) -> list[Any]:
    """Every process's object, in rank order, on every process."""
    if world == 1:
        return [mine]
    from accelerate.utils import gather_object

    return gather_object([mine])
