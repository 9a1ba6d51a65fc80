"""The world end to end: mini world build -> LAMA probe; P-tuning beats a random prompt; the demo table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import stale_world
from ptune.config import TrainConfig
from ptune.errors import ConfigError
from ptune.demo import DEMO_METHODS, DemoConfig, DemoMethod, run_demo
from ptune.report import CONTROL, summary_markdown, world_checks
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
        methods=("ptuning",), train=TrainConfig(steps=1, lr=1e-12, batch_size=8), restarts=0))  # one random prompt
    got = trained["summary"]["ptuning"]["test"]["micro"]["p@1"]
    random_prompt = untrained["summary"]["ptuning"]["test"]["micro"]["p@1"]
    assert got > random_prompt + 0.1, (got, random_prompt)
    rels = trained["relations"]
    assert set(rels) == set(WorldConfig.mini().relations)
    assert all("test" in rels[r]["methods"]["oracle"] for r in rels)
    assert (tmp_path / "trained" / "results.md").is_file() and (tmp_path / "trained" / "p_at_1.png").is_file()


@pytest.mark.slow  # probes two LMs with every method, two wordings and two encoders
def test_demo_runs_on_a_given_world_and_writes_its_report(mini_world, tmp_path):
    config = DemoConfig(wordings=2, encoders=("lstm", "none"), epochs=3, patience=2)
    summary = run_demo(tmp_path / "demo", config, world_dir=mini_world, progress=False)
    assert set(summary["rows"]) == {"gpt", "bert"}
    for row in summary["rows"].values():
        assert {"majority", "manual", "autoprompt", "mined", "oracle", "ptuning", "hybrid", "random LM"} <= set(row)
    wordings = {r["relation"]: {w for t in r["train_templates"] for w in t.split()}
                for r in map(json.loads, (mini_world / "lama" / "relations.jsonl").read_text().splitlines())}
    for which in ("gpt", "bert"):  # mined prompts are the corpus's wordings; AutoPrompt's are real tokens
        res = json.loads((tmp_path / "demo" / which / "results.json").read_text())
        for rid, entry in res["relations"].items():
            assert set(entry["methods"]["mined"]["template"].split()) <= wordings[rid]
            assert "[P" not in entry["methods"]["autoprompt"]["prompt"]
    world = summary["worlds"][0]
    for which in ("gpt", "bert"):  # both wordings of every mini relation, manual and hybrid
        assert {m: w["relations"] for m, w in world["wordings"][which].items()} == {"manual": 5, "hybrid": 5}
        assert set(world["encoders"][which]) == {"lstm", "none"}
        assert world["encoders"][which]["lstm"] == summary["rows"][which]["ptuning"]
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["rows"] == summary["rows"] and saved["worlds"][0]["checks"] == world["checks"]
    report = (tmp_path / "demo" / "summary.md").read_text()
    assert report == summary_markdown(summary) and "| causal LM (GPT-2 style) |" in report
    assert "Wording sensitivity" in report and "Encoder ablation" in report and "Claims:" in report
    assert (tmp_path / "demo" / "summary.png").stat().st_size > 1000
    assert (tmp_path / "demo" / "bert" / "wording-1" / "results.json").is_file()
    # the demo's prompts load on their own: the checkpoint names the world model's folder
    from ptune.checkpoint import load_checkpoint

    ckpt = next((tmp_path / "demo" / "gpt" / "checkpoints").glob("*/ptuning"))
    served = load_checkpoint(ckpt)
    assert served.base_model == str((mini_world / "gpt").resolve()) and served.nearest_tokens(2)


def _names(checks):
    return {c["check"]: c["pass"] for c in checks}


def test_demo_checks_are_the_issue_targets():
    good = {"majority": 0.15, "manual": 0.2, "oracle": 0.98, "ptuning": 0.95, "hybrid": 0.9, "random LM": 0.14}
    wordings = {"manual": {"mean": 0.3, "std": 0.2, "relations": 5}, "hybrid": {"mean": 0.9, "std": 0.03,
                                                                                 "relations": 5}}

    def checks(which="bert", rows=None, **kw):
        world = {"rows": {"gpt": good, "bert": good, **(rows or {})}, "wordings": {which: {**wordings, **kw}}}
        return world_checks(world)

    assert all(c["pass"] for cs in checks().values() for c in cs)
    assert not _names(checks(rows={"gpt": {**good, "manual": 0.7}})["gpt"])["manual <= 0.5"]
    assert not _names(checks(rows={"bert": {**good, "ptuning": 0.93}})["bert"])["P-tuning >= 0.95 x oracle"]
    assert not _names(checks(rows={"bert": {**good, "hybrid": 0.88}})["bert"])["hybrid >= 0.9 x oracle"]
    assert not _names(checks(rows={"bert": {**good, "random LM": 0.5}})["bert"])["random-LM control <= majority + 0.1"]
    ratio = "std across manual wordings >= 5 x with hybrid prompts"
    assert not _names(checks(hybrid={"mean": 0.9, "std": 0.05, "relations": 5})["bert"])[ratio]  # 0.2 < 5 x 0.05
    assert not _names(checks(rows={"gpt": {**good, "ptuning": 0.8}})["both"])[
        "P-tuned causal LM >= 0.95 x P-tuned masked LM (GPTs competitive once P-tuned)"]
    assert not _names(checks(manual={"mean": None, "std": None, "relations": 0})["bert"])[ratio]
    beats = "P-tuning > AutoPrompt (same LM, training facts and dev selection)"
    assert beats not in _names(checks()["bert"])  # only where the table has an AutoPrompt column
    assert _names(checks(rows={"bert": {**good, "autoprompt": 0.7}})["bert"])[beats]
    lost = [c for c in checks(rows={"bert": {**good, "autoprompt": 0.96}})["bert"] if c["check"] == beats]
    assert lost == [{"check": beats, "pass": False, "numbers": "0.950 vs 0.960"}]
    partial = world_checks({"rows": {"bert": {"ptuning": 0.9, CONTROL: 0.1}}})["bert"]  # only P-tuning was run
    assert partial == []


def test_demo_methods_are_a_list_that_new_methods_join(monkeypatch, tmp_path):
    from ptune import demo

    assert [m.name for m in DEMO_METHODS] == list(DemoConfig().methods) == [
        "majority", "manual", "autoprompt", "mined", "oracle", "ptuning", "hybrid"]
    with pytest.raises(ConfigError, match="'nope' is not a demo method"):
        DemoConfig(methods=("manual", "nope"))
    # a method that needs a file from the world gets it through its options
    extra = DemoMethod("ptuning", "the LM and the training facts", options=lambda world: {"relations": ("P19",)})
    monkeypatch.setattr(demo, "DEMO_METHODS", (*DEMO_METHODS[:3], extra))
    config = DemoConfig(methods=("manual", "ptuning"))
    assert config.probe_config(("manual", "ptuning"), 0, tmp_path).relations == ("P19",)
    assert config.probe_config(("manual",), 0, tmp_path, wording=2).wording == 2


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
    per = {"P19": {"methods": {m: {"test": {"p@1": 0.5}} for m in config.methods}}}
    return {"summary": {m: {"test": {"macro": {"p@1": 0.5}}} for m in config.methods}, "relations": per}


def test_demo_probes_the_shipped_world_and_says_so(tmp_path, monkeypatch, capsys):
    from ptune import demo
    from ptune.cli import main
    from ptune.world import shipped_world_dir

    monkeypatch.setattr(demo, "probe", _fake_probe)
    monkeypatch.setenv("PTUNE_CACHE", str(tmp_path / "cache"))
    seen = []
    summary = run_demo(tmp_path / "a", on_world=lambda w, s: seen.append((w, s)), progress=False)
    assert seen == [(shipped_world_dir(), "shipped")] and summary["world_source"] == "shipped"
    assert summary["world"] == str(shipped_world_dir()) and not summary["world_built_now"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["corpus"]  # no world built; the mined corpus
    (corpus,) = (tmp_path / "cache" / "corpus").iterdir()
    assert summary["worlds"][0]["method_seconds"]["gpt"]["mined"] == 0.0  # the stand-in probe took no time
    assert corpus.read_text().count("\n") == json.loads((shipped_world_dir() / "world.json").read_text())[
        "counts"]["corpus"]["sentences"]
    assert main(["demo", "--output", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert "demo: the world shipped with ptune (seed 0, sha256 manifest verified)" in err
    assert "\n| model | majority | manual | autoprompt | mined | oracle | ptuning | hybrid | random LM |\n" in out
    assert "AutoPrompt takes one search round per such step" in out and "Seconds per method" in out
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


def test_demo_over_several_seeds_builds_once_and_reports_mean_and_std(mini_world, tmp_path, monkeypatch):
    import ptune.world
    from ptune import demo

    def probe(lm, tok, data_dir, out, config, **kw):  # P@1 = 0.5 + 0.1 x the world's seed
        v = 0.5 + 0.1 * config.train.seed
        per = {"P19": {"methods": {m: {"test": {"p@1": v}} for m in config.methods}}}
        return {"summary": {m: {"test": {"macro": {"p@1": v}}} for m in config.methods}, "relations": per}

    built = []
    monkeypatch.setattr(demo, "probe", probe)
    monkeypatch.setenv("PTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ptune.world, "build_world", lambda out, cfg, progress=False: (
        built.append(cfg.seed), _fake_build(mini_world)(out, cfg)))
    config = DemoConfig(seeds=(0, 2), wordings=1, encoders=("lstm",))
    summary = run_demo(tmp_path / "out", config, progress=False)
    assert built == [2] and [w["world_source"] for w in summary["worlds"]] == ["shipped", "built"]
    cell = summary["aggregate"]["rows"]["bert"]["ptuning"]
    assert cell["values"] == pytest.approx([0.5, 0.7]) and cell["mean"] == pytest.approx(0.6)
    assert cell["std"] == pytest.approx(0.1) and summary["rows"]["bert"]["ptuning"] == pytest.approx(0.6)
    assert "0.600 ± 0.100" in (tmp_path / "out" / "summary.md").read_text()
    again = run_demo(tmp_path / "again", config, progress=False)
    assert built == [2] and again["worlds"][1]["world_source"] == "cached"  # the second run reuses the world
    with pytest.raises(ConfigError, match="one seed"):
        run_demo(tmp_path / "x", config, world_dir=mini_world)


def test_the_demo_adds_the_wordings_an_older_world_lacks_or_refuses_in_one_line(mini_world, tmp_path, monkeypatch,
                                                                                capsys):
    """A world built before relations.jsonl held manual_templates: the demo writes them in
    when that is exact (what a fresh build writes), otherwise stops before probing anything
    with one line naming the file and how to rebuild; it never skips the wording study."""
    from ptune.cli import main
    from ptune.cli_harness import _say_world

    old = stale_world(mini_world, tmp_path / "old", keep=1, models=True)
    seen = []
    config = DemoConfig(methods=("manual",), wordings=5, epochs=1, patience=1, restarts=0)
    summary = run_demo(tmp_path / "a", config, world_dir=old, progress=False, on_world=lambda w, s: seen.append(s))
    assert seen == ["given", "refreshed"] and summary["worlds"][0]["refreshed"] == ["lama/relations.jsonl"]
    assert (old / "lama" / "relations.jsonl").read_bytes() == (mini_world / "lama" / "relations.jsonl").read_bytes()
    for which in ("gpt", "bert"):  # every relation probed with its five wordings
        assert summary["worlds"][0]["wordings"][which]["manual"]["relations"] == len(WorldConfig.mini().relations)
    capsys.readouterr()
    _say_world(old, "refreshed")  # what the command prints then
    assert capsys.readouterr().err == (f"demo: added to {old}/lama/relations.jsonl the hand-written wordings "
                                       "(manual_templates) that an older ptune left out, as a fresh build writes "
                                       "them (the LMs are unchanged)\n")
    monkeypatch.setenv("PTUNE_CACHE", str(tmp_path / "cache"))
    cached = stale_world(mini_world, tmp_path / "cache" / "world-tiny-seed1", edit=True)
    assert main(["demo", "--seeds", "0,1", "--wordings", "5", "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and not (tmp_path / "b").exists()
    assert err.startswith(f"ptune: error: {cached / 'lama' / 'relations.jsonl'}: has no manual_templates")
    assert err.endswith(f"remove {cached} and run ptune demo again, which builds it anew (minutes)")
    with pytest.raises(ConfigError, match="6 wordings asked, but relation P19 of .*relations.jsonl has 5"):
        run_demo(tmp_path / "c", DemoConfig(wordings=6), progress=False)
