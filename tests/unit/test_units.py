"""The unit runner of the harnesses in one process (two processes: tests/invariants/test_distributed.py)."""

from __future__ import annotations

import pytest

from conftest import pair, sentiment
from ptune import PromptConfig, PTunedModel, TrainConfig
from ptune.distributed import grid, in_order, run_units
from ptune.errors import ConfigError
from ptune.trainer import train


def test_one_process_runs_and_saves_unit_by_unit_and_stops_at_a_failure():
    rounds, saved = [], []

    def run(unit: str) -> str:
        if unit == "c":
            raise ValueError("broken unit")
        return unit.upper()

    with pytest.raises(ValueError, match="broken unit"):
        run_units(["a", "b", "c", "d"], run, on_round=rounds.append, save=lambda: saved.append(len(rounds)))
    assert rounds == [[("a", "A")], [("b", "B")]] and saved == [1, 2]  # what finished is saved; d never ran


def test_a_run_alone_trains_as_the_plain_run_and_keeps_its_weights_in_memory(tmp_path):
    import torch

    def model() -> PTunedModel:
        lm, tok = pair("gpt2")
        return PTunedModel(lm, tok, PromptConfig(template="{text} [P*2] [MASK]", verbalizer={"pos": "yes", "neg": "no"}),
                           seed=0)

    config = TrainConfig(steps=3, batch_size=4, lr=1e-2, eval_every=2)
    with pytest.raises(ConfigError, match="output folder"):
        train(model(), sentiment(8), None, config, tmp_path / "run", alone=True)
    plain, alone = model(), model()
    a = train(plain, sentiment(8), sentiment(8, seed=1), config)
    b = train(alone, sentiment(8), sentiment(8, seed=1), config, alone=True)
    assert (b.steps, b.num_processes, b.history) == (a.steps, 1, a.history)
    for (name, x), y in zip(plain.encoder.state_dict().items(), alone.encoder.state_dict().values()):
        assert torch.equal(x, y), name


def test_unit_order_and_result_layout_do_not_depend_on_the_processes(monkeypatch):
    assert grid("ab", "xy") == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    monkeypatch.setenv("WORLD_SIZE", "2")  # column by column: a round's units are alike
    assert grid("ab", "xy") == [("a", "x"), ("b", "x"), ("a", "y"), ("b", "y")]
    assert list(in_order({"old": 0, "y": 1, "x": 2}, ["x", "y"])) == ["x", "y", "old"]


def test_large_units_train_data_parallel_only_under_a_launch_and_with_a_batch_that_splits(monkeypatch):
    from ptune.distributed import UnitsConfig, unit_processes, writes_unit_files

    units = UnitsConfig(data_parallel_from=100)
    assert not units.data_parallel(5000, 32)  # one process: nothing to spread over
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert units.data_parallel(100, 32) and units.data_parallel(5000, 32, grad_accum=4)
    assert not units.data_parallel(99, 32)  # small: one process per unit, side by side
    assert not units.data_parallel(5000, 33) and not units.data_parallel(5000, 32, grad_accum=32)  # cannot split
    assert not UnitsConfig(data_parallel_from=0).data_parallel(5000, 32)
    assert not UnitsConfig(data_parallel_from=None).data_parallel(5000, 32)
    with pytest.raises(ConfigError, match="data_parallel_from"):
        UnitsConfig(data_parallel_from=-1)
    assert (unit_processes(), writes_unit_files()) == (1, True)  # outside a data-parallel unit


def test_in_one_process_every_unit_runs_alone_in_order_whatever_counts_as_large():
    from ptune.distributed import unit_processes

    rounds = []
    run_units(["a", "b", "c"], lambda u: (u, unit_processes()), on_round=rounds.append, save=lambda: None,
              together=lambda u: u == "b")
    assert rounds == [[("a", ("a", 1))], [("b", ("b", 1))], [("c", ("c", 1))]]


def test_the_trainer_builds_its_accelerator_outside_accelerate_s_fsdp_mode(monkeypatch):
    """Under an FSDP launch, Accelerate's own FSDP mode is off while ptune builds its
    Accelerator (ptune shards the LM itself), and the launch's setting is back afterwards,
    also after an error; without FSDP nothing changes."""
    import os

    from ptune.sharding import outside_accelerate_fsdp

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with outside_accelerate_fsdp():
        assert os.environ["ACCELERATE_USE_FSDP"] == "false"
    assert os.environ["ACCELERATE_USE_FSDP"] == "true"
    with pytest.raises(RuntimeError):
        with outside_accelerate_fsdp():
            raise RuntimeError("the accelerator failed")
    assert os.environ["ACCELERATE_USE_FSDP"] == "true"
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    with outside_accelerate_fsdp():
        assert "ACCELERATE_USE_FSDP" not in os.environ


def test_exit_with_ends_the_process_with_main_s_code_and_under_a_launcher_skips_the_teardown():
    import subprocess
    import sys
    from pathlib import Path

    from ptune.distributed import exit_with

    for main, code in ((lambda: 2, 2), (lambda: None, 0), (lambda: 1 / 0, 1), (lambda: sys.exit("bad"), 1)):
        with pytest.raises(SystemExit) as e:
            exit_with(main)
        assert e.value.code == code
    src = str(Path(__file__).resolve().parents[2] / "src")
    script = ("import atexit, sys; from ptune.distributed import exit_with; "
              "atexit.register(lambda: print('teardown ran')); print('written', end=''); exit_with(lambda: 3)")
    for world, teardown in (("2", False), ("1", True)):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env={"PYTHONPATH": src, "WORLD_SIZE": world, "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 3 and proc.stdout.startswith("written")  # output flushed before the exit
        assert ("teardown ran" in proc.stdout) is teardown
