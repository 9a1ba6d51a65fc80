"""CLI options generated from the config dataclasses, and --config FILE (JSON, YAML, TOML)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ptune.cli import build_parser, main
from ptune.cli_harness import _probe_config, _superglue_config
from ptune.config import PromptConfig, TrainConfig
from ptune.encoder import EncoderConfig
from ptune.errors import ConfigError
from ptune.options import field_docs, read_config_file
from ptune.tasks.lama import LAMA_TRAIN
from ptune.tasks.superglue import SUPERGLUE_TRAIN

TRAIN_ARGS = ["train", "--model", "m", "--train", "t.jsonl", "--output", "out"]


def _resolve(argv):
    args = build_parser().parse_args(argv)
    return args._options.resolve(args)


def _help(capsys, *command) -> str:
    with pytest.raises(SystemExit) as ex:
        main([*command, "--help"])
    assert ex.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ptune: error: ")
    return err


def test_field_docs_are_the_strings_under_the_fields():
    docs = field_docs(TrainConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert docs["grad_accum"] == "Micro-batches accumulated per optimizer step (each of batch_size/grad_accum)."
    assert docs["metric"].startswith("The dev metric that selects the best checkpoint (higher is better). A tie")
    assert field_docs(EncoderConfig)["type"].startswith("``lstm`` (the paper's)")
    assert field_docs(TrainConfig) is docs  # read once


def test_every_train_config_field_is_a_flag_with_its_docstring(capsys):
    text = _help(capsys, "train")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        first = " ".join(field_docs(TrainConfig)[f.name].split())[:30].replace("``", "")
        assert first in text, first
    for f in dataclasses.fields(PromptConfig):
        assert "--" + f.name.replace("_", "-") in text or f.name == "encoder"
    assert "--encoder {lstm,mlp,none}" in text and "--encoder-lstm-dropout" in text
    assert "--finetune-lm, --no-finetune-lm" in text and "(default: 8)" in text  # batch size


def test_flags_parse_to_config_fields():
    o = _resolve([*TRAIN_ARGS, "--template", "{text} [P] [MASK]", "--verbalizer", '{"pos": "yes"}',
                  "--steps", "30", "--lr", "1e-2", "--finetune-lm", "--compile", "--kind", "causal",
                  "--encoder", "mlp", "--max-grad-norm", "none", "--no-lm-dropout"])
    train = TrainConfig(**o.section("train"))
    assert (train.steps, train.lr, train.finetune_lm, train.compile) == (30, 1e-2, True, True)
    assert train.max_grad_norm is None and train.lm_dropout is False
    assert train.batch_size == 8  # not given: the config's default
    prompt = PromptConfig(**o.section("prompt"))
    assert prompt.verbalizer == {"pos": ["yes"]} and prompt.kind == "causal" and prompt.encoder.type == "mlp"
    assert o["model"] == "m" and o["resume"] is False and o.get("dev") is None
    o = _resolve([*TRAIN_ARGS, "--template", "[MASK]", "--compile", "reduce-overhead"])
    assert o["train.compile"] == "reduce-overhead"


CONFIG = {
    "json": json.dumps({"template": "{text} [P] [MASK]", "verbalizer": {"pos": "yes", "neg": "no"},
                        "prompt": {"encoder": {"type": "mlp"}}, "train": {"epochs": 3, "lr": 0.01},
                        "batch-size": 4}),
    "yaml": "template: '{text} [P] [MASK]'\nverbalizer: {pos: 'yes', neg: 'no'}\nprompt:\n  encoder: mlp\n"
            "train:\n  epochs: 3\n  lr: 1e-2\nbatch_size: 4\n",
    "toml": "template = '{text} [P] [MASK]'\nbatch_size = 4\n[verbalizer]\npos = 'yes'\nneg = 'no'\n"
            "[prompt.encoder]\ntype = 'mlp'\n[train]\nepochs = 3\nlr = 0.01\n",
}


@pytest.mark.parametrize("fmt", ["json", "yaml", "toml"])
def test_config_file_and_flags_over_it(tmp_path, fmt):
    path = tmp_path / f"run.{fmt}"
    path.write_text(CONFIG[fmt])
    o = _resolve([*TRAIN_ARGS, "--config", str(path)])
    train, prompt = TrainConfig(**o.section("train")), PromptConfig(**o.section("prompt"))
    assert (train.epochs, train.lr, train.batch_size) == (3, 0.01, 4)
    assert prompt.verbalizer == {"pos": ["yes"], "neg": ["no"]} and prompt.encoder.type == "mlp"
    # the command line wins; --steps replaces the file's epochs
    o = _resolve([*TRAIN_ARGS, "--config", str(path), "--lr", "0.5", "--steps", "7", "--encoder", "none"])
    train, prompt = TrainConfig(**o.section("train")), PromptConfig(**o.section("prompt"))
    assert (train.steps, train.epochs, train.lr, train.batch_size) == (7, None, 0.5, 4)
    assert prompt.encoder.type == "none"


def test_config_file_can_hold_the_commands_own_options(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ntrain: t.jsonl\noutput: out\ntemplate: '[MASK]'\nresume: true\n")
    o = _resolve(["train", "--config", str(path)])
    assert (o["model"], o["train"], o["output"], o["resume"]) == ("m", "t.jsonl", "out", True)


@pytest.mark.parametrize("text,says", [
    ("train:\n  lrr: 0.1\n", "run.yaml: train.lrr: unknown key; did you mean 'train.lr'?"),
    ("batchsize: 4\n", "run.yaml: batchsize: unknown key; did you mean 'batch_size'?"),
    ("lr: fast\n", "run.yaml: lr: expected a number, got 'fast'"),
    ("steps: true\n", "run.yaml: steps: expected an integer, got bool True"),
    ("schedule: cosine\n", "run.yaml: schedule: 'cosine'; accepted: linear, exponential, constant"),
    ("grad_accum: 3\n", "run.yaml: train.grad_accum: batch_size 8 is not divisible by 3"),
    ("lr: -1\n", "run.yaml: train.lr: must be positive, got -1.0"),
    ("lr: 1\ntrain: {lr: 2}\n", "run.yaml: train.lr: given twice (also as 'lr')"),
    ("encoder: {type: rnn}\n", "run.yaml: encoder.type: 'rnn'; accepted: lstm, mlp, none"),
    ("lr: [1\n", "run.yaml: invalid YAML"),
    ("- lr\n", "run.yaml: expected a mapping of option names to values, got list"),
])
def test_bad_config_file_is_one_line_naming_file_and_key(tmp_path, capsys, text, says):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert main([*TRAIN_ARGS, "--template", "[MASK]", "--verbalizer", '{"a": "b"}', "--config", str(path)]) == 2
    err = _error(capsys)
    assert says in err, err


def test_config_file_formats_and_errors(tmp_path):
    (tmp_path / "a.toml").write_text("lr = \n")
    with pytest.raises(ConfigError, match=r"a\.toml: invalid TOML"):
        read_config_file(tmp_path / "a.toml")
    (tmp_path / "a.json").write_text('{"lr": 1,}')
    with pytest.raises(ConfigError, match=r"a\.json: invalid JSON at line 1 column 10"):
        read_config_file(tmp_path / "a.json")
    (tmp_path / "a.ini").write_text("")
    with pytest.raises(ConfigError, match="unknown config format '.ini'; accepted: .json, .yaml, .yml, .toml"):
        read_config_file(tmp_path / "a.ini")
    with pytest.raises(ConfigError, match="no such config file"):
        read_config_file(tmp_path / "none.yaml")
    (tmp_path / "empty.yml").write_text("")
    assert read_config_file(tmp_path / "empty.yml") == {}


def test_usage_errors_and_missing_options_are_one_line(capsys):
    assert main([*TRAIN_ARGS, "--template", "[MASK]", "--steps", "many"]) == 2
    assert "argument --steps: expected an integer, got 'many'" in _error(capsys)
    assert main(["train", "--model", "x"]) == 2
    assert "the following options are required: --train, --output, --template" in _error(capsys)
    assert main(["probe", "--methods", "manual,guess", "--model", "m", "--data-dir", "d", "--output", "o"]) == 2
    assert "'guess'; accepted: manual, ptuning, hybrid, oracle, majority" in _error(capsys)


def test_probe_options_and_config(tmp_path, capsys):
    text = _help(capsys, "probe")
    assert "--epochs N Passes over the training data; exclusive with steps. (default: 40)" in text
    assert "--finetune-lm" not in text and "--relations TEXT,..." in text
    path = tmp_path / "probe.toml"
    path.write_text("relations = ['P19', 'P36']\nmethods = 'manual,ptuning'\n[prompt]\nencoder = 'mlp'\n"
                    "template = '[P*2] [X] [MASK]'\n[train]\nepochs = 5\n")
    config = _probe_config(_resolve(["probe", "--config", str(path), "--model", "m", "--data-dir", "d",
                                     "--output", "o", "--patience", "2"]))
    assert config.relations == ("P19", "P36") and config.methods == ("manual", "ptuning")
    assert config.prompt == {"encoder": {"type": "mlp", "lstm_dropout": 0.0}, "template": "[P*2] [X] [MASK]"}
    assert config.train == dataclasses.replace(LAMA_TRAIN, epochs=5, patience=2)
    config = _probe_config(_resolve(["probe", "--model", "m", "--data-dir", "d", "--output", "o", "--steps", "9"]))
    assert config.relations is None and config.train == dataclasses.replace(LAMA_TRAIN, steps=9, epochs=None)


def test_superglue_options_and_config(tmp_path, capsys):
    text = _help(capsys, "superglue")
    assert "--max-steps N, --steps N" in text and "--task TEXT,..., --tasks TEXT,..." in text
    assert "(default: the paper's per task; 1e-3 with a frozen LM)" in text and "--frozen" in text
    path = tmp_path / "sg.yaml"
    path.write_text("tasks: [rte, cb]\nseeds: 1,2\nfrozen: true\nprompt: {max_length: 128}\n"
                    "train: {batch_size: 4, lm_lr: 2.0e-5}\n")
    base = ["superglue", "--config", str(path), "--model", "m", "--data-dir", "d", "--output", "o"]
    config = _superglue_config(_resolve([*base, "--max-steps", "3"]))
    assert config.tasks == ("RTE", "CB") and config.seeds == (1, 2) and config.frozen
    assert config.train == {"finetune_lm": False, "batch_size": 4, "lm_lr": 2e-5, "steps": 3}
    assert config.prompt == {"max_length": 128}
    config = _superglue_config(_resolve([*base, "--task", "all", "--finetune-lm"]))
    assert len(config.tasks) == 8 and not config.frozen
    assert SUPERGLUE_TRAIN.updated(config.train).batch_size == 4


def test_plain_options_of_every_command_are_config_keys(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("arch: tiny\ncompile: reduce-overhead\nsteps: 5\n")
    o = _resolve(["bench", "--config", str(path), "--steps", "6"])
    assert (o["arch"], o["compile"], o["steps"], o["json"], o["batch"]) == ("tiny", "reduce-overhead", 6, None, 8)
    path.write_text("arch: huge\n")
    with pytest.raises(ConfigError, match=r"bench\.yaml: arch: 'huge'; accepted: "):
        _resolve(["bench", "--config", str(path)])
    path.write_text("seed: 3\npreset: mini\n")
    o = _resolve(["world", "build", "--config", str(path), "--output", "w"])
    assert (o["seed"], o["preset"], o["output"]) == (3, "mini", "w")
    path.write_text("checkpoint: ck\ntop: 2\n")
    assert _resolve(["inspect", "--config", str(path)])["top"] == 2
    path.write_text("checkpoint: ck\ndata: d.jsonl\nbatch_size: 4\n")
    assert _resolve(["eval", "--config", str(path)])["train.eval_batch_size"] == 4
