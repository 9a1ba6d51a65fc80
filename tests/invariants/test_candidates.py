"""Per-example answer candidates (COPA choices, ReCoRD entities) and greedy generation,
checked against slow reference loops on the plain LM."""

from __future__ import annotations

import pytest
import torch

from conftest import pair
from ptune import EncoderConfig, PromptConfig, PTunedModel
from ptune.config import SpeedConfig
from ptune.checkpoint import load_checkpoint, save_checkpoint
from ptune.errors import DataError

TEMPLATE = "{text} [P*2] Answer: [MASK] ."
EXAMPLES = [
    {"text": "the movie was great .", "choices": ["great", "the film was terrible", "music"], "label": 0},
    {"text": "boring plot and awful dialogue , bad film .", "choices": ["awful dialogue", "yes"], "label": 1},
    {"text": "Paris is the capital of France", "choices": ["the capital of Italy and France"], "label": 0},
]


def _model(family, side="right", normalize="vocab", length_norm="sum", seed=0):
    lm, tok = pair(family, seed=seed)
    cfg = PromptConfig(template=TEMPLATE, candidates_field="choices", encoder=EncoderConfig(type="mlp"),
                       normalize=normalize, length_norm=length_norm, padding_side=side)
    return PTunedModel(lm, tok, cfg, seed=seed).eval(), lm, tok


def _plain_ids(model, enc, prompt_ids):
    return [prompt_ids[p] if p >= 0 else t for t, p in zip(enc.input_ids, enc.pseudo_index)]


def _reference_scores(model, lm, item, real):
    """Each candidate's log-probability, one plain forward per candidate."""
    out = []
    for cand in item.candidates:
        enc = model.compiled.encode(item.fields, answer_len=len(cand), answer_ids=cand)
        ids = _plain_ids(model, enc, real)
        logp = lm(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        out.append(sum(logp[pos, c] for pos, c in zip(enc.answer_positions, cand)))
    return torch.stack(out)


def _set_real_prompt(model, lm, tok):
    special = set(tok.all_special_ids)
    real = [i for i in range(len(tok)) if i not in special][7 : 7 + model.compiled.n_pseudo]
    model.encoder = None  # pseudo embeddings = real word embeddings: the plain LM must agree
    emb = lm.get_input_embeddings().weight[real].detach().clone()
    model.pseudo_embeddings = lambda: emb  # type: ignore[method-assign]
    return real


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "roberta"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_candidate_scores_match_reference(family, side):
    model, lm, tok = _model(family, side)
    real = _set_real_prompt(model, lm, tok)
    items = model.prepare(EXAMPLES)
    assert any(len(c) > 1 for it in items for c in it.candidates), "must cover multi-token candidates"
    assert len({len(c) for c in items[0].candidates}) > 1, "must cover mixed lengths within an example"
    with torch.no_grad():
        scores = model(model.collate(items)).scores  # batched, padded
        assert scores.shape == (3, 3)
        for i, it in enumerate(items):
            ref = _reference_scores(model, lm, it, real)
            n = len(it.candidates)
            torch.testing.assert_close(scores[i, :n], ref, atol=1e-4, rtol=1e-4)
            assert torch.isinf(scores[i, n:]).all() and (scores[i, n:] < 0).all()
            assert scores[i, :n].argsort().tolist() == ref.argsort().tolist()
            alone = model(model.collate([it])).scores[0]
            torch.testing.assert_close(alone, scores[i, :n], atol=1e-4, rtol=1e-4)


def test_mean_length_norm_and_loss():
    model, lm, tok = _model("gpt2", length_norm="mean")
    items = model.prepare(EXAMPLES)
    summed, _, _ = _model("gpt2", length_norm="sum")
    with torch.no_grad():
        mean = model(model.collate(items)).scores
        total = summed(summed.collate(summed.prepare(EXAMPLES))).scores
    for i, it in enumerate(items):
        lens = torch.tensor([len(c) for c in it.candidates], dtype=torch.float)
        torch.testing.assert_close(mean[i, : len(lens)], total[i, : len(lens)] / lens, atol=1e-5, rtol=1e-5)
    # normalize="labels": cross-entropy over each example's own candidates
    ce, _, _ = _model("gpt2", normalize="labels")
    out = ce(ce.collate(ce.prepare(EXAMPLES)))
    expect = torch.nn.functional.cross_entropy(out.scores, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(out.loss, expect)


def test_training_moves_the_right_candidate_up():
    from ptune import TrainConfig, train

    model, _, _ = _model("gpt2", normalize="labels")
    data = [{"text": f"the movie was {w} .", "choices": ["yes", "no"] if i % 2 else ["no", "yes"],
             "label": (0 if i % 2 else 1) if w in ("great", "wonderful") else (1 if i % 2 else 0)}
            for i, w in enumerate(["great", "terrible", "wonderful", "awful"] * 4)]
    items = model.prepare(data)
    before = model(model.collate(items)).loss.item()
    train(model, items, None, TrainConfig(steps=30, batch_size=8, lr=1e-2, finetune_lm=True, lm_lr=1e-3),
          progress=False)
    with torch.no_grad():
        after = model(model.collate(items))
    assert after.loss.item() < before * 0.5
    assert (after.scores.argmax(-1) == torch.tensor([d["label"] for d in data])).float().mean() == 1.0


def test_predict_returns_candidate_text():
    model, _, _ = _model("bert")
    preds = model.predict(EXAMPLES)
    assert [p["label"] in ex["choices"] for p, ex in zip(preds, EXAMPLES)] == [True] * 3
    assert preds[0]["label"] == EXAMPLES[0]["choices"][preds[0]["index"]]
    assert len(preds[1]["scores"]) == 2 and abs(sum(preds[1]["scores"]) - 1) < 1e-5


@pytest.mark.parametrize("bad,field,words", [
    ({"text": "x", "label": 0}, "choices", "missing"),
    ({"text": "x", "choices": [], "label": 0}, "choices", "non-empty list"),
    ({"text": "x", "choices": "ab", "label": 0}, "choices", "non-empty list"),
    ({"text": "x", "choices": ["a", "b"], "label": 2}, "label", "index"),
    ({"text": "x", "choices": ["a", "b"], "label": True}, "label", "index"),
    ({"text": "x", "choices": ["a", " "], "label": 0}, "choices", "non-empty"),
])
def test_bad_candidates_name_the_field(bad, field, words):
    model, _, _ = _model("gpt2")
    with pytest.raises(DataError) as e:
        model.prepare([EXAMPLES[0], bad], sources=["a.jsonl:1", "a.jsonl:2"])
    assert "a.jsonl:2" in str(e.value) and e.value.field == field and words in str(e.value)


def test_checkpoint_round_trip(tmp_path):
    model, lm, tok = _model("roberta")
    with torch.no_grad():
        before = model(model.collate(model.prepare(EXAMPLES))).scores
    save_checkpoint(model, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck", base=(lm, tok)).eval()
    assert back.config.candidates_field == "choices"
    with torch.no_grad():
        after = back(back.collate(back.prepare(EXAMPLES))).scores
    torch.testing.assert_close(before, after)


def _reference_generate(model, lm, tok, item, k, real):
    banned = set(tok.all_special_ids)
    enc = model.compiled.encode(item.fields, answer_len=k, answer_ids=[model.pad_id] * k)
    ids = _plain_ids(model, enc, real)
    if model.kind == "causal":
        ids = ids[: enc.answer_positions[0] + 1]
        out = []
        for _ in range(k):
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
            logits[list(banned)] = float("-inf")
            out.append(int(logits.argmax()))
            ids.append(out[-1])
        return out
    out = [None] * k
    for _ in range(k):
        logp = lm(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        logp[:, list(banned)] = float("-inf")
        best = None
        for j, pos in enumerate(enc.answer_positions):
            if out[j] is None:
                v, t = logp[pos].max(-1)
                if best is None or v > best[0]:
                    best = (v, j, int(t))
        _, j, t = best
        out[j] = t
        ids[enc.answer_positions[j]] = t
    return out


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_generate_matches_greedy_reference(family):
    model, lm, tok = _model(family, side="left")
    real = _set_real_prompt(model, lm, tok)
    items = model.prepare(EXAMPLES)
    lengths = [3, 1, 2]
    with torch.no_grad():
        got = model.generate(items, lengths, batch_size=2)
        for it, k, g in zip(items, lengths, got):
            ref = _reference_generate(model, lm, tok, it, k, real)
            assert g["ids"] == ref
            assert g["text"] == tok.decode(ref, skip_special_tokens=True).strip()
            assert g["logprob"] <= 0


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_generative_training_then_generation_writes_the_answer(family):
    """WSC's loop: train on the referent's log-probability, then write it back."""
    from ptune import TrainConfig, train

    lm, tok = pair(family, seed=0)
    cfg = PromptConfig(template="{text} [P*2] it means [MASK] .", candidates_field="choices",
                       label_field="target", normalize="vocab", encoder=EncoderConfig(type="mlp"))
    model = PTunedModel(lm, tok, cfg, seed=0)
    pairs = [("the movie was great", "the film"), ("Paris is the capital", "France"),
             ("the cat sat on the mat", "the dog"), ("boring plot", "awful dialogue")]
    data = [{"text": t, "choices": [a], "target": 0} for t, a in pairs] * 2
    items = model.prepare(data)
    lengths = [len(it.candidates[0]) for it in items]
    before = [g["text"] for g in model.generate(items[:4], lengths[:4])]
    train(model, items, None, TrainConfig(steps=60, batch_size=8, lr=1e-2, finetune_lm=True, lm_lr=1e-2),
          progress=False)
    gen = model.generate(items[:4], lengths[:4])
    want = [tok.decode(list(it.candidates[0]), skip_special_tokens=True).strip() for it in items[:4]]
    assert [g["text"] for g in gen] == want and before != want
    if model.kind == "causal":  # greedy decoding of the gold answer scores it as the candidate scorer does
        with torch.no_grad():
            scores = model(model.collate(items[:4])).scores[:, 0]
        torch.testing.assert_close(torch.tensor([g["logprob"] for g in gen]), scores, atol=1e-4, rtol=1e-4)


def _reference_iterative(model, lm, item, real):
    """PET's iterative scoring, one candidate at a time on the plain LM."""
    out = []
    for cand in item.candidates:
        enc = model.compiled.encode(item.fields, answer_len=len(cand))
        ids = _plain_ids(model, enc, real)
        open_, total = list(range(len(cand))), 0.0
        while open_:
            logp = lm(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            j = max(open_, key=lambda j: float(logp[enc.answer_positions[j], cand[j]]))
            total += float(logp[enc.answer_positions[j], cand[j]])
            ids[enc.answer_positions[j]] = cand[j]
            open_.remove(j)
        out.append(total)
    return torch.tensor(out)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_iterative_scoring_matches_reference_and_training_stays_parallel(family):
    lm, tok = pair(family, seed=0, init_range=0.2)  # a peaked random LM: filled tokens matter
    cfg = PromptConfig(template=TEMPLATE, candidates_field="choices", encoder=EncoderConfig(type="mlp"),
                       normalize="vocab", multi_token="iterative", padding_side="left")
    model = PTunedModel(lm, tok, cfg, seed=0).eval()
    real = _set_real_prompt(model, lm, tok)
    items = model.prepare(EXAMPLES)
    parallel_model = PTunedModel(lm, tok, PromptConfig(**{**cfg.to_dict(), "multi_token": "parallel"}), seed=0).eval()
    _set_real_prompt(parallel_model, lm, tok)
    with torch.no_grad():
        scores = model(model.collate(items)).scores
        parallel = parallel_model(parallel_model.collate(parallel_model.prepare(EXAMPLES))).scores
    for i, it in enumerate(items):
        n = len(it.candidates)
        torch.testing.assert_close(scores[i, :n], _reference_iterative(model, lm, it, real), atol=1e-4, rtol=1e-4)
        single = [j for j, c in enumerate(it.candidates) if len(c) == 1]
        torch.testing.assert_close(scores[i, single], parallel[i, single], atol=1e-5, rtol=1e-5)
    assert (scores[0, :2] - parallel[0, :2]).abs().max() > 1e-2  # multi-token words are scored differently
    with torch.enable_grad():  # training reads the masks in parallel (one pass per length)
        torch.testing.assert_close(model(model.collate(items)).scores.detach(), parallel, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_cached_decoding_equals_recomputing(family, side):
    model, lm, tok = _model(family, side=side, seed=1)
    items = model.prepare(EXAMPLES)
    lengths = [4, 2, 3]
    widths = []
    hook = lm.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        cached = model.generate(items, lengths)
        model.speed = SpeedConfig(prefix_cache=False)
        plain = model.generate(items, lengths)
    finally:
        hook.remove()
    assert widths.count(1) == sum(k - 1 for k in lengths)  # one token per pass after the prompt
    assert [c["ids"] for c in cached] == [p["ids"] for p in plain]
    for c, p in zip(cached, plain):
        assert abs(c["logprob"] - p["logprob"]) < 1e-4
