"""The discrete prompt baselines: AutoPrompt's trigger search and LPAQA-style corpus mining."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import SHARED_DATA, pair, tokenizer_for
from ptune.checkpoint import load_checkpoint
from ptune.config import PromptConfig, TrainConfig
from ptune.errors import ConfigError
from ptune.model import PTunedModel
from ptune.tasks import autoprompt, lama
from ptune.tasks.mining import escape, mine
from ptune.tiny import tiny_model, train_tokenizer
from test_lama import _mini_lama

LAMA = SHARED_DATA / "lama"
WORDS = ["yes", "no", "good", "bad"]
SUBJECTS = ["movie", "film", "story", "plot", "music", "garden", "dog", "mat"]


def _prompt_model(lm, tok, template: str) -> PTunedModel:
    cfg = PromptConfig(template=template, verbalizer={w: w for w in WORDS}, label_field="object",
                       normalize="vocab", encoder="none")
    return PTunedModel(lm, tok, cfg, seed=0)


@pytest.mark.parametrize("family,template", [("gpt2", "[P*2] [X] [P*2] [MASK]"),
                                             ("bert", "[P*2] [X] [P*2] [MASK] [P]")])
def test_candidate_losses_equal_each_prompt_on_its_own(family, template):
    lm, tok = pair(family, hidden=32, init_range=0.2)
    model = _prompt_model(lm, tok, template)
    model.eval()
    items = model.prepare([{"subject": s, "object": WORDS[i % 4]} for i, s in enumerate(SUBJECTS)],
                          require_labels=True)
    gen = torch.Generator().manual_seed(0)
    triggers = torch.randint(10, len(tok), (3, model.encoder.n_pseudo), generator=gen).tolist()
    together = autoprompt.Candidates(model, 4).losses(items, triggers)
    alone = []
    for row in triggers:
        autoprompt.set_triggers(model, row)
        assert autoprompt.trigger_ids(model) == row
        with torch.no_grad():
            alone.append(float(model(model.collate(items)).loss))  # the plain path, shortcuts and caches included
    assert together.tolist() == pytest.approx(alone, rel=1e-5, abs=1e-6)
    assert len(set(round(x, 4) for x in alone)) == 3  # the prompts do change the loss


def _planted_gpt2(tok, planted: int, answer: int):
    """A one-layer GPT-2 whose answer is ``answer`` exactly when token ``planted`` is in its input.

    The planted token's embedding is the only one with a component on dimension 0 (the
    others have zero mean, so that layer norm keeps that component at zero);
    attention is uniform (zero queries and keys) and copies its input; the MLP and the
    position embeddings are zero; the (untied) output head gives ``answer`` a logit
    proportional to dimension 0 and every other token zero.
    """
    h = 32
    lm = tiny_model("gpt2", tok, hidden=h, layers=1, heads=1, dropout=0.0)
    lm.config.tie_word_embeddings = False
    with torch.no_grad():
        wte = lm.transformer.wte.weight
        wte[:, 1:] -= wte[:, 1:].mean(1, keepdim=True)  # zero mean: layer norm keeps dimension 0 at zero
        wte[:, 0] = 0
        wte[planted] = 0
        wte[planted, 0] = 10.0
        lm.transformer.wpe.weight.zero_()
        block = lm.transformer.h[0]
        block.attn.c_attn.weight.zero_()
        block.attn.c_attn.bias.zero_()
        block.attn.c_attn.weight[:, 2 * h:] = torch.eye(h)  # values: the input itself
        block.attn.c_proj.weight.copy_(torch.eye(h))
        block.attn.c_proj.bias.zero_()
        for p in block.mlp.parameters():
            p.zero_()
        head = torch.nn.Linear(h, len(tok), bias=False)
        head.weight.zero_()
        head.weight[answer, 0] = 20.0
    lm.lm_head = head
    return lm


def test_autoprompt_finds_a_planted_trigger():
    tok = tokenizer_for("gpt2")
    planted = tok(" cat", add_special_tokens=False)["input_ids"][0]  # "Ġc": any token other than "Ġthe"
    (answer,) = tok(" good", add_special_tokens=False)["input_ids"]
    lm = _planted_gpt2(tok, planted, answer)
    model = _prompt_model(lm, tok, "[P*3] [X] [P*2] [MASK]")
    items = model.prepare([{"subject": s, "object": "good"} for s in SUBJECTS], require_labels=True)
    autoprompt.set_triggers(model, tok(" the the the the the", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        before = float(model(model.collate(items)).loss)  # all triggers "the" (the start): p(good) = 1/V
    found = autoprompt.search(model, items, None, TrainConfig(epochs=3, batch_size=4, seed=0))
    assert planted in found.ids and tok.convert_ids_to_tokens(planted) in found.tokens
    assert found.accepted >= 1 and found.rounds == 6
    assert autoprompt.trigger_ids(model) == found.ids  # the model holds the found prompt
    with torch.no_grad():
        after = float(model(model.collate(items)).loss)
    assert before == pytest.approx(math.log(len(tok)), rel=1e-4) and after < 0.01  # the planted token: certain


def test_autoprompt_keeps_the_best_prompt_on_dev_and_stops_without_gains():
    lm, tok = pair("bert", hidden=32, init_range=0.2)
    model = _prompt_model(lm, tok, "[P*2] [X] [P*2] [MASK] [P]")
    items = model.prepare([{"subject": s, "object": WORDS[i % 2]} for i, s in enumerate(SUBJECTS)],
                          require_labels=True)
    calls = []

    def dev_score(m):  # a dev set that prefers the starting prompt over everything else
        calls.append(autoprompt.trigger_ids(m))
        return (1.0,) if len(calls) == 1 else (0.5,)

    found = autoprompt.search(model, items, dev_score, TrainConfig(epochs=20, batch_size=4, patience=2, seed=0))
    the = tok(" the", add_special_tokens=False)["input_ids"][0]
    assert found.ids == [the] * 5 and found.best_round == 0 and found.stopped_early
    assert found.rounds == 4 and len(calls) == 3  # one dev score before the first round, one per epoch
    assert autoprompt.trigger_ids(model) == found.ids
    with pytest.raises(ConfigError, match="none"):
        autoprompt.set_triggers(PTunedModel(lm, tok, PromptConfig(template="[P] [X] [MASK]", verbalizer={"a": "yes"})),
                                [the])


def test_prompt_in_words_and_escape():
    assert autoprompt.prompt_in_words("[P*2] [X] [P] [MASK] [P:born]", ["a", "b", "c", "d"]) == "a b [X] c [MASK] d"
    assert autoprompt.prompt_in_words(r"\[P\] [P] [X] [Y]", ["x"]) == r"\[P\] x [X] [Y]"
    assert escape("a [b] {c} \\") == "a \\[b\\] \\{c\\} \\\\"


def test_mining_recovers_the_planted_wording():
    facts = [("Ada Lovelace", "London"), ("Bo", "Rome"), ("Cy", "Oslo"), ("Di", "Paris")]
    lines = [f"Once , {s} was said to hail from {o} ." for s, o in facts[:3]]  # the planted wording
    lines += [f"{s} visited {o} ." for s, o in facts[:2]]  # a distractor, two facts
    lines += ["Romeo left Rome .", "Bo [sic] lived in Rome , it is said .", "Oslo is where Cy lived ."]
    lines += ["Nobody mentions Paris here .", "Di stayed home ."]  # subject and object never together
    mined = mine(lines, {"P19": facts, "P20": []})
    assert mined["P20"] == []
    best = mined["P19"][0]
    assert (best.template, best.kind, best.support) == ("[X] was said to hail from [Y] .", "middle", 3)
    templates = {m.template: m for m in mined["P19"]}
    assert templates["Once , [X] was said to hail from [Y] ."].kind == "sentence"
    assert templates["[X] visited [Y] ."].support == 2  # both kinds give it: counted once, as middle
    assert templates["[X] \\[sic\\] lived in [Y] ."].support == 1  # escaped for the template language
    assert "[Y] is where [X] ." in templates  # the object first
    assert not any("Romeo" in m.example for m in mined["P19"])  # whole words only
    assert len(mine(lines, {"P19": facts}, max_middle_words=3)["P19"]) < len(mined["P19"])


def test_probe_autoprompt_and_mined_end_to_end(tmp_path, capsys):
    from ptune.cli import main

    data = _mini_lama(tmp_path / "lama")
    train = lama.load_facts(data, "P1", "train").examples
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the {ex['subject']} is a {ex['object']} .\n" for ex in train)
                      + "the cat was music .\n", encoding="utf-8")
    lm, tok = pair("bert", hidden=64, init_range=0.2)
    cfg = lama.ProbeConfig(methods=("autoprompt", "mined"), mining={"corpus": str(corpus)},
                           autoprompt={"trigger_candidates": 4},
                           train=lama.TrainConfig(epochs=2, batch_size=4, patience=2))
    lm.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    res = lama.probe(lm, tok, data, tmp_path / "out", cfg, model_name=str(tmp_path / "tiny"))
    p1 = res["relations"]["P1"]
    ap = p1["methods"]["autoprompt"]
    assert len(ap["trigger_ids"]) == 9 and ap["trigger_tokens"] == tok.convert_ids_to_tokens(ap["trigger_ids"])
    assert ap["prompt"].count("[X]") == 1 and "[P" not in ap["prompt"] and ap["rounds"] <= 4
    assert set(p1["seconds"]) == {"autoprompt", "mined"} and res["mining"]["seconds"] >= 0
    served = load_checkpoint(tmp_path / "out" / "checkpoints" / "P1" / "autoprompt", base=(lm, tok))
    assert autoprompt.trigger_ids(served) == ap["trigger_ids"]
    test = lama.load_facts(data, "P1", "test")
    assert lama.rank_eval(served, test.examples, test.sources) == ap["test"]
    mined = p1["methods"]["mined"]
    assert mined["mined"] == 2 and mined["template"] == mined["candidates"][0]["template"]
    assert {c["template"]: c["support"] for c in mined["candidates"]} == {"[X] is a [Y] .": 6, "the [X] is a [Y] .": 6}
    assert mined["candidates"][0]["train p@1"] >= mined["candidates"][1]["train p@1"]
    assert res["relations"]["P2"]["methods"]["mined"]["skipped"].startswith("no corpus sentence")
    cfg2 = lama.ProbeConfig(methods=("mined",), mining={"corpus": str(corpus), "mined_ensemble": 2})
    both = lama.probe(lm, tok, data, tmp_path / "ensemble", cfg2, model_name="tiny")["relations"]["P1"]["methods"]
    assert both["mined"]["ensemble"] == [c["template"] for c in mined["candidates"]]
    assert both["mined"]["test"] == _mean_of_two(lm, tok, both["mined"]["ensemble"], test, data)
    assert main(["inspect", "--checkpoint", str(tmp_path / "out" / "checkpoints" / "P1" / "autoprompt"),
                 "--top", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"discrete prompt: {ap['prompt']}"
    assert out[2] == "tokens: " + " ".join(ap["trigger_tokens"])
    assert out[3].startswith("P1: ") and out[3].endswith("(1.00)")


def _mean_of_two(lm, tok, templates, facts, data):
    """P@1, P@10, MRR of the mean of two templates' candidate scores, computed apart."""
    from ptune.inference import iter_outputs
    from ptune.metrics import gold_ranks, rank_metrics
    from ptune.verbalizer import Verbalizer

    words = Verbalizer.from_vocabulary(lama.vocabulary("common", tok, data))
    scores, gold = [], None
    for t in templates:
        m = PTunedModel(lm, tok, PromptConfig(template=t, verbalizer=words.to_dict(), label_field="object",
                                              normalize="vocab"))
        outs = list(iter_outputs(m, m.prepare(facts.examples, facts.sources, require_labels=True), 64))
        scores.append(torch.cat([o.scores for _, _, o in outs]))
        gold = torch.cat([b.labels for _, b, _ in outs])
    return rank_metrics(gold_ranks((scores[0] + scores[1]) / 2, gold))


def test_mined_needs_a_corpus(tmp_path, capsys):
    from ptune.cli import main

    with pytest.raises(ConfigError, match="corpus"):
        lama.ProbeConfig(methods=("mined",))
    data = _mini_lama(tmp_path / "lama")
    args = ["probe", "--model", "x", "--data-dir", str(data), "--output", str(tmp_path / "o"), "--methods", "mined"]
    assert main(args) == 2
    assert "corpus" in capsys.readouterr().err
    assert main(args + ["--corpus", str(tmp_path / "none.txt"), "--trigger-candidates", "0"]) == 2
    assert "trigger_candidates: must be a positive integer" in capsys.readouterr().err


@pytest.mark.skipif(not (LAMA / "relations.jsonl").is_file(), reason=f"LAMA data not found at {LAMA}")
def test_both_methods_on_real_lama_files(tmp_path, capsys):
    """``ptune probe`` with autoprompt and mined on two real LAMA relations, with a tiny BERT
    whose tokenizer knows the relations' objects."""
    from ptune.cli import main

    rels = ("P1303", "P103")
    facts = {r: lama.load_facts(LAMA, r, "train").examples[:40] for r in rels}
    objects = sorted({ex["object"] for exs in facts.values() for ex in exs})
    lines = [f"{ex['subject']} {w} {ex['object']} ." for r, w in zip(rels, ("plays the", "speaks"))
             for ex in facts[r][:20]]
    tok = train_tokenizer("bert", lines, vocab_size=600, extra_tokens=objects)
    model_dir = tmp_path / "tiny-bert"
    tiny_model("bert", tok, hidden=32, layers=1).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(["probe", "--model", str(model_dir), "--data-dir", str(LAMA), "--relations", ",".join(rels),
                 "--methods", "autoprompt,mined", "--corpus", str(corpus), "--vocab", "common", "--steps", "2",
                 "--batch-size", "8", "--trigger-candidates", "3", "--output", str(tmp_path / "out")])
    assert code == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    for r, wording in zip(rels, ("[X] plays the [Y] .", "[X] speaks [Y] .")):
        methods = res["relations"][r]["methods"]
        assert methods["autoprompt"]["rounds"] == 2 and "test" in methods["autoprompt"]
        assert methods["mined"]["template"] == wording
    assert "| P1303 |" in capsys.readouterr().out
