"""The SuperGLUE harness on the real FewGLUE files: every task end to end, rendered
patterns token by token, truncation, resumable runs, the CLI and bad-data errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from ptune.cli import main
from ptune.errors import ConfigError
from ptune.tasks import superglue as sg
from ptune.tasks.superglue_data import TASKS, read_task, split_path
from ptune.tiny import tiny_model, train_tokenizer

FEWGLUE = SHARED_DATA / "fewglue"
needs_data = pytest.mark.skipif(not (FEWGLUE / "RTE" / "train.jsonl").is_file(),
                                reason=f"FewGLUE not found at {FEWGLUE} (the shared data folder is absent)")
pytestmark = needs_data
KIND = {"bert": "masked", "gpt2": "causal"}


@pytest.fixture(scope="module")
def tokenizers():
    corpus = []
    for task in TASKS:
        corpus += [line[:3000] for line in (FEWGLUE / task / "train.jsonl").read_text().splitlines()]
    return {fam: train_tokenizer(fam, corpus, vocab_size=2000, extra_tokens=["Yes", "No", "Maybe"])
            for fam in KIND}


def _loader(family, tok, calls=None):
    def load():
        if calls is not None:
            calls.append(1)
        return tiny_model(family, tok, seed=0, positions=512), tok, KIND[family]
    return load


QUICK = dict(train={"steps": 2, "eval_every": 1, "batch_size": 4}, prompt={"max_length": 256}, limit_eval=12)


def _quick(train=None, prompt=None, **kw):
    """A quick run's config: QUICK with ``train``/``prompt`` fields added to its own."""
    return sg.SuperGlueConfig(**{**QUICK, **kw, "train": {**QUICK["train"], **(train or {})},
                                 "prompt": {**QUICK["prompt"], **(prompt or {})}})


@pytest.mark.slow  # trains and evaluates all eight tasks
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_every_task_end_to_end(tokenizers, family, tmp_path):
    tok = tokenizers[family]
    config = _quick(seeds=(1, 2))
    res = sg.run_superglue("tiny", FEWGLUE, tmp_path, config, loader=_loader(family, tok))
    assert set(res["tasks"]) == set(TASKS)
    for task, entry in res["tasks"].items():
        assert entry["seeds"] == 2 and set(entry["runs"]) == {"1", "2"}
        for run in entry["runs"].values():
            assert run["trained"] and run["steps"] == 2
        assert set(entry["dev32"]) >= set(sg.SPECS[task].metrics) | {"score"}
        for k in sg.SPECS[task].metrics:
            assert 0.0 <= entry["dev32"][k]["mean"] <= 1.0 and entry["dev32"][k]["std"] >= 0
        if task == "ReCoRD":  # no val.jsonl in FewGLUE_32dev
            assert "val" not in entry and any("no val.jsonl" in n for n in entry["notes"])
            continue
        assert entry["val"]["n"] == 12
        preds = [json.loads(x) for x in (tmp_path / "predictions" / f"{task}.jsonl").read_text().splitlines()]
        val = read_task(task, split_path(FEWGLUE, task, "val")).examples[:12]
        if task == "MultiRC":  # the leaderboard's nesting: passage > questions > answers
            answers = [a for p in preds for q in p["passage"]["questions"] for a in q["answers"]]
            assert [a["idx"] for a in answers] == [ex["idx"] for ex in val]
            assert {a["label"] for a in answers} <= {0, 1}
            continue
        assert [p["idx"] for p in preds] == [ex["idx"] for ex in val]
        allowed = {"COPA": {0, 1}, "BoolQ": {True, False}, "WiC": {True, False}, "WSC": {True, False}}
        assert {p["label"] for p in preds} <= allowed.get(task, set(sg.LABELS.get(task) or []))
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {t} |" in table for t in TASKS)


def test_methods_and_resume(tokenizers, tmp_path):
    tok = tokenizers["bert"]
    calls: list[int] = []
    tasks = ("RTE", "COPA", "WSC")
    for method in ("manual", "finetune"):
        cfg = _quick(tasks=tasks, method=method, seeds=(3,))
        res = sg.run_superglue("tiny", FEWGLUE, tmp_path / method, cfg, loader=_loader("bert", tok, calls))
        assert all(res["tasks"][t]["runs"]["3"]["trained"] for t in tasks)
    assert len(calls) == 6
    # zero-shot manual prompt: a frozen LM, nothing trained
    cfg = _quick(tasks=("RTE",), method="manual", train={"finetune_lm": False}, seeds=(3,))
    res = sg.run_superglue("tiny", FEWGLUE, tmp_path / "zero", cfg, loader=_loader("bert", tok))
    assert res["tasks"]["RTE"]["runs"]["3"]["trained"] is False
    # rerun: nothing is loaded or trained again, results identical
    cfg = _quick(tasks=tasks, method="manual", seeds=(3,))
    before = json.loads((tmp_path / "manual" / "results.json").read_text())
    again = sg.run_superglue("tiny", FEWGLUE, tmp_path / "manual", cfg, loader=_loader("bert", tok, calls))
    assert len(calls) == 6 and again["tasks"] == before["tasks"]
    # more seeds later: only the new (task, seed) pairs run
    cfg = _quick(tasks=tasks, method="manual", seeds=(3, 4))
    sg.run_superglue("tiny", FEWGLUE, tmp_path / "manual", cfg, loader=_loader("bert", tok, calls))
    assert len(calls) == 9
    with pytest.raises(ConfigError, match="other settings"):
        sg.run_superglue("tiny", FEWGLUE, tmp_path / "manual", sg.SuperGlueConfig(tasks=tasks, method="ptuning"),
                         loader=_loader("bert", tok))


# ----------------------------------------------------------------------------- rendering
def _first(task):
    split = "dev32" if task == "ReCoRD" else "val"
    return read_task(task, split_path(FEWGLUE, task, split)).examples[0]


def _expected(tok, parts):
    out = []
    for p in parts:
        if p in ("[P]", "[MASK]", "[SEP]", "[CLS]"):
            out.append({"[MASK]": tok.mask_token, "[SEP]": tok.sep_token, "[CLS]": tok.cls_token}.get(p, p))
        else:
            out += tok.tokenize(p)
    return out


def _rendered(model, ex, answer_len=1):
    item = model.prepare([ex])[0]
    enc = model.compiled.encode(item.fields, answer_len=answer_len, answer_ids=[model.pad_id] * answer_len)
    toks = model.tokenizer.convert_ids_to_tokens(enc.input_ids)
    return ["[P]" if p >= 0 else t for t, p in zip(toks, enc.pseudo_index)], enc


def _model(task, tok, family="bert", method="ptuning", max_length=4096):
    cfg = sg.SuperGlueConfig(tasks=(task,), method=method, prompt={"max_length": max_length})
    lm = tiny_model(family, tok, seed=0, positions=4096)
    return sg.build_model(sg.SPECS[task], cfg, lm, tok, KIND[family], 0, "tiny")


@pytest.mark.parametrize("task", TASKS)
def test_rendered_pattern_token_by_token(tokenizers, task):
    tok = tokenizers["bert"]
    ex = _first(task)
    k = 1
    if task == "COPA":
        k = max(len(tok.tokenize(c)) for c in ex["choices"])
    if task == "WSC":
        k = len(tok.tokenize(ex["span1"]))
    parts = {
        "BoolQ": lambda: [ex["passage"], ".", "[P]", "Question:", ex["question"], "? Answer:", "[MASK]", "."],
        "CB": lambda: [ex["premise"], "[SEP]", ex["hypothesis"], "?", "[P]", "answer:", "[MASK]"],
        "COPA": lambda: [ex["choice1_stem"], "or", ex["choice2_stem"], "?", ex["premise_stem"], ex["connective"], "[P]"]
        + ["[MASK]"] * k + ["."],
        "MultiRC": lambda: [ex["passage"], ". Question:", ex["question"], "? Is it", ex["answer"], "?", "[P]", "[MASK]", "."],
        "ReCoRD": lambda: [ex["passage"], "[P]", ex["query_left"], "[MASK]", ex["query_right"]],
        "RTE": lambda: [ex["premise"], "Question:", ex["hypothesis_stem"], "?", "[P]", "Answer:", "[MASK]", "."],
        "WiC": lambda: [ex["sentence1"], "[SEP]", ex["sentence2"], "[P]", "*", ex["word"], "* ?", "[MASK]"],
        "WSC": lambda: ["[P]", ex["text_marked"], "[P]", "pronoun '*", ex["span2"], "*' refers to"] + ["[MASK]"] * k + ["."],
    }[task]()
    got, enc = _rendered(_model(task, tok), {**ex, "target": 0}, k)
    assert got == ["[CLS]"] + _expected(tok, parts) + ["[SEP]"]
    assert [got[i] for i in enc.answer_positions] == [tok.mask_token] * k
    if "[SEP]" in parts:  # the pattern's [SEP] starts the second segment
        first_sep = got.index(tok.sep_token)
        assert set(enc.token_type_ids[: first_sep + 1]) == {0} and set(enc.token_type_ids[first_sep + 1:]) == {1}


def test_rendered_causal_pattern(tokenizers):
    tok = tokenizers["gpt2"]
    ex = _first("RTE")
    model = _model("RTE", tok, family="gpt2")
    item = model.prepare([ex])[0]
    enc = model.compiled.encode(item.fields)
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    want = ids(ex["premise"]) + ids(" Question:") + ids(" " + ex["hypothesis_stem"]) + ids(" ?") + [-1] + ids(" Answer:")
    assert [(-1 if p >= 0 else t) for t, p in zip(enc.input_ids, enc.pseudo_index)] == want
    assert enc.answer_positions == [len(want) - 1]  # the next token after "Answer:" is the answer


@pytest.mark.parametrize("task,field", [("BoolQ", "passage"), ("MultiRC", "passage"), ("ReCoRD", "passage"),
                                        ("RTE", "premise")])
def test_truncation_keeps_pseudo_tokens_anchors_and_answer(tokenizers, task, field):
    tok = tokenizers["bert"]
    ex = _first(task)
    full, _ = _rendered(_model(task, tok), ex)
    limit = len(full) - 25
    got, enc = _rendered(_model(task, tok, max_length=limit), ex)
    assert len(got) == limit
    passage = tok.tokenize(ex[field])
    assert full[1 : 1 + len(passage)] == passage  # the passage comes first
    kept = len(got) - (len(full) - len(passage))
    assert 0 < kept < len(passage)
    # only the passage's end was cut: pseudo tokens, anchors, the other fields and the answer stay
    assert got == ["[CLS]"] + passage[:kept] + full[1 + len(passage):]
    assert got.count("[P]") == full.count("[P]") > 0 and got.count(tok.mask_token) == 1


def test_manual_patterns_have_no_pseudo_tokens(tokenizers):
    tok = tokenizers["bert"]
    for task in TASKS:
        spec = sg.SPECS[task]
        for name, template in spec.patterns.items():
            stripped = sg.strip_pseudo(template)
            assert "[P" not in stripped and "[MASK]" in stripped, (task, name)
        model = _model(task, tok, method="manual")
        assert model.compiled.n_pseudo == 0 and model.encoder is None


def test_pattern_selection_and_errors(tokenizers):
    tok = tokenizers["bert"]
    lm = tiny_model("bert", tok, seed=0, positions=512)
    spec = sg.SPECS["RTE"]
    custom = "{premise} ? [P*2] {hypothesis} [MASK]"
    m = sg.build_model(spec, sg.SuperGlueConfig(tasks=("RTE",), pattern=custom), lm, tok, "masked", 0, "t")
    assert m.compiled.n_pseudo == 2
    m = sg.build_model(spec, sg.SuperGlueConfig(tasks=("RTE",), pattern="p2"), lm, tok, "masked", 0, "t")
    assert m.config.template == spec.patterns["p2"]
    with pytest.raises(ConfigError, match="p1, p2"):
        sg.build_model(spec, sg.SuperGlueConfig(tasks=("RTE",), pattern="p9"), lm, tok, "masked", 0, "t")
    with pytest.raises(ConfigError, match="accepted"):
        sg.SuperGlueConfig(tasks=("RTE",), method="prefix")
    with pytest.raises(ConfigError):
        sg.SuperGlueConfig(tasks=("STS",))


def test_wsc_lenient_match():
    assert sg.wsc_match("the demonstrators", "The demonstrators")
    assert sg.wsc_match("demonstrators", "The demonstrators")  # a subset counts (PET)
    assert sg.wsc_match("the city councilmen", "councilmen")  # and a superset
    assert not sg.wsc_match("the city", "the demonstrators")
    assert not sg.wsc_match("", "Tina")


def test_metrics_and_score():
    spec = sg.SPECS["MultiRC"]
    exs = [{"label": "1", "passage_idx": 0, "question_idx": 0}, {"label": "0", "passage_idx": 0, "question_idx": 0},
           {"label": "1", "passage_idx": 0, "question_idx": 1}]
    m = sg._metrics(spec, ["1", "0", "0"], exs)
    assert m["em"] == 0.5 and m["f1a"] == pytest.approx(2 / 3) and m["score"] == pytest.approx((0.5 + 2 / 3) / 2)
    m = sg._metrics(sg.SPECS["ReCoRD"], ["the Blues", "Chelsea"], [{"answers": ["Blues"]}, {"answers": ["Zouma"]}])
    assert m["em"] == 0.5 and m["f1"] == 0.5
    m = sg._metrics(sg.SPECS["CB"], ["entailment", "neutral"], [{"label": "entailment"}, {"label": "contradiction"}])
    assert m["accuracy"] == 0.5 and m["score"] == pytest.approx((0.5 + m["f1"]) / 2)


# ----------------------------------------------------------------------------- CLI and bad data
def _save_tiny(tok, path):
    tiny_model("bert", tok, seed=0, positions=512).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_cli_superglue(tokenizers, tmp_path, capsys):
    model = _save_tiny(tokenizers["bert"], tmp_path / "m")
    rc = main(["superglue", "--task", "rte,cb", "--model", model, "--data-dir", str(FEWGLUE), "--max-steps", "2",
               "--eval-every", "1", "--limit-eval", "8", "--max-length", "256", "--batch-size", "4",
               "--seeds", "1", "--save-checkpoints", "--output", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| RTE |" in out and "| CB |" in out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["settings"]["tasks"] == ["RTE", "CB"] and res["settings"]["model"] == model
    assert (tmp_path / "out" / "runs" / "RTE" / "seed1" / "checkpoint" / "ptune_config.json").is_file()
    from ptune.checkpoint import load_checkpoint

    served = load_checkpoint(tmp_path / "out" / "runs" / "RTE" / "seed1" / "checkpoint")
    assert served.predict([{"premise": "A cat sleeps.", "hypothesis_stem": "A cat"}])[0]["label"] in sg.LABELS["RTE"]



def test_cli_superglue_config_file_and_flags_over_it(tokenizers, tmp_path, capsys):
    model = _save_tiny(tokenizers["bert"], tmp_path / "m")
    cfg = tmp_path / "sg.toml"
    cfg.write_text(f'tasks = ["rte"]\nmodel = "{model}"\ndata_dir = "{FEWGLUE}"\nlimit_eval = 4\nseeds = [1]\n'
                   '[prompt]\nmax_length = 256\n[train]\nsteps = 5\neval_every = 1\nbatch_size = 4\n')
    assert main(["superglue", "--config", str(cfg), "--max-steps", "1", "--frozen", "--output", str(tmp_path / "o")]) == 0
    assert "frozen LM" in capsys.readouterr().out
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["settings"]["train"] == {"steps": 1, "eval_every": 1, "batch_size": 4, "finetune_lm": False}
    assert res["settings"]["prompt"] == {"max_length": 256} and res["settings"]["limit_eval"] == 4
    run = res["tasks"]["RTE"]["runs"]["1"]
    assert run["steps"] == 1 and run["train_config"]["lr"] == 1e-3 and run["train_config"]["finetune_lm"] is False
    assert res["tasks"]["RTE"]["val"]["n"] == 4

def _bad_dir(tmp_path, task, line_fn):
    d = tmp_path / "data" / task
    d.mkdir(parents=True)
    for split in ("train", "dev32", "val"):
        lines = (FEWGLUE / task / f"{split}.jsonl").read_text().splitlines()[:8]
        if split == "train":
            obj = json.loads(lines[2])
            line_fn(obj)
            lines[2] = json.dumps(obj)
        (d / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "data"


@pytest.mark.parametrize("task,edit,field", [
    ("RTE", lambda o: o.pop("hypothesis"), "hypothesis"),
    ("CB", lambda o: o.update(label="maybe"), "label"),
    ("WSC", lambda o: o["target"].update(span2_index=999), "span2_index"),
])
def test_cli_bad_data_names_file_line_and_field(tokenizers, tmp_path, capsys, task, edit, field):
    data = _bad_dir(tmp_path, task, edit)
    model = _save_tiny(tokenizers["bert"], tmp_path / "m")
    args = ["superglue", "--task", task, "--model", model, "--data-dir", str(data), "--max-steps", "1",
            "--eval-every", "1", "--batch-size", "4", "--max-length", "256", "--output", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{task}/train.jsonl:3" in err and field in err and "Traceback" not in err
    # asking to skip bad examples: the run goes on and the count is reported
    assert main(args[:-1] + [str(tmp_path / "o2"), "--skip-invalid"]) == 0
    notes = json.loads((tmp_path / "o2" / "results.json").read_text())["tasks"][task]["notes"]
    assert any("skipped 1 invalid example" in n for n in notes)


def test_iterative_multi_token_scoring_runs_on_copa(tokenizers, tmp_path):
    tok = tokenizers["bert"]
    res = {}
    for mode in ("parallel", "iterative"):
        cfg = _quick(tasks=("COPA",), method="manual", train={"finetune_lm": False}, prompt={"multi_token": mode},
                     seeds=(1,), limit_eval=24)
        res[mode] = sg.run_superglue("tiny", FEWGLUE, tmp_path / mode, cfg, loader=_loader("bert", tok))
        assert res[mode]["settings"]["prompt"]["multi_token"] == mode
    val = {m: r["tasks"]["COPA"]["val"]["accuracy"]["mean"] for m, r in res.items()}
    assert all(0.0 <= v <= 1.0 for v in val.values())


def test_copa_checkpoint_serves_with_predict_and_eval(tokenizers, tmp_path, capsys):
    model = _save_tiny(tokenizers["bert"], tmp_path / "m")
    assert main(["superglue", "--task", "COPA", "--model", model, "--data-dir", str(FEWGLUE), "--max-steps", "2",
                 "--eval-every", "1", "--limit-eval", "4", "--batch-size", "4", "--seeds", "1", "--max-length", "256",
                 "--save-checkpoints", "--output", str(tmp_path / "out")]) == 0
    examples = read_task("COPA", split_path(FEWGLUE, "COPA", "val")).examples[:5]
    data = tmp_path / "copa.jsonl"
    data.write_text("".join(json.dumps(ex) + "\n" for ex in examples))
    capsys.readouterr()
    ckpt = str(tmp_path / "out" / "runs" / "COPA" / "seed1" / "checkpoint")
    assert main(["predict", "--checkpoint", ckpt, "--data", str(data)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["idx"] for r in rows] == [ex["idx"] for ex in examples]
    for r, ex in zip(rows, examples):
        assert r["label"] == ex["choices"][r["index"]] and len(r["scores"]) == 2
    assert main(["eval", "--checkpoint", ckpt, "--data", str(data)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 5 and 0 <= metrics["accuracy"] <= 1


def test_full_setting_holds_out_dev_when_there_is_no_dev32(tokenizers, tmp_path):
    d = tmp_path / "data" / "RTE"
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text("\n".join((FEWGLUE / "RTE" / "val.jsonl").read_text().splitlines()[:60]) + "\n")
    (d / "val.jsonl").write_text((FEWGLUE / "RTE" / "dev32.jsonl").read_text())
    full = _quick(tasks=("RTE",), setting="full", seeds=(1,))
    splits, notes = sg.load_splits("RTE", tmp_path / "data", setting="full")
    assert len(splits["train"]) == 54 and len(splits["dev"]) == 6 and len(splits["val"]) == 32
    assert not set(splits["dev"].sources) & set(splits["train"].sources)
    assert any("held-out" in n for n in notes)
    res = sg.run_superglue("tiny", tmp_path / "data", tmp_path / "out", full, loader=_loader("bert", tokenizers["bert"]))
    entry = res["tasks"]["RTE"]
    assert entry["val"]["n"] == 12 and "dev32" not in entry and entry["dev"]["n"] == 6
    with pytest.raises(ConfigError, match="dev32"):
        sg.load_splits("RTE", tmp_path / "data", setting="fewshot")
