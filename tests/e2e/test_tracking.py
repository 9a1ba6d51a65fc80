"""`ptune train --report-to tensorboard`: the event file, read back with TensorBoard's own reader,
holds the dev metric at every evaluation step, the loss and learning rate of every step, and the
run's config; unknown or missing trackers are one-line errors."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import pair, saved_model, sentiment
from ptune import TrainConfig
from ptune.cli import main
from ptune.errors import ConfigError
from ptune.tracking import flat_config


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    saved_model(root / "gpt2")
    for name, rows in (("train", sentiment(32)), ("dev", sentiment(8, seed=1))):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _train(files, out, *extra):
    return main(["train", "--model", str(files / "gpt2"), "--train", str(files / "train.jsonl"),
                 "--dev", str(files / "dev.jsonl"), "--template", "{text} [P*2] [MASK]",
                 "--verbalizer", '{"pos": "yes", "neg": "no"}', "--encoder", "mlp", "--output", str(out),
                 "--steps", "12", "--eval-every", "4", "--lr", "1e-2", "--batch-size", "8", *extra])


def test_tensorboard_event_file_holds_every_evaluation(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(files, out, "--report-to", "tensorboard") == 0
    capsys.readouterr()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("eval") == "dev"]
    steps = [r for r in records if "loss" in r and "eval" not in r]
    assert [r["step"] for r in evals] == [4, 8, 12]

    events = EventAccumulator(str(out / "logs" / "ptune"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"dev/accuracy", "dev/loss", "train/loss", "train/lr_prompt"} <= set(scalars)
    acc = events.Scalars("dev/accuracy")
    assert [e.step for e in acc] == [4, 8, 12]
    assert [e.value for e in acc] == pytest.approx([r["accuracy"] for r in evals])
    assert [e.value for e in events.Scalars("dev/loss")] == pytest.approx([r["loss"] for r in evals], rel=1e-6)
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 13))
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    assert [e.value for e in events.Scalars("train/lr_prompt")] == pytest.approx([r["lr"] for r in steps], rel=1e-6)
    hparams = list((out / "logs" / "ptune").rglob("hparams.yml"))  # the run's config, as the tracker stored it
    assert len(hparams) == 1
    text = hparams[0].read_text()
    assert "train.lr: 0.01" in text and "model.template: '{text} [P*2] [MASK]'" in text


def test_unknown_or_missing_tracker_is_one_line(files, tmp_path, capsys):
    assert _train(files, tmp_path / "a", "--report-to", "tensorbored") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptune: error: report_to: unknown tracker 'tensorbored'; accepted: all, ")
    assert "\n" not in err and not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="the tracker 'dvclive' is not installed"):
        TrainConfig(report_to=("dvclive",))  # not installed in the test environment
    assert TrainConfig(report_to="tensorboard").report_to == ("tensorboard",)


def test_tensorboard_needs_a_run_folder():
    from ptune import PromptConfig, PTunedModel, train

    lm, tok = pair("gpt2", hidden=64, init_range=0.2, dropout=0.0)
    model = PTunedModel(lm, tok, PromptConfig(template="{text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"}))
    with pytest.raises(ConfigError, match="report_to: tensorboard writes files into the run folder"):
        train(model, sentiment(8), None, TrainConfig(steps=1, batch_size=8, report_to=("tensorboard",)), progress=False)


def test_flat_config():
    assert flat_config({"train": {"lr": 0.1, "steps": None}, "model": {"verbalizer": {"pos": ["yes", "ok"]},
                                                                      "encoder": {"type": "lstm"}, "x": (1, 2)}}) == {
        "train.lr": 0.1, "train.steps": None, "model.verbalizer.pos": '["yes", "ok"]', "model.encoder.type": "lstm",
        "model.x": "[1, 2]"}
