"""Harness result folders: a rerun resumes what its results.json holds and removes what a
killed run left half-written."""

from __future__ import annotations

import pytest

from ptune.errors import ConfigError
from ptune.files import write_json_atomic
from ptune.tasks.results import resume_results, sweep_temporaries


def test_a_rerun_removes_what_a_killed_run_left_half_written(tmp_path):
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "P19"
    (ckpt / "ptuning").mkdir(parents=True)
    (ckpt / "ptuning" / "prompt.safetensors").write_bytes(b"kept")
    (out / ".results.json.tmp-abc12").write_text("{half")
    staged = ckpt / ".hybrid.tmp-x9"  # a checkpoint folder being written, with its own temporary file
    staged.mkdir()
    (staged / ".prompt.safetensors.tmp-q").write_bytes(b"half")
    write_json_atomic(out / "results.json", {"settings": {"model": "m"}, "relations": {"P19": {"methods": {}}}})

    results = resume_results(out, {"model": "m"}, "relations")

    assert results["relations"] == {"P19": {"methods": {}}}
    assert not list(out.rglob(".*.tmp-*"))
    assert (ckpt / "ptuning" / "prompt.safetensors").read_bytes() == b"kept"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "results.json"]
    assert sweep_temporaries(out) == [] and sweep_temporaries(tmp_path / "absent") == []


def test_other_settings_are_refused_and_the_folder_is_left_as_it_was(tmp_path):
    write_json_atomic(tmp_path / "results.json", {"settings": {"model": "m"}, "relations": {}})
    (tmp_path / ".results.json.tmp-1").write_text("{half")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match="other settings"):
        resume_results(tmp_path, {"model": "other"}, "relations")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_refusal_names_the_settings_that_differ(tmp_path):
    there = {"model": "m", "train": {"lr": 0.1, "epochs": 3}, "a": 1, "b": 2, "c": 3}
    write_json_atomic(tmp_path / "results.json", {"settings": there, "relations": {}})
    here = {"model": "m", "train": {"lr": 0.2, "epochs": 3}, "a": 2, "b": 3, "c": 4, "wording": 2}
    with pytest.raises(ConfigError) as e:
        resume_results(tmp_path, here, "relations")
    assert (f"{tmp_path} holds a run with other settings (train.lr: 0.1 there, 0.2 here; a: 1 there, 2 here; "
            "b: 2 there, 3 here; c: 3 there, 4 here; and 1 more)") in str(e.value)
    with pytest.raises(ConfigError, match=r"\(wording: unset there, 2 here\)"):
        resume_results(tmp_path, {**there, "wording": 2}, "relations")
