"""LAMA harness: loaders on the real files, vocabularies, templates, metrics, resumable probing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, pair, tokenizer_for
from ptune.metrics import gold_ranks, macro_micro, rank_metrics
from ptune.tasks import lama
from ptune.template import Template

LAMA = SHARED_DATA / "lama"
needs_lama = pytest.mark.skipif(not (LAMA / "relations.jsonl").is_file(),
                                reason=f"LAMA data not found at {LAMA} (the shared data folder is absent)")


@needs_lama
def test_real_relations_and_fact_counts():
    rels = lama.load_relations(LAMA)
    assert len(rels) == 46 and rels["P19"].template == "[X] was born in [Y] ."
    counts = {s: len(lama.load_facts(LAMA, "P19", s)) for s in ("train", "dev", "test")}
    assert counts == {"train": 800, "dev": 200, "test": 944}
    assert lama.load_facts(LAMA, "P1001", "test") is None  # not carried in the shared copy
    first = lama.load_facts(LAMA, "P19", "train")
    assert first.examples[0] == {"subject": "Shannon Bolin", "object": "Spencer"}
    assert first.sources[0].endswith("fact-retrieval/P19/train.jsonl:1")


@needs_lama
@pytest.mark.parametrize("family,marker", [("gpt2", "Ġ"), ("llama", "▁"), ("bert", "")])
def test_vocabulary_strategies_keep_single_word_start_tokens(family, marker):
    tok = tokenizer_for(family)
    for strategy in ("common", "29k", "original"):
        words = lama.vocabulary(strategy, tok, LAMA, model_type=family)
        assert words, strategy
        for w in words:
            ids = tok(" " + w, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1
            if marker:
                assert tok.convert_ids_to_tokens(ids)[0].startswith(marker)
    common = set(lama.vocabulary("common", tok, LAMA))
    assert common <= set((LAMA / "common_vocab_cased.txt").read_text().split("\n"))


@needs_lama
def test_filtering_counts_facts_with_single_token_objects(tmp_path):
    tok = tokenizer_for("bert")
    words = set(lama.vocabulary("common", tok, LAMA))
    facts = lama.load_facts(LAMA, "P17", "train")
    kept = [ex for ex in facts.examples if ex["object"] in words]
    assert 0 < len(kept) < len(facts.examples)


def test_manual_templates_for_both_kinds():
    masked = Template.parse("[X] was born in [Y] .").compile(tokenizer_for("bert"), "masked")
    enc = masked.encode(masked.tokenize_fields([{"subject": "Paris"}])[0])
    tok = tokenizer_for("bert")
    assert tok.convert_ids_to_tokens(enc.input_ids)[-3:] == ["[MASK]", ".", "[SEP]"]
    causal = Template.parse("[X] was born in [Y] .").compile(tokenizer_for("gpt2"), "causal")
    enc = causal.encode(causal.tokenize_fields([{"subject": "Paris"}])[0])
    g = tokenizer_for("gpt2")
    assert g.decode(enc.input_ids) == "Paris was born in"  # cut at [Y]
    assert enc.answer_positions == [len(enc.input_ids) - 1]
    assert lama.hybrid_template("[X] was born in [Y] .", "masked") == "[P*3] [X] was born in [Y] . [P*3]"
    assert lama.hybrid_template("[X] was born in [Y] .", "causal") == "[P*3] [X] was born in [P*3] [Y] ."
    assert lama.hybrid_template("[Y] plays [X] .", "causal") == "[P*3] [P*3] [Y] plays [X] ."


def test_rank_metrics_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.5, 0.5, 0.0]])
    ranks = gold_ranks(scores, torch.tensor([0, 0, 1]))
    assert ranks.tolist() == [1, 2, 1]  # ties go to the gold
    m = rank_metrics(list(range(1, 13)))  # ranks 1..12
    assert m["n"] == 12 and m["p@1"] == pytest.approx(1 / 12) and m["p@10"] == pytest.approx(10 / 12)
    assert m["mrr"] == pytest.approx(sum(1 / r for r in range(1, 13)) / 12)
    avg = macro_micro({"A": {"n": 1, "p@1": 1.0}, "B": {"n": 3, "p@1": 0.0}, "C": {"n": 0, "p@1": 0.5}}, ["p@1"])
    assert avg["macro"] == {"relations": 2, "p@1": 0.5}
    assert avg["micro"] == {"n": 4, "p@1": 0.25}


def _mini_lama(root: Path) -> Path:
    """Two relations over words of the test corpus."""
    root.mkdir(parents=True)
    rels = [{"relation": "P1", "template": "[X] is a [Y] .", "label": "is a"},
            {"relation": "P2", "template": "[Y] likes [X] .", "label": "liked by"}]
    (root / "relations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rels))
    subjects = ["cat", "dog", "mat", "garden", "story", "film", "movie", "plot", "music", "Paris", "Rome", "France"]
    objects = ["good", "bad", "music"]
    for k, rel in enumerate(("P1", "P2")):
        for s, chunk in (("train", subjects[:6]), ("dev", subjects[6:9]), ("test", subjects[9:])):
            d = root / "fact-retrieval" / rel
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{s}.jsonl").write_text("".join(
                json.dumps({"sub_label": x, "obj_label": objects[(i + k) % 3], "predicate_id": rel}) + "\n"
                for i, x in enumerate(chunk)))
    (root / "common_vocab_cased.txt").write_text("\n".join(objects + ["the", "was", "film"]) + "\n")
    return root


def test_probe_end_to_end_and_resume(tmp_path, monkeypatch):
    data = _mini_lama(tmp_path / "lama")
    lm, tok = pair("gpt2", hidden=64, init_range=0.2)
    cfg = lama.ProbeConfig(methods=("majority", "manual", "ptuning"),
                           train=lama.TrainConfig(epochs=3, lr=1e-2, batch_size=4, patience=2))
    res = lama.probe(lm, tok, data, tmp_path / "out", cfg, model_name="tiny")
    p1 = res["relations"]["P1"]["methods"]
    assert p1["manual"]["test"]["n"] == 3 and set(p1["manual"]["test"]) == {"n", "p@1", "p@10", "mrr"}
    assert res["relations"]["P2"]["methods"]["manual"]["skipped"].startswith("the answer slot precedes")
    assert p1["majority"]["answer"] in ("good", "bad", "music")
    ck = tmp_path / "out" / "checkpoints" / "P1" / "ptuning"
    assert sorted(p.name for p in ck.iterdir()) == ["README.md", "prompt.safetensors", "ptune_config.json"]
    from ptune.checkpoint import load_checkpoint

    served = load_checkpoint(ck, base=(lm, tok))  # the checkpoint reproduces the reported numbers
    test = lama.load_facts(data, "P1", "test")
    assert lama.rank_eval(served, test.examples, test.sources) == p1["ptuning"]["test"]
    assert res["summary"]["ptuning"]["test"]["macro"]["relations"] == 2
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| P1 | is a | 3 |" in table and "**macro**" in table
    assert (tmp_path / "out" / "p_at_1.png").stat().st_size > 1000
    before = (tmp_path / "out" / "results.json").read_text()

    def fail(*a, **k):
        raise AssertionError("a finished relation was run again")

    monkeypatch.setattr(lama, "_probe_relation", fail)
    again = lama.probe(lm, tok, data, tmp_path / "out", cfg, model_name="tiny")
    assert again == json.loads(before)
    with pytest.raises(lama.ConfigError, match="other settings"):
        lama.probe(lm, tok, data, tmp_path / "out", lama.ProbeConfig(vocab="original"), model_name="tiny")


def test_probe_resumes_a_partial_run(tmp_path, monkeypatch):
    data = _mini_lama(tmp_path / "lama")
    lm, tok = pair("bert", hidden=64, init_range=0.2)
    cfg = lama.ProbeConfig(methods=("manual", "ptuning"), train=lama.TrainConfig(epochs=2, lr=1e-2, batch_size=4))
    full = lama.probe(lm, tok, data, tmp_path / "full", cfg, model_name="tiny")
    real = lama._probe_relation
    calls = []

    def crash_on_p2(lm_, tok_, kind, rel, method, *rest):
        if rel.id == "P2":
            raise KeyboardInterrupt
        calls.append((rel.id, method))
        return real(lm_, tok_, kind, rel, method, *rest)

    monkeypatch.setattr(lama, "_probe_relation", crash_on_p2)
    with pytest.raises(KeyboardInterrupt):
        lama.probe(lm, tok, data, tmp_path / "part", cfg, model_name="tiny")
    monkeypatch.setattr(lama, "_probe_relation", real)
    resumed = lama.probe(lm, tok, data, tmp_path / "part", cfg, model_name="tiny")
    assert calls == [("P1", "manual"), ("P1", "ptuning")]
    untimed = lambda res: {r: {k: v for k, v in e.items() if k != "seconds"} for r, e in res["relations"].items()}  # noqa: E731
    assert untimed(resumed) == untimed(full)
    assert set(resumed["relations"]["P2"]["seconds"]) == {"manual", "ptuning"}


def test_a_folder_probed_with_restarts_resumes_only_with_them(tmp_path, monkeypatch):
    """A folder written with restarts on (the demo's, and ``ptune probe``'s earlier default)
    is not resumed by a probe without restarts: the error names the setting and both values;
    rerun with restarts, the finished pairs are kept. A folder probed with restarts off by
    ``restart_below`` 0 resumes under the default."""
    data = _mini_lama(tmp_path / "lama")
    lm, tok = pair("bert", hidden=32)
    cfg = lama.ProbeConfig(methods=("manual",), relations=("P1",))
    lama.probe(lm, tok, data, tmp_path / "on", dataclasses.replace(cfg, restarts=2, restart_below=0.5), model_name="t")
    lama.probe(lm, tok, data, tmp_path / "off", dataclasses.replace(cfg, restarts=2, restart_below=0.0), model_name="t")
    with pytest.raises(lama.ConfigError, match=r"other settings \(restarts.restart_below: 0.5 there, 0.0 here\); "
                                               r"rerun with that run's settings"):
        lama.probe(lm, tok, data, tmp_path / "on", cfg, model_name="t")
    monkeypatch.setattr(lama, "_probe_relation", lambda *a, **k: pytest.fail("a finished pair ran again"))
    lama.probe(lm, tok, data, tmp_path / "on", dataclasses.replace(cfg, restart_below=0.5), model_name="t")
    lama.probe(lm, tok, data, tmp_path / "off", cfg, model_name="t")


def test_lamas_original_per_relation_files_are_the_test_split(tmp_path):
    (tmp_path / "relations.jsonl").write_text(json.dumps({"relation": "P19", "template": "[X] was born in [Y] ."}) + "\n")
    (tmp_path / "P19.jsonl").write_text(
        json.dumps({"sub_label": "Ann", "obj_label": "Rome", "evidences": [{"masked_sentence": "x"}], "uuid": "1"}) + "\n"
        + json.dumps({"sub_label": "Bo", "obj_label": "Paris"}) + "\n")
    facts = lama.load_facts(tmp_path, "P19", "test")
    assert facts.examples == [{"subject": "Ann", "object": "Rome"}, {"subject": "Bo", "object": "Paris"}]
    assert lama.load_facts(tmp_path, "P19", "train") is None
    (tmp_path / "P19.jsonl").write_text(json.dumps({"sub_label": "Ann"}) + "\n")
    with pytest.raises(lama.DataError, match=r"P19.jsonl:1: field 'obj_label': missing"):
        lama.load_facts(tmp_path, "P19", "test")


def test_cli_probe_with_a_config_file(tmp_path, capsys):
    from ptune.cli import main

    data = _mini_lama(tmp_path / "lama")
    lm, tok = pair("gpt2", hidden=64, init_range=0.2)
    lm.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(f"model: {tmp_path / 'm'}\ndata_dir: {data}\nmethods: [majority, manual, ptuning]\nrelations: P1\n"
                   "prompt: {encoder: mlp}\ntrain: {epochs: 2, lr: 1.0e-2, batch_size: 4}\n")
    assert main(["probe", "--config", str(cfg), "--output", str(tmp_path / "out"), "--patience", "1"]) == 0
    assert "| P1 | is a | 3 |" in capsys.readouterr().out
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(res["relations"]) == ["P1"] and set(res["relations"]["P1"]["methods"]) == {"majority", "manual", "ptuning"}
    assert res["settings"]["prompt"] == {"encoder": {"type": "mlp", "lstm_dropout": 0.0}}
    train = res["settings"]["train"]
    assert (train["epochs"], train["lr"], train["batch_size"], train["patience"]) == (2, 1e-2, 4, 1)
    assert train == json.loads(json.dumps({**lama.LAMA_TRAIN.to_dict(), "epochs": 2, "lr": 1e-2, "batch_size": 4,
                                           "patience": 1}))  # as JSON records it


def test_manual_wordings_from_relations_file_pick_the_manual_and_hybrid_template(tmp_path):
    data = _mini_lama(tmp_path / "lama")
    rels = [json.loads(line) for line in (data / "relations.jsonl").read_text().splitlines()]
    rels[0]["manual_templates"] = ["[X] is a [Y] .", "[X] is one [Y] ."]
    (data / "relations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rels))
    loaded = lama.load_relations(data)
    assert loaded["P1"].wording(0) == "[X] is a [Y] ." and loaded["P1"].wording(1) == "[X] is one [Y] ."
    assert loaded["P1"].wording(2) is None and loaded["P2"].wording(1) is None
    lm, tok = pair("bert", hidden=32)
    cfg = lama.ProbeConfig(methods=("manual", "hybrid"), wording=1, train=lama.TrainConfig(steps=1, batch_size=4))
    res = lama.probe(lm, tok, data, tmp_path / "out", cfg, model_name="tiny")
    p1 = res["relations"]["P1"]["methods"]
    assert p1["manual"]["template"] == "[X] is one [Y] ."
    assert p1["hybrid"]["template"] == lama.hybrid_template("[X] is one [Y] .", "masked")
    assert res["relations"]["P2"]["methods"]["manual"]["skipped"].startswith("no manual wording 1")
    assert res["settings"]["wording"] == 1
    with pytest.raises(lama.ConfigError, match="wording"):
        lama.ProbeConfig(wording=-1)
    rels[0]["manual_templates"] = ["[X] is one [Y] .", "[X] is a [Y] ."]  # the first must be the template
    (data / "relations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rels))
    with pytest.raises(lama.DataError, match="manual_templates"):
        lama.load_relations(data)


def test_a_stalled_prompt_trains_again_and_the_best_attempt_on_dev_is_kept(tmp_path):
    """restart_below above any dev P@1: every attempt stalls, so ptuning and hybrid train
    1 + restarts times (seeds seed, seed+1, ...); the best on dev is kept and its checkpoint
    saved; restart_below 0 trains once."""
    data = _mini_lama(tmp_path / "lama")
    lm, tok = pair("bert", hidden=32)
    train = lama.TrainConfig(steps=2, batch_size=4, seed=3)
    cfg = lama.ProbeConfig(methods=("manual", "ptuning", "hybrid"), relations=("P1",), train=train,
                           restarts=2, restart_below=1.1)
    res = lama.probe(lm, tok, data, tmp_path / "out", cfg, model_name="tiny")
    methods = res["relations"]["P1"]["methods"]
    assert "attempts" not in methods["manual"]
    for m in ("ptuning", "hybrid"):
        tries = methods[m]["attempts"]
        assert [a["seed"] for a in tries] == [3, 4, 5] and [a["kept"] for a in tries].count(True) == 1
        kept = next(a for a in tries if a["kept"])
        assert kept["dev"] == max(a["dev"] for a in tries) == methods[m]["dev"]["p@1"]
        assert kept["attempt"] == min(a["attempt"] for a in tries if a["dev"] == kept["dev"])
    assert res["settings"]["restarts"] == {"restarts": 2, "restart_below": 1.1}
    # the default trains once, and so does restarts=0 whatever restart_below
    default = lama.ProbeConfig(methods=cfg.methods, relations=cfg.relations, train=train)
    for name, off in (("default", default), ("zero", dataclasses.replace(cfg, restarts=0))):
        once = lama.probe(lm, tok, data, tmp_path / name, off, model_name="tiny")
        assert all("attempts" not in once["relations"]["P1"]["methods"][m] for m in ("ptuning", "hybrid")), name
    for m in ("ptuning", "hybrid"):  # one attempt is the restarted run's first
        assert once["relations"]["P1"]["methods"][m]["dev"]["p@1"] == methods[m]["attempts"][0]["dev"]
    with pytest.raises(lama.ConfigError, match="restarts"):
        lama.ProbeConfig(restarts=-1)
