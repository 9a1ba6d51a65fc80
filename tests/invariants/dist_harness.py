"""Run by test_distributed.py: ``ptune probe`` and ``ptune superglue`` on tiny models, in
one process or under accelerate launch / torchrun.

Usage: python dist_harness.py OUT WORLD_LM LAMA_DIR SG_MODEL FEWGLUE_DIR [units|data-parallel]

``units`` (default): many small units, one per process. ``data-parallel``: one LAMA relation
and one SuperGLUE task whose training sets count as large (``--data-parallel-from``), so
each trains over all the processes.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src"))

from ptune.cli import main  # noqa: E402
from ptune.distributed import exit_with  # noqa: E402

PROBE = ["--relations", "P19,P20,P36", "--methods", "majority,manual,ptuning", "--epochs", "1", "--batch-size", "8"]
SUPERGLUE = ["--task", "all", "--frozen", "--seeds", "1", "--max-steps", "1", "--eval-every", "1", "--batch-size", "4",
             "--limit-eval", "4", "--max-length", "256", "--save-checkpoints"]


PROBE_DP = ["--relations", "P19", "--methods", "ptuning", "--epochs", "2", "--batch-size", "8",
            "--restart-below", "0", "--data-parallel-from", "8"]
SUPERGLUE_DP = ["--task", "RTE", "--frozen", "--seeds", "1", "--max-steps", "2", "--eval-every", "1", "--batch-size", "4",
                "--limit-eval", "8", "--max-length", "256", "--save-checkpoints", "--data-parallel-from", "8"]


def run(out: str, world_lm: str, lama: str, sg_model: str, fewglue: str, mode: str = "units") -> None:
    probe, superglue = (PROBE, SUPERGLUE) if mode == "units" else (PROBE_DP, SUPERGLUE_DP)
    code = main(["probe", "--model", world_lm, "--data-dir", lama, "--output", os.path.join(out, "probe"), *probe])
    code = code or main(["superglue", "--model", sg_model, "--data-dir", fewglue, "--output",
                         os.path.join(out, "superglue"), *superglue])
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    exit_with(lambda: run(*sys.argv[1:]))  # under a launcher: no interpreter teardown, which can abort
