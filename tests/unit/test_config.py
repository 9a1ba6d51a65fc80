"""The config dataclasses: round trips, overrides, and the harness configs built on them."""

from __future__ import annotations

import dataclasses

import pytest

from ptune.config import COMPILE_MODES, PromptConfig, TrainConfig
from ptune.errors import ConfigError
from ptune.tasks import superglue as sg
from ptune.tasks.lama import LAMA_TRAIN, ProbeConfig


def test_round_trips_and_unknown_keys():
    train = TrainConfig(steps=5, compile="reduce-overhead")
    assert TrainConfig.from_dict(train.to_dict()) == train
    prompt = PromptConfig(template="{x} [MASK]", verbalizer={"a": "yes"}, encoder="mlp")
    assert prompt.encoder.type == "mlp" and prompt.to_dict()["encoder"] == {"type": "mlp", "lstm_dropout": 0.0}
    assert PromptConfig.from_dict(prompt.to_dict()) == prompt
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key; did you mean 'lr'\?"):
        TrainConfig.from_dict({"lrr": 1})
    with pytest.raises(ConfigError, match=r"prompt\.templte: unknown key; did you mean 'template'\?"):
        PromptConfig.from_dict({"templte": "[MASK]"})
    assert "reduce-overhead" in COMPILE_MODES
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig(compile="fast")


def test_train_updated_swaps_steps_and_epochs():
    base = TrainConfig(epochs=40, lr=3e-3)
    assert base.updated({"steps": 9}) == dataclasses.replace(base, steps=9, epochs=None)
    assert TrainConfig(steps=9).updated({"epochs": 2}).steps is None
    assert base.updated({}) == base
    with pytest.raises(ConfigError, match="steps"):
        base.updated({"steps": 9, "epochs": 2})
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        base.updated({"lrr": 1})


def test_prompt_check_fields():
    got = PromptConfig.check_fields({"encoder": "none", "max_length": 64}, ("template",), "the harness")
    assert got == {"encoder": {"type": "none", "lstm_dropout": 0.0}, "max_length": 64}
    with pytest.raises(ConfigError, match=r"prompt\.template: set by the harness"):
        PromptConfig.check_fields({"template": "[MASK]"}, ("template",), "the harness")
    with pytest.raises(ConfigError, match=r"prompt\.max_length: must be at least 2"):
        PromptConfig.check_fields({"max_length": 1}, (), "the harness")
    with pytest.raises(ConfigError, match=r"prompt\.encoder\.type"):
        PromptConfig.check_fields({"encoder": "rnn"}, (), "the harness")


def test_probe_config_holds_train_and_prompt_fields():
    assert ProbeConfig().train is LAMA_TRAIN and ProbeConfig().prompt == {}
    cfg = ProbeConfig(relations=("all",), train={"epochs": 3, "seed": 1}, prompt={"template": "[X] [P] [MASK]"})
    assert cfg.relations is None and cfg.train == dataclasses.replace(LAMA_TRAIN, epochs=3, seed=1)
    assert cfg.prompt == {"template": "[X] [P] [MASK]"}
    whole = TrainConfig(steps=1)
    assert ProbeConfig(train=whole).train is whole
    with pytest.raises(ConfigError, match=r"prompt\.verbalizer: set by the LAMA harness"):
        ProbeConfig(prompt={"verbalizer": {"a": "b"}})
    with pytest.raises(ConfigError, match="vocab"):
        ProbeConfig(vocab="mine")
    with pytest.raises(ConfigError, match=r"train\.pateince"):
        ProbeConfig(train={"pateince": 1})


def test_superglue_config_holds_train_and_prompt_fields():
    cfg = sg.SuperGlueConfig(tasks=("all",), train={"steps": 3, "finetune_lm": False}, prompt={"encoder": "mlp"})
    assert cfg.tasks == sg.TASKS and cfg.frozen and not sg.SuperGlueConfig().frozen
    assert cfg.to_dict()["train"] == {"steps": 3, "finetune_lm": False}
    assert cfg.to_dict()["prompt"] == {"encoder": {"type": "mlp", "lstm_dropout": 0.0}}
    spec = sg.SPECS["RTE"]
    tc = sg._train_config(spec, cfg, seed=7, n_train=32)
    assert (tc.steps, tc.lr, tc.seed, tc.batch_size, tc.eval_every, tc.finetune_lm) == (3, 1e-3, 7, 16, 3, False)
    tc = sg._train_config(spec, sg.SuperGlueConfig(tasks=("RTE",)), seed=1, n_train=8)
    assert (tc.steps, tc.lr, tc.batch_size, tc.metric, tc.lm_weight_decay) == (spec.steps, spec.lr, 8, "score", 0.1)
    for bad, says in (({"epochs": 2}, r"train\.epochs"), ({"seed": 2}, r"train\.seed"), ({"lr": -1}, "lr")):
        with pytest.raises(ConfigError, match=says):
            sg.SuperGlueConfig(train=bad)
    with pytest.raises(ConfigError, match=r"prompt\.template: set by the task's spec"):
        sg.SuperGlueConfig(prompt={"template": "[MASK]"})
    with pytest.raises(ConfigError, match="seeds"):
        sg.SuperGlueConfig(seeds=())
