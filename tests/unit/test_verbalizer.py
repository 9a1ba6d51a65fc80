"""Verbalizers: label words, multi-token scoring against a slow reference, errors."""

from __future__ import annotations


import pytest
import torch

from conftest import pair
from ptune import ConfigError, DataError, PromptConfig, PTunedModel, Verbalizer
from ptune.verbalizer import label_logsumexp


def test_label_logsumexp_matches_naive():
    torch.manual_seed(0)
    scores = torch.randn(4, 7)
    owner = torch.tensor([0, 2, 2, 1, 0, 2, 1])
    got = label_logsumexp(scores, owner, 3)
    want = torch.stack([torch.logsumexp(scores[:, owner == k], 1) for k in range(3)], 1)
    torch.testing.assert_close(got, want)
    inf = torch.tensor([[float("-inf"), 0.0]])
    assert label_logsumexp(inf, torch.tensor([0, 1]), 2)[0, 0] == float("-inf")


def test_labels_from_data():
    v = Verbalizer({"True": "Yes", "False": "No", "1": "one"})
    assert v.label_index(True, "x") == 0 and v.label_index(False, "x") == 1 and v.label_index(1, "x") == 2
    with pytest.raises(DataError, match=r"train.jsonl:4: field 'label': 'maybe' is not a label"):
        v.label_index("maybe", "train.jsonl:4")


def test_from_json(tmp_path):
    assert Verbalizer.from_json('{"y": "Yes", "n": ["No", "Nope"]}').words == {"y": ("Yes",), "n": ("No", "Nope")}
    f = tmp_path / "v.json"
    f.write_text('{"y": "Yes"')
    with pytest.raises(ConfigError, match=r"v.json: invalid JSON at line 1"):
        Verbalizer.from_json(str(f))
    with pytest.raises(ConfigError, match="neither inline JSON nor a file"):
        Verbalizer.from_json("nope.json")
    with pytest.raises(ConfigError, match="non-empty words"):
        Verbalizer({"a": ""})


def test_words_with_the_same_tokens_are_refused():
    _, tok = pair("bert")
    with pytest.raises(ConfigError, match="same tokens"):
        Verbalizer({"a": "great", "b": "great"}).compile(tok, True)


def _brute_force_masked(model, lm, ex, cand):
    """Slow reference: one forward per candidate with exactly len(cand) masks."""
    fields = model.compiled.tokenize_fields([ex])[0]
    enc = model.compiled.encode(fields, answer_len=len(cand))
    emb = lm.get_input_embeddings()(torch.tensor([enc.input_ids]))
    prompt = model.pseudo_embeddings()
    for i, p in enumerate(enc.pseudo_index):
        if p >= 0:
            emb[0, i] = prompt[p]
    logp = lm(inputs_embeds=emb).logits[0].log_softmax(-1)
    return sum(float(logp[pos, c]) for pos, c in zip(enc.answer_positions, cand))


def _brute_force_causal(model, lm, ex, cand):
    """Slow reference: greedy token-by-token continuation log-probability."""
    fields = model.compiled.tokenize_fields([ex])[0]
    enc = model.compiled.encode(fields)
    prompt = model.pseudo_embeddings()
    total = 0.0
    ids = list(enc.input_ids)
    for tok_id in cand:
        emb = lm.get_input_embeddings()(torch.tensor([ids]))
        for i, p in enumerate(enc.pseudo_index):
            if p >= 0:
                emb[0, i] = prompt[p]
        total += float(lm(inputs_embeds=emb).logits[0, -1].log_softmax(-1)[tok_id])
        ids.append(tok_id)
    return total


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "roberta"])
@pytest.mark.parametrize("length_norm", ["sum", "mean"])
def test_multi_token_ranking_matches_slow_reference(family, length_norm):
    lm, tok = pair(family, seed=3, init_range=0.3)
    words = {"a": "great movie", "b": "terrible idea", "c": "the", "d": "boring plot and awful"}
    model = PTunedModel(lm, tok, PromptConfig(template="[P*2] {text} [P] [MASK]", verbalizer=words,
                                              normalize="vocab", length_norm=length_norm)).eval()
    ref = _brute_force_masked if model.kind == "masked" else _brute_force_causal
    examples = [{"text": "the movie was great ."}, {"text": "boring"}]
    with torch.no_grad():
        scores = model(model.collate(model.prepare(examples))).scores
        for i, ex in enumerate(examples):
            want = []
            for cand in model.answers.candidates:
                s = ref(model, lm, ex, cand)
                want.append(s / len(cand) if length_norm == "mean" else s)
            torch.testing.assert_close(scores[i], torch.tensor(want), atol=1e-4, rtol=1e-4)
            assert scores[i].argsort().tolist() == torch.tensor(want).argsort().tolist()
    assert len({len(c) for c in model.answers.candidates}) > 1


def test_vocabulary_mode_predicts_any_candidate():
    lm, tok = pair("bert", init_range=0.3)
    vocab = ["the", "was", "great", "movie", "cat", "dog"]
    model = PTunedModel(lm, tok, PromptConfig(template="[P*2] {text} [MASK]",
                                              verbalizer=Verbalizer.from_vocabulary(vocab).to_dict())).eval()
    assert model.answers.single_token and model.answers.one_per_label
    with torch.no_grad():
        batch = model.collate(model.prepare([{"text": "the cat"}]))
        scores = model(batch).scores
        full = model.answer_logits(batch.views[0])[0, 0]
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in vocab]
    torch.testing.assert_close(scores[0], full[ids])
    pred = model.predict([{"text": "the cat"}])[0]["label"]
    assert pred == vocab[int(full[ids].argmax())]


def test_label_of_several_words_sums_probabilities():
    lm, tok = pair("bert", init_range=0.3)
    model = PTunedModel(lm, tok, PromptConfig(template="{text} [MASK]", verbalizer={"a": ["the", "was"], "b": "cat"},
                                              normalize="vocab")).eval()
    with torch.no_grad():
        batch = model.collate(model.prepare([{"text": "the dog"}]))
        logp = model.answer_logits(batch.views[0])[0, 0].log_softmax(-1)
        scores = model(batch).scores[0]
    ids = {w: tok(w, add_special_tokens=False)["input_ids"][0] for w in ("the", "was", "cat")}
    torch.testing.assert_close(scores[0], torch.logsumexp(logp[[ids["the"], ids["was"]]], 0))
    torch.testing.assert_close(scores[1], logp[ids["cat"]])
