"""Crash safety: ``ptune train`` killed with SIGKILL at many points (between steps, inside
checkpoint writes, between the two renames of a commit, between committing last/ and
best/) resumes to exactly the run that was never interrupted: same weights bit for bit,
same trainer state, each step logged once, no temporary files left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import saved_model, sentiment

HERE = Path(__file__).resolve().parent
POINTS = {  # kill point (ptune.files.crash_point name#hit) -> what the kill interrupts
    "metrics-logged#4": "between checkpoints: step 3 logged, last/ holds step 2",
    "file-written#3": "inside a checkpoint write: a finished temporary file not yet renamed",
    "dir-written#2": "the first last/ written in full under its temporary name",
    "dir-staged#1": "the first last/ staged as .last.new, before its rename",
    "last-saved#1": "after last/ is committed, before the staged best/ is",
    "dir-between-renames#1": "between the two renames that replace last/",
    "dir-renamed#3": "after a commit's renames, before the old folder is removed",
}


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    saved_model(root / "gpt2")
    for name, rows in (("train", sentiment(16)), ("dev", sentiment(8, seed=1))):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "logs").mkdir()
    argv = ["train", "--model", str(root / "gpt2"), "--train", str(root / "train.jsonl"), "--dev",
            str(root / "dev.jsonl"), "--template", "{text} [P*2] [MASK]", "--verbalizer", '{"pos": "yes", "neg": "no"}',
            "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--lr", "3e-2", "--encoder", "lstm"]
    runs = {str(root / f"run{i}"): point for i, point in enumerate(POINTS)}
    spec = {"argv": argv, "reference": str(root / "reference"), "runs": runs, "logs": str(root / "logs")}
    (root / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE.parent), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, str(HERE / "crash_runs.py"), str(root / "spec.json"), str(root / "result.json")],
                   check=True, timeout=600, cwd=root, env=env)
    return root, runs, json.loads((root / "result.json").read_text())


def _records(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # wall time differs


@pytest.mark.parametrize("point", list(POINTS))
def test_a_killed_run_resumes_to_the_uninterrupted_one(crashed, point):
    root, runs, result = crashed
    folder = Path(next(f for f, p in runs.items() if p == point))
    reference = root / "reference"
    logs = (root / "logs" / f"{folder.name}.log").read_text()
    assert result["reference"] == 0
    killed, plain, resumed = result[str(folder)]
    assert killed == -9, f"{POINTS[point]}: the kill point was not reached\n{logs}"
    assert plain == 2 and "already holds a run" in logs, "a plain rerun must refuse, not start again from step 0"
    assert resumed == 0, logs
    for ckpt in ("best", "last"):
        got, want = load_file(str(folder / ckpt / "prompt.safetensors")), load_file(str(reference / ckpt / "prompt.safetensors"))
        assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want), f"{ckpt}/ differs ({POINTS[point]})"
    state = json.loads((folder / "last" / "trainer_state.json").read_text())
    assert state == json.loads((reference / "last" / "trainer_state.json").read_text())
    assert _records(folder) == _records(reference), "metrics.jsonl: each step once, as in the uninterrupted run"
    leftovers = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert leftovers == [], f"temporary files or a lock left: {leftovers}"
