"""The world end to end: mini world build -> LAMA probe; P-tuning beats a random prompt; the demo table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ptune.config import TrainConfig
from ptune.demo import _checks, run_demo, summary_markdown
from ptune.lm import load_base
from ptune.tasks import lama
from ptune.world import WorldConfig


def test_build_then_probe_ptuning_beats_a_random_prompt(mini_world, tmp_path):
    lm, tok, kind = load_base(str(mini_world / "gpt"))
    assert kind == "causal"
    trained = lama.probe(lm, tok, mini_world / "lama", tmp_path / "trained", lama.ProbeConfig(
        methods=("manual", "oracle", "ptuning"),
        train=TrainConfig(epochs=25, lr=1e-2, batch_size=8, schedule="constant", patience=8)))
    untrained = lama.probe(lm, tok, mini_world / "lama", tmp_path / "random", lama.ProbeConfig(
        methods=("ptuning",), train=TrainConfig(steps=1, lr=1e-12, batch_size=8)))
    got = trained["summary"]["ptuning"]["test"]["micro"]["p@1"]
    random_prompt = untrained["summary"]["ptuning"]["test"]["micro"]["p@1"]
    assert got > random_prompt + 0.1, (got, random_prompt)
    rels = trained["relations"]
    assert set(rels) == set(WorldConfig.mini().relations)
    assert all("test" in rels[r]["methods"]["oracle"] for r in rels)
    assert (tmp_path / "trained" / "results.md").is_file() and (tmp_path / "trained" / "p_at_1.png").is_file()


@pytest.mark.slow  # probes two LMs with every method
def test_demo_runs_on_a_given_world_and_writes_its_table(mini_world, tmp_path):
    summary = run_demo(tmp_path / "demo", world_dir=mini_world)
    assert set(summary["rows"]) == {"gpt", "bert"}
    for row in summary["rows"].values():
        assert {"majority", "manual", "oracle", "ptuning", "hybrid", "random LM"} <= set(row)
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["rows"] == summary["rows"]
    table = (tmp_path / "demo" / "summary.md").read_text()
    assert table == summary_markdown(summary) and "| causal LM (GPT-2 style) |" in table
    assert (tmp_path / "demo" / "p_at_1.png").stat().st_size > 1000
    # the demo's prompts load on their own: the checkpoint names the world model's folder
    from ptune.checkpoint import load_checkpoint

    ckpt = next((tmp_path / "demo" / "gpt" / "checkpoints").glob("*/ptuning"))
    served = load_checkpoint(ckpt)
    assert served.base_model == str((mini_world / "gpt").resolve()) and served.nearest_tokens(2)


def test_demo_checks_are_the_issue_targets():
    good = {"majority": 0.15, "manual": 0.2, "oracle": 0.98, "ptuning": 0.95, "hybrid": 0.9, "random LM": 0.14}
    assert all(ok for _, ok in _checks(good, "gpt"))
    assert not all(ok for _, ok in _checks({**good, "manual": 0.7}, "gpt"))  # manual must stay <= 0.5
    assert not all(ok for _, ok in _checks({**good, "ptuning": 0.8}, "bert"))  # < 0.9 x oracle
    assert not all(ok for _, ok in _checks({**good, "random LM": 0.5}, "bert"))  # control above majority


@pytest.mark.slow  # builds on the world's default two threads, slow while the cores are busy
def test_world_build_command(tmp_path, capsys):
    from ptune.cli import main

    assert main(["world", "build", "--preset", "mini", "--output", str(tmp_path / "w")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["output"] == str(tmp_path / "w") and set(out["memorized"]) == {"gpt", "bert"}
    assert (tmp_path / "w" / "lama" / "relations.jsonl").is_file()
    assert main(["world", "build", "--preset", "mini", "--output", str(tmp_path / "w")]) == 2
    assert "not empty" in capsys.readouterr().err


def _fake_probe(lm, tok, data_dir, out, config, **kw):
    """A stand-in for the LAMA probe: the same result shape, every method at 0.5."""
    return {"summary": {m: {"test": {"macro": {"p@1": 0.5}}} for m in config.methods}}


def test_demo_probes_the_shipped_world_and_says_so(tmp_path, monkeypatch, capsys):
    from ptune import demo
    from ptune.cli import main
    from ptune.world import shipped_world_dir

    monkeypatch.setattr(demo, "probe", _fake_probe)
    monkeypatch.setenv("PTUNE_CACHE", str(tmp_path / "cache"))
    seen = []
    summary = run_demo(tmp_path / "a", on_world=lambda w, s: seen.append((w, s)))
    assert seen == [(shipped_world_dir(), "shipped")] and summary["world_source"] == "shipped"
    assert summary["world"] == str(shipped_world_dir()) and not summary["world_built_now"]
    assert not (tmp_path / "cache").exists()  # nothing built
    assert main(["demo", "--output", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "demo: the world shipped with ptune (seed 0, sha256 manifest verified)" in err
    assert out.startswith("| model | majority | manual | oracle | ptuning | hybrid | random LM |\n")
    assert demo.demo_world(shipped_world_dir()) == (shipped_world_dir(), "given")
    assert demo.demo_world(tmp_path / "w") == (tmp_path / "w", "building")  # built there first
    assert demo.demo_world(seed=3) == (tmp_path / "cache" / "world-tiny-seed3", "building")


def test_demo_refuses_a_damaged_shipped_world_in_one_line(tmp_path, monkeypatch, capsys):
    import ptune.world
    from ptune import demo
    from ptune.cli import main

    copy = Path(shutil.copytree(ptune.world.shipped_world_dir(), tmp_path / "shipped"))
    (copy / "bert" / "tokenizer_config.json").write_text("{}")
    monkeypatch.setattr(ptune.world, "shipped_world_dir", lambda: copy)
    monkeypatch.setattr(demo, "probe", _fake_probe)
    assert main(["demo", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"ptune: error: {copy / 'bert' / 'tokenizer_config.json'}: differs from the sha256")
    assert "ptune world build --output DIR --check" in err and not (tmp_path / "out").exists()


def _fake_build(source):
    """A stand-in for build_world that copies ``source`` (a world folder)."""
    def build(out, config, progress=False):
        shutil.copytree(source, out, dirs_exist_ok=True)
        return json.loads((Path(out) / "world.json").read_text())

    return build


def test_world_build_check_reports_identical_or_which_files_differ(mini_world, tmp_path, monkeypatch, capsys):
    import ptune.world
    from ptune.cli import main

    monkeypatch.setattr(ptune.world, "build_world", _fake_build(ptune.world.shipped_world_dir()))
    assert main(["world", "build", "--output", str(tmp_path / "same"), "--check"]) == 0
    assert "byte-identical to the world shipped with ptune" in capsys.readouterr().out
    monkeypatch.setattr(ptune.world, "build_world", _fake_build(mini_world))  # stands in for another machine's build
    assert main(["world", "build", "--output", str(tmp_path / "other"), "--check"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("check: ") and "gpt/model.safetensors (sha256 differs)" in last
    assert "another CPU or with other torch/transformers versions" in last
    assert main(["world", "build", "--preset", "mini", "--output", str(tmp_path / "m"), "--check"]) == 2
    assert "--check: the shipped world is --preset tiny --seed 0" in capsys.readouterr().err
