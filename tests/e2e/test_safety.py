"""What the failure model promises besides one-line errors: outputs never replace what
they should not, locks, remote code, non-finite training, the error boundary, and the
loading rules of docs/failure-model.md."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from pathlib import Path

import pytest
import torch

from conftest import saved_model, sentiment
from ptune.checkpoint import CONFIG_NAME, load_checkpoint, read_meta
from ptune.cli import main
from ptune.errors import OutputError
from ptune.files import atomic_file, write_json_atomic, write_text_atomic
from ptune.lock import LOCK_NAME, folder_lock

VERB = '{"pos": "yes", "neg": "no"}'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model, data and a trained run folder."""
    r = tmp_path_factory.mktemp("safety")
    saved_model(r / "gpt2")
    (r / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in sentiment(16)))
    assert main(_train_args(r, r / "run")) == 0
    return r


def _train_args(r: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(r / "gpt2"), "--train", str(r / "data.jsonl"), "--dev", str(r / "data.jsonl"),
            "--template", "{text} [P*2] [MASK]", "--verbalizer", VERB, "--output", str(out), "--steps", "2",
            "--batch-size", "8", "--eval-every", "2", *extra]


def _predict(r: Path, output: str) -> list[str]:
    return ["predict", "--checkpoint", str(r / "run"), "--data", str(r / "data.jsonl"), "--output", output]


# ----------------------------------------------------------------------------- outputs
def test_output_dash_is_standard_output(run, capsys):
    assert main(_predict(run, "-")) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 16 and not (Path.cwd() / "-").exists()


def test_a_symlink_output_is_followed_and_kept(run, tmp_path, capsys):
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert main(_predict(run, str(link))) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "real.jsonl"]


def test_a_fifo_output_is_written_in_place(run, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(_predict(run, str(fifo))) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(fifo.stat().st_mode), "the FIFO must not be replaced by a file"
    assert len(got[0].decode().splitlines()) == 16


def test_a_character_device_is_written_in_place(run):
    assert main(_predict(run, os.devnull)) == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_writers_refuse_folders_and_read_only_files_and_leave_no_temporary(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        write_text_atomic(tmp_path, "x")
    ro = tmp_path / "ro.txt"
    ro.write_text("keep")
    ro.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        write_text_atomic(ro, "x")
    assert ro.read_text() == "keep"
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "half.txt") as fh:
            fh.write(b"half")
            raise RuntimeError("killed in the middle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro.txt"]


def test_json_is_strict_both_ways(tmp_path):
    with pytest.raises(ValueError, match=r"'a'\[1\] is not a finite number"):
        write_json_atomic(tmp_path / "x.json", {"a": [1.0, math.nan]})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- locks
def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    """What ``kill -9`` leaves: the lock file with the dead holder's line, and no flock."""
    (tmp_path / LOCK_NAME).write_text("pid 999999 on somewhere, since 2020-01-01 00:00:00, ptune train\n")
    with folder_lock(tmp_path):
        assert f"pid {os.getpid()}" in (tmp_path / LOCK_NAME).read_text()
        with folder_lock(tmp_path):  # re-entrant within the process
            pass
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_concurrent_runs_on_one_folder_are_refused(run, tmp_path, capsys):
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)  # another process's lock: another open file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 on otherhost, since 2020-01-01 00:00:00, ptune train\n")
        assert main(_train_args(run, out)) == 2
        assert "in use by another ptune run (pid 4242 on otherhost" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert main(_train_args(run, out)) == 0  # free again


# ----------------------------------------------------------------------------- training and checkpoints
def test_a_diverging_run_stops_naming_the_step_and_saves_nothing_non_finite(run, tmp_path, capsys):
    out = tmp_path / "div"
    assert main(_train_args(run, out, "--lr", "1e30", "--max-grad-norm", "none", "--steps", "6")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "step " in err and ("NaN" in err or "nan" in err), err
    for ckpt in ("best", "last"):
        if (out / ckpt).exists():
            model = load_checkpoint(out / ckpt)  # refuses non-finite tensors: loading is the check
            assert all(torch.isfinite(p).all() for p in model.encoder.parameters())
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} written to metrics.jsonl"))


def test_a_relative_model_path_is_recorded_absolute(run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(run)
    args = _train_args(run, tmp_path / "rel")
    args[args.index("--model") + 1] = "gpt2"
    assert main(args) == 0
    assert read_meta(tmp_path / "rel")["base_model"] == str(run / "gpt2")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--checkpoint", str(tmp_path / "rel"), "--data", str(run / "data.jsonl")]) == 0


def test_a_checkpoint_saved_without_hashes_loads_with_a_warning(run, tmp_path, caplog):
    import shutil

    shutil.copytree(run / "run" / "best", tmp_path / "old")
    meta = json.loads((tmp_path / "old" / CONFIG_NAME).read_text())
    del meta["sha256"], meta["config_sha256"]
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(meta))
    model = load_checkpoint(tmp_path / "old")
    assert model.config.template == "{text} [P*2] [MASK]"
    assert "saved without content hashes" in caplog.text


def test_remote_code_only_with_the_flag(run, monkeypatch, tmp_path, capsys):
    import transformers

    seen: list[object] = []
    real = transformers.AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    assert main(_train_args(run, tmp_path / "a")) == 0
    assert seen and set(seen) == {False}
    seen.clear()
    assert main(_train_args(run, tmp_path / "b", "--trust-remote-code")) == 0
    assert seen and set(seen) == {True}


def test_superglue_fits_its_default_length_to_the_model(run):
    from conftest import tokenizer_for
    from ptune import tiny
    from ptune.tasks import superglue as sg

    tok = tokenizer_for("bert")
    lm = tiny.tiny_model("bert", tok, seed=0, positions=128)
    model = sg.build_model(sg.SPECS["BoolQ"], sg.SuperGlueConfig(tasks=("BoolQ",)), lm, tok, "masked", 0, "tiny")
    assert model.compiled.max_length == 128


# ----------------------------------------------------------------------------- the boundary
def test_a_bug_is_not_an_input_error(run, monkeypatch, capsys):
    from ptune import cli

    def broken(o):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_predict", broken)
    monkeypatch.setattr(cli, "_add_eval", _patched_add_eval(cli, broken))
    assert main(_predict(run, "-")) == 1
    err = capsys.readouterr().err
    assert err.startswith("ptune: internal error: KeyError") and "-v shows the traceback" in err
    with pytest.raises(KeyError):
        main(["-v", *_predict(run, "-")])


def _patched_add_eval(cli, func):
    original = cli._add_eval

    def add(sub, name, f):
        original(sub, name, func if name == "predict" else f)

    return add
