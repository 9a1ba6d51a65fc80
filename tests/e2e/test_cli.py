"""The command line: train / eval / predict on files, --help, one-line errors with exit code 2."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import pair, sentiment
from ptune.card import read_card
from ptune.cli import main

VERB = '{"pos": "yes", "neg": "no"}'


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for family in ("gpt2", "bert"):
        lm, tok = pair(family, hidden=64, init_range=0.2, dropout=0.0)
        lm.save_pretrained(root / family)
        tok.save_pretrained(root / family)
    for name, rows in (("train", sentiment(48)), ("dev", sentiment(16, seed=1))):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(root / "train.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["text", "label"])
        w.writeheader()
        w.writerows(sentiment(48))
    return root


def _train(files, out, *extra, model="gpt2", train="train.jsonl"):
    return main(["train", "--model", str(files / model), "--train", str(files / train), "--dev", str(files / "dev.jsonl"),
                 "--template", "{text} [P*3] [MASK]", "--verbalizer", VERB, "--output", str(out),
                 "--steps", "30", "--lr", "1e-2", "--batch-size", "16", *extra])


@pytest.mark.parametrize("model,encoder", [("gpt2", "lstm"), ("bert", "mlp")])
def test_train_eval_predict(files, tmp_path, capsys, model, encoder):
    assert _train(files, tmp_path / "run", "--encoder", encoder, "--eval-every", "10", model=model) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # learned (chance is 0.5; both models reach 1.0 with the deterministic tiny tokenizers)
    assert summary["steps"] == 30 and summary["best"]["accuracy"] >= 0.9
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(files / "dev.jsonl"),
                 "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 16 and metrics["accuracy"] == summary["best"]["accuracy"]
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == metrics["accuracy"]
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "best"), "--data", str(files / "dev.jsonl")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 16 and all(set(r["scores"]) == {"pos", "neg"} for r in lines)
    assert all(r["label"] == max(r["scores"], key=r["scores"].get) for r in lines)
    assert lines[0]["source"].endswith("dev.jsonl:1")
    card = read_card(tmp_path / "run" / "best")  # the model card: what the checkpoint is and how it scored
    assert card["library_name"] == "ptune" and card["base_model"] == str(files / model)
    assert card["ptune"]["metrics"]["accuracy"] == summary["best"]["accuracy"]
    assert card["ptune"]["metrics"]["step"] == summary["best_step"] and card["ptune"]["training"]["steps"] == 30
    assert card["ptune"]["template"] == "{text} [P*3] [MASK]" and card["ptune"]["verbalizer"] == {"pos": ["yes"], "neg": ["no"]}


def test_csv_and_resume(files, tmp_path, capsys):
    assert _train(files, tmp_path / "run", "--encoder", "none", train="train.csv") == 0
    assert _train(files, tmp_path / "run") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _train(files, tmp_path / "run", "--resume") == 2
    assert 'was started with other prompt settings (encoder.type: "none" there, "lstm" here)' in _error(capsys)
    assert _train(files, tmp_path / "run", "--resume", "--encoder", "none") == 0  # nothing left: same 30 steps


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["predict"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as ex:
        main([*command, "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ptune")


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ptune: error: ")
    return err


def test_bad_input_errors(files, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    cases = [
        ('{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"\n', ":2: invalid JSON at column"),
        ('{"text": "a", "label": "pos"}\n\n{"txt": "b", "label": "neg"}\n', ":3: field 'text': missing"),
        ('{"text": "a", "label": "pos"}\n{"text": "b", "label": "maybe"}\n',
         ":2: field 'label': 'maybe' is not a label of the verbalizer (pos, neg)"),
        ('{"text": "a"}\n', ":1: field 'label': missing"),
    ]
    for k, (content, where) in enumerate(cases):
        bad.write_text(content)
        assert _train(files, tmp_path / f"r{k}", train=bad) == 2
        assert f"{bad}{where}" in _error(capsys)

    assert main(["train", "--model", str(files / "gpt2"), "--train", str(files / "train.jsonl"), "--template",
                 "{text} [P*3 [MASK]", "--verbalizer", VERB, "--output", str(tmp_path / "r5")]) == 2
    assert "column 8" in _error(capsys)

    assert main(["train", "--model", str(files / "gpt2"), "--train", str(files / "train.jsonl"), "--template",
                 "{text} [MASK]", "--verbalizer", '{"pos": "yes"', "--output", str(tmp_path / "r6")]) == 2
    assert "invalid JSON" in _error(capsys)

    assert main(["train", "--model", str(tmp_path / "no-model"), "--train", str(files / "train.jsonl"), "--template",
                 "{text} [P] [MASK]", "--verbalizer", VERB, "--output", str(tmp_path / "r7")]) == 2
    assert "cannot load" in _error(capsys)

    assert main(["eval", "--checkpoint", str(tmp_path), "--data", str(files / "dev.jsonl")]) == 2
    assert "not a ptune checkpoint" in _error(capsys)

    assert main(["eval", "--checkpoint", str(tmp_path), "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "no such file" in _error(capsys)


def test_console_script_exit_code(files, tmp_path):
    exe = shutil.which("ptune", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the ptune console script is not installed")
    proc = subprocess.run([exe, "eval", "--checkpoint", str(tmp_path), "--data", str(files / "dev.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("ptune: error:") and len(proc.stderr.splitlines()) == 1
    proc = subprocess.run([exe, "train", "--model", "x"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "required" in proc.stderr


def test_inspect_lists_nearest_tokens(files, tmp_path, capsys):
    assert _train(files, tmp_path / "run", "--encoder", "mlp", "--steps", "2") == 0
    capsys.readouterr()
    assert main(["inspect", "--checkpoint", str(tmp_path / "run"), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "template: {text} [P*3] [MASK]"
    assert [ln.split(":")[0] for ln in lines[1:]] == ["P1", "P2", "P3"]
    assert all(ln.count("(") == 3 for ln in lines[1:])


def test_a_config_file_trains_as_the_same_flags_do(files, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {files / 'gpt2'}\ntrain: {files / 'train.jsonl'}\ndev: {files / 'dev.jsonl'}\n"
                   "prompt:\n  template: '{text} [P*3] [MASK]'\n  verbalizer: {pos: 'yes', neg: 'no'}\n"
                   "  encoder: mlp\ntrain_config_unused: 1\n")
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "x")]) == 2
    assert "run.yaml: train_config_unused: unknown key" in _error(capsys)
    cfg.write_text(cfg.read_text().replace("train_config_unused: 1\n", "") + "epochs: 4\nlr: 1.0e-2\nbatch_size: 16\n")
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "file"), "--steps", "8"]) == 0
    from_file = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert _train(files, tmp_path / "flags", "--encoder", "mlp", "--steps", "8") == 0
    from_flags = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_file["steps"] == 8 and from_file["best"] == from_flags["best"]
    from ptune.checkpoint import read_meta

    assert read_meta(tmp_path / "file" / "last")["prompt"] == read_meta(tmp_path / "flags" / "last")["prompt"]
