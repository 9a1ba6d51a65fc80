"""Run by test_crash.py: ``ptune train`` killed (SIGKILL) at given points, then resumed.

Usage: python crash_runs.py SPEC.json RESULT.json

SPEC holds ``argv`` (a ``ptune train`` command line without --output), ``reference``
(the folder of the uninterrupted run) and ``runs`` (``{folder: kill point}``). The
reference runs in this process (on one thread); every other run is a child forked from
it afterwards, so imports and first-call set-up are paid once. For each kill point: the killed run, a plain rerun (which must refuse the folder),
and the resumed run; RESULT maps each folder to their exit statuses (-9: killed).
"""

import json
import os
import sys

import torch

from ptune.cli import main
from ptune.files import CRASH_ENV

torch.set_num_threads(1)  # no thread pool in the process that forks


def run(argv: list[str], crash: str | None, log: str) -> int:
    pid = os.fork()
    if pid == 0:  # the child: its own environment, one thread, output to a log
        try:
            if crash:
                os.environ[CRASH_ENV] = crash
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = main(argv)
        except BaseException:  # noqa: BLE001 - the child never returns into the parent's code
            import traceback

            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main_(spec_file: str, result_file: str) -> None:
    with open(spec_file) as fh:
        spec = json.load(fh)
    argv, logs = spec["argv"], spec["logs"]
    results = {"reference": main([*argv, "--output", spec["reference"]])}
    for folder, point in spec["runs"].items():
        log = f"{logs}/{os.path.basename(folder)}.log"
        killed = run([*argv, "--output", folder], point, log)
        plain = run([*argv, "--output", folder], None, log)
        resumed = run([*argv, "--output", folder, "--resume"], None, log)
        results[folder] = [killed, plain, resumed]
    with open(result_file, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main_(sys.argv[1], sys.argv[2])
