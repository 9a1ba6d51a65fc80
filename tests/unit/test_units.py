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
