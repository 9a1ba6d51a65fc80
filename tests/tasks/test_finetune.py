"""The fine-tuning baseline: a classification head on the pooled state, trained by the trainer."""

from __future__ import annotations

import json
import random

import pytest
import torch

from conftest import NEG, POS, pair, sentiment
from ptune import CheckpointError, ConfigError, DataError, TrainConfig
from ptune.checkpoint import load_checkpoint, load_training_state, load_weights, save_checkpoint
from ptune.evaluation import evaluate
from ptune.finetune import ClassifierConfig, ClassifierModel
from ptune.trainer import train

LABELS = ["pos", "neg"]


def _model(family="bert", seed=0, **options):
    lm, tok = pair(family, seed=seed, hidden=64, init_range=0.2)
    config = ClassifierConfig(**{"inputs": ["{text}"], "labels": LABELS, **options})
    return ClassifierModel(lm, tok, config, seed=seed)


def _choice_model(family="gpt2", seed=0):
    return _model(family, seed, inputs=["{question}", "{candidate}"], labels=None, candidates_field="choices")


def _choice_task(n: int, seed: int = 0) -> list[dict]:
    """Pick the word of the polarity the question asks for among 2-3 words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        good = i % 2 == 0
        right = rng.choice(POS if good else NEG)
        choices = [right] + rng.sample(NEG if good else POS, 1 + (i // 2) % 2)
        rng.shuffle(choices)
        out.append({"question": f"which one is {'good' if good else 'bad'} ?", "choices": choices,
                    "label": choices.index(right)})
    rng.shuffle(out)
    return out


def _scores(model, examples):
    model.eval()
    with torch.no_grad():
        return model(model.collate(model.prepare(examples))).scores


# ----------------------------------------------------------------------------- config
def test_config_is_validated_and_round_trips():
    cfg = ClassifierConfig(inputs=("{word} : {sentence1}", "{sentence2}"), labels=("true", "false"), max_length=64)
    assert cfg.inputs == ["{word} : {sentence1}", "{sentence2}"] and cfg.labels == ["true", "false"]
    assert ClassifierConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = [
        (dict(inputs=["{a}", "{b}", "{c}"], labels=LABELS), "inputs"),
        (dict(inputs="{a}", labels=LABELS), "inputs"),
        (dict(inputs=["no fields"], labels=LABELS), "inputs"),
        (dict(inputs=["{a} {candidate}"], labels=LABELS), "inputs"),
        (dict(inputs=["{a}"], labels=None, candidates_field="c"), "inputs"),
        (dict(inputs=["{a} {candidate}"], labels=LABELS, candidates_field="c"), "labels"),
        (dict(inputs=["{a}"], labels=None), "labels"),
        (dict(inputs=["{a}"], labels=["x", "x"]), "labels"),
        (dict(inputs=["{a}"], labels=LABELS, max_length=1), "max_length"),
        (dict(inputs=["{a}"], labels=LABELS, dropout=1.0), "dropout"),
        (dict(inputs=["{a}"], labels=LABELS, kind="seq2seq"), "kind"),
    ]
    for kwargs, name in bad:
        with pytest.raises(ConfigError) as e:
            ClassifierConfig(**kwargs)
        assert e.value.field == name, kwargs
    with pytest.raises(ConfigError, match="did you mean 'labels'"):
        ClassifierConfig.from_dict({"inputs": ["{a}"], "label": LABELS})


# ----------------------------------------------------------------------------- data
def test_prepare_tokenizes_pairs_once_and_truncates():
    model = _model("bert", inputs=["{a}", "{b}"], max_length=9)
    calls = []
    tok = model.tokenizer

    class Counting:
        def __call__(self, *args, **kwargs):
            calls.append(len(args[0]))
            return tok(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(tok, name)

    model.tokenizer = Counting()
    items = model.prepare([{"a": "the cat", "b": "the dog", "label": "pos"},
                           {"a": "the movie was great and i loved it . " * 3, "b": "the film", "label": "neg"},
                           {"a": "{b} {{b}}", "b": "x"}])
    assert calls == [3]  # one batched tokenizer call
    short, long, braces = items
    ids = short.fields["input_ids"]
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2
    assert short.fields["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    assert len(long.fields["input_ids"]) == 9 and long.fields["token_type_ids"][-1] == 1  # both kept
    assert [it.label for it in items] == [0, 1, -100]
    assert braces.fields["input_ids"] == tok("{b} {{b}}", "x", truncation=True, max_length=9)["input_ids"]  # values are never formatted again

    gpt = _model("gpt2", inputs=["{a}", "{b}"])  # no special tokens: the segments are concatenated
    g = gpt.prepare([{"a": "the cat", "b": "the dog"}])[0]
    assert g.fields == {"input_ids": gpt.tokenizer("the cat")["input_ids"] + gpt.tokenizer("the dog")["input_ids"]}


def test_bad_input_names_source_and_field():
    model = _model("bert", inputs=["{text}", "{other}"])
    cases = [
        ([{"text": "a", "label": "pos"}], "other", "missing"),
        ([{"text": "a", "other": None, "label": "pos"}], "other", "null"),
        ([{"text": "a", "other": "b", "label": "maybe"}], "label", "not a label"),
    ]
    mc = _choice_model("bert")
    cases_mc = [
        ([{"question": "q", "choices": [], "label": 0}], "choices", "empty"),
        ([{"question": "q", "choices": "great", "label": 0}], "choices", "list"),
        ([{"question": "q", "choices": ["a", 3], "label": 0}], "choices", "list of candidate strings"),
        ([{"question": "q", "choices": ["a", "b"], "label": True}], "label", "not a candidate index"),
        ([{"question": "q", "label": 0}], "choices", "missing"),
        ([{"question": "q", "choices": ["a", "b"], "label": 2}], "label", r"not a candidate index \(0 to 1\)"),
        ([{"question": "q", "choices": ["a", "b"], "label": -1}], "label", "not a candidate index"),
        ([{"question": "q", "choices": ["a", "b"], "label": "a"}], "label", "not a candidate index"),
        ([{"choices": ["a", "b"], "label": 0}], "question", "missing"),
    ]
    for m, group in ((model, cases), (mc, cases_mc)):
        for examples, field, words in group:
            with pytest.raises(DataError, match=words) as e:
                m.prepare(examples, sources=["train.jsonl:7"])
            assert e.value.field == field and e.value.source == "train.jsonl:7", examples
    with pytest.raises(DataError, match="need a label") as e:
        model.prepare([{"text": "a", "other": "b"}], require_labels=True)
    assert e.value.field == "label"
    assert [it.label for it in mc.prepare([{"question": "q", "choices": ["a", "b"], "label": "1"}])] == [1]
    assert [it.label for it in model.prepare([{"text": "a", "other": "b"}])] == [-100]


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("family", ["bert", "gpt2", "roberta", "llama"])
def test_scores_do_not_depend_on_the_batch(family):
    model = _model(family, inputs=["{a}", "{b}"])
    examples = [{"a": "the cat", "b": "sat"},
                {"a": "the movie was great and i loved it .", "b": "a wonderful story with brilliant acting ."},
                {"a": "boring", "b": "plot"}]
    together = _scores(model, examples)
    alone = torch.cat([_scores(model, [ex]) for ex in examples])
    assert together.shape == (3, 2)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(together[0], together[1], atol=1e-4)  # the scores do depend on the text


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_multiple_choice_pads_missing_candidates_with_minus_inf(family):
    model = _choice_model(family)
    examples = [{"question": "which one is good ?", "choices": ["great", "awful", "boring"]},
                {"question": "is it ?", "choices": ["loved"]},
                {"question": "which one is bad ?", "choices": ["terrible , i hated it", "wonderful"]}]
    together = _scores(model, examples)
    assert together.shape == (3, 3)
    assert torch.isinf(together[1, 1:]).all() and torch.isinf(together[2, 2])
    assert torch.isfinite(together[0]).all() and torch.isfinite(together[2, :2]).all()
    for i, ex in enumerate(examples):
        alone = _scores(model, [ex])[0]
        n = len(ex["choices"])
        assert alone.shape == (n,)
        torch.testing.assert_close(together[i, :n], alone, atol=1e-5, rtol=0)
    model.eval()
    batch = model.collate(model.prepare([{**ex, "label": 0} for ex in examples]))
    loss = model(batch).loss
    assert loss is not None and torch.isfinite(loss)
    preds = model.predict(examples)
    assert preds[1] == {"label": "loved", "index": 0, "scores": [1.0]}
    assert preds[0]["label"] == examples[0]["choices"][preds[0]["index"]] and len(preds[2]["scores"]) == 2
    assert abs(sum(preds[0]["scores"]) - 1) < 1e-5


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "roberta", "albert"])
def test_scores_are_the_head_on_the_lms_own_states(family):
    """The classifier runs the LM's backbone weights: its scores are the head applied to the
    plain LM's hidden state at the pooled position (last real token of a causal LM, first
    token of a masked LM), whatever the padding of the batch."""
    lm, tok = pair(family, hidden=64, init_range=0.2)
    lm.eval()
    model = ClassifierModel(lm, tok, ClassifierConfig(inputs=["{text}"], labels=LABELS), seed=0).eval()
    examples = [{"text": "the movie was great and i loved it ."}, {"text": "boring"}]
    scores = _scores(model, examples)
    seq = model.seq
    with torch.no_grad():
        for i, ex in enumerate(examples):
            enc = tok(ex["text"], return_tensors="pt")
            h = lm.base_model(**enc).last_hidden_state  # the LM passed in, not the classifier's copy
            if model.kind == "causal":
                ref = seq.score(h[0, -1])
            else:
                ref = seq(**enc).logits[0]  # the head of its architecture (pooler, dense, ...)
                torch.testing.assert_close(seq.base_model(**enc).last_hidden_state, h, atol=1e-5, rtol=0)
            torch.testing.assert_close(scores[i], ref, atol=1e-5, rtol=0)
    assert seq.config.pad_token_id is not None  # causal LMs find the last token by it
    head = {n for n, p in seq.named_parameters() if any(p is q for q in model.prompt_parameters())}
    assert head == set(model.head_names)


def test_seeded_head_and_frozen_lm():
    config = ClassifierConfig(inputs=["{text}"], labels=LABELS)
    lm, tok = pair("bert", hidden=64, init_range=0.2)
    lm2 = pair("bert", seed=1, hidden=64, init_range=0.2)[0]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = ClassifierModel(lm, tok, config, seed=5), ClassifierModel(lm2, tok, config, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the seed does not touch the global RNG
    assert all(torch.equal(x, y) for x, y in zip(a.prompt_parameters(), b.prompt_parameters()))
    c = ClassifierModel(lm, tok, config, seed=6)
    assert not torch.equal(a.prompt_parameters()[0], c.prompt_parameters()[0])
    # the head: BERT's classifier and its pooler (absent from the masked LM), initialized as transformers does
    assert set(a.head_names) == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight",
                                 "bert.pooler.dense.bias"}
    assert not a.seq.classifier.bias.any() and abs(float(a.seq.classifier.weight.detach().std()) - 0.2) < 0.05
    head = set(map(id, a.prompt_parameters()))
    assert all(p.requires_grad == (id(p) in head) for p in a.seq.parameters())
    a.train()
    assert a.seq.training and a.seq.dropout.training and not a.lm.training  # a frozen LM runs without dropout
    a.set_lm_trainable(True)
    assert a.lm.training and all(p.requires_grad for p in a.seq.parameters())
    a.set_lm_trainable(True, dropout=False)
    assert not a.lm.training and a.seq.dropout.training
    assert ClassifierModel(lm, tok, ClassifierConfig(inputs=["{text}"], labels=LABELS, dropout=0.0)).seq.dropout.p == 0.0


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("family,tune_lm,steps,lr,lm_lr", [
    ("roberta", False, 60, 0.1, None), ("llama", False, 80, 0.1, None), ("bert", True, 60, 1e-2, 1e-3),
    ("gpt2", True, 60, 3e-2, 3e-3)])
def test_training_learns(family, tune_lm, steps, lr, lm_lr):
    model = _model(family, dropout=0.0)  # no dropout: a tiny random LM's features are fragile
    before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    items = model.prepare(sentiment(64), require_labels=True)
    dev = model.prepare(sentiment(32, seed=10), require_labels=True)
    start = evaluate(model, dev)
    result = train(model, items, dev, TrainConfig(steps=steps, batch_size=8, lr=lr, finetune_lm=tune_lm, lm_lr=lm_lr or 1e-5,
                                                  lm_dropout=False, eval_every=steps // 3), progress=False)
    end = evaluate(model, dev)
    assert end["accuracy"] >= 0.9 and end["loss"] < start["loss"], (start, end, result.history)
    assert end["accuracy"] == result.best_metrics["accuracy"]  # best weights restored
    lm_changed = any(not torch.equal(before[k], v) for k, v in model.lm.state_dict().items())
    assert lm_changed == tune_lm
    preds = model.predict(sentiment(8, seed=11))
    assert all(set(p["scores"]) == set(LABELS) and p["label"] in LABELS for p in preds)


def test_multiple_choice_learns():
    model = _choice_model("gpt2")
    items = model.prepare(_choice_task(64), require_labels=True)
    dev = model.prepare(_choice_task(32, seed=10), require_labels=True)
    assert {len(it.fields["input_ids"]) for it in items} == {2, 3}
    start = evaluate(model, dev)
    train(model, items, dev, TrainConfig(steps=40, batch_size=8, lr=1e-2, finetune_lm=True, lm_lr=3e-3,
                                         eval_every=20), progress=False)
    end = evaluate(model, dev)
    assert end["accuracy"] >= 0.9 and end["loss"] < start["loss"], (start, end)


# ----------------------------------------------------------------------------- checkpoints
def test_save_load_with_a_frozen_base_and_refusal_of_another(tmp_path):
    lm, tok = pair("bert", hidden=64, init_range=0.2)
    lm.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    model = ClassifierModel.from_base(str(tmp_path / "base"), inputs=["{text}"], labels=LABELS, seed=0)
    assert model.kind == "masked" and model.base_model == str(tmp_path / "base")
    train(model, sentiment(32), None, TrainConfig(steps=3, batch_size=16, lr=1e-2), progress=False)
    save_checkpoint(model, tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["README.md", "head.safetensors", "ptune_config.json"]
    assert (tmp_path / "ck" / "head.safetensors").stat().st_size < 20_000  # the head only, not the LM
    meta = json.loads((tmp_path / "ck" / "ptune_config.json").read_text())
    assert meta["classifier"]["labels"] == LABELS and meta["classifier"]["kind"] == "masked"
    examples = sentiment(6, seed=1)
    loaded = load_checkpoint(tmp_path / "ck")  # the base found again by its folder
    assert isinstance(loaded, ClassifierModel)
    assert torch.equal(_scores(loaded, examples), _scores(model, examples))
    assert loaded.predict(examples) == model.predict(examples)
    with pytest.raises(CheckpointError, match="another base model"):
        load_checkpoint(tmp_path / "ck", base=pair("bert", seed=3, hidden=64, init_range=0.2))
    with pytest.raises(CheckpointError, match="not a ptune checkpoint"):
        load_checkpoint(tmp_path / "base")
    save_checkpoint(model, tmp_path / "ck")  # replaces the folder atomically
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_load_with_the_tuned_lm(tmp_path):
    model = _choice_model("gpt2")
    train(model, _choice_task(16), None, TrainConfig(steps=2, batch_size=8, finetune_lm=True, lm_lr=1e-2),
          progress=False)
    save_checkpoint(model, tmp_path / "ck")
    assert (tmp_path / "ck" / "lm").is_dir()
    loaded = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded, ClassifierModel) and loaded.head_names == model.head_names
    examples = _choice_task(6, seed=3)
    assert torch.equal(_scores(loaded, examples), _scores(model, examples))
    assert loaded.predict(examples) == model.predict(examples)
    with pytest.raises(CheckpointError, match="own tuned LM"):
        load_checkpoint(tmp_path / "ck", base=pair("gpt2", hidden=64, init_range=0.2))
    save_checkpoint(loaded, tmp_path / "again")  # a loaded tuned LM stays with the classifier
    assert (tmp_path / "again" / "lm").is_dir()

    fresh = _choice_model("gpt2", seed=4)  # what a trainer restoring best/ does
    load_weights(fresh, tmp_path / "ck")
    assert torch.equal(_scores(fresh, examples), _scores(model, examples))
    with pytest.raises(CheckpointError, match="another classifier config"):
        load_weights(_model("gpt2"), tmp_path / "ck")


def test_training_checkpoint_files(tmp_path):
    model = _model("llama")
    items = model.prepare(sentiment(16), require_labels=True)
    optimizer = torch.optim.AdamW(model.prompt_parameters(), lr=1e-2)
    model(model.collate(items[:4])).loss.backward()
    optimizer.step()
    save_checkpoint(model, tmp_path / "last", optimizer=optimizer, trainer_state={"step": 1})
    state, opt = load_training_state(tmp_path / "last")
    assert state == {"step": 1} and opt["state"]
    fresh = _model("llama", seed=1)
    fresh.seq.base_model.load_state_dict(model.seq.base_model.state_dict())  # the same base, another head
    assert not torch.equal(fresh.prompt_parameters()[0], model.prompt_parameters()[0])
    load_weights(fresh, tmp_path / "last")
    assert all(torch.equal(a, b) for a, b in zip(fresh.prompt_parameters(), model.prompt_parameters()))
    with pytest.raises(CheckpointError, match="another base model"):
        load_weights(_model("llama", seed=1), tmp_path / "last")


@pytest.mark.parametrize("family,dropout", [("gpt2", False), ("bert", True)])
def test_trainer_run_folder_and_exact_resume(tmp_path, family, dropout):
    """The trainer writes best/ and last/ for a classifier and resumes bit-exactly (with
    dropout: the random generators are restored too)."""
    items_of = lambda m: (m.prepare(sentiment(32), require_labels=True),  # noqa: E731
                          m.prepare(sentiment(16, seed=10), require_labels=True))
    cfg = TrainConfig(steps=8, batch_size=8, lr=1e-2, finetune_lm=True, lm_lr=1e-3, eval_every=2, lm_dropout=dropout)
    make = lambda: _model(family, dropout=0.1 if dropout else 0.0)  # noqa: E731
    full = make()
    train(full, *items_of(full), cfg, output_dir=tmp_path / "full", progress=False)
    half = make()
    train(half, *items_of(half), cfg, output_dir=tmp_path / "half", stop_at_step=4, progress=False)
    resumed = make()
    result = train(resumed, *items_of(resumed), cfg, output_dir=tmp_path / "half", resume=True, progress=False)
    assert result.steps == 8
    for name in ("full", "half"):
        assert "classifier" in json.loads((tmp_path / name / "best" / "ptune_config.json").read_text())
        assert (tmp_path / name / "last" / "trainer_state.json").is_file()
    a = load_checkpoint(tmp_path / "full" / "last")
    b = load_checkpoint(tmp_path / "half" / "last")
    assert isinstance(a, ClassifierModel) and a.state_dict().keys() == b.state_dict().keys()
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
    for k, x in resumed.state_dict().items():  # the model in memory ends with the same (best) weights
        assert torch.equal(x, full.state_dict()[k]), k
