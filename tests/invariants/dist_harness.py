"""Run by test_distributed.py: ``ptune probe`` and ``ptune superglue`` on tiny models, in
one process or under accelerate launch / torchrun.

Usage: python dist_harness.py OUT WORLD_LM LAMA_DIR SG_MODEL FEWGLUE_DIR
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src"))

from ptune.cli import main  # noqa: E402

PROBE = ["--relations", "P19,P20,P36", "--methods", "majority,manual,ptuning", "--epochs", "1", "--batch-size", "8"]
SUPERGLUE = ["--task", "all", "--frozen", "--seeds", "1", "--max-steps", "1", "--eval-every", "1", "--batch-size", "4",
             "--limit-eval", "4", "--max-length", "256", "--save-checkpoints"]


def run(out: str, world_lm: str, lama: str, sg_model: str, fewglue: str) -> None:
    code = main(["probe", "--model", world_lm, "--data-dir", lama, "--output", os.path.join(out, "probe"), *PROBE])
    code = code or main(["superglue", "--model", sg_model, "--data-dir", fewglue, "--output",
                         os.path.join(out, "superglue"), *SUPERGLUE])
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    run(*sys.argv[1:])
