"""Invariants of the P-tuned model against the plain Hugging Face model."""

from __future__ import annotations

import pytest
import torch

from conftest import MASKED, pair
from ptune import EncoderConfig, PromptConfig, PTunedModel
from ptune.config import SpeedConfig

TEXTS = ["the movie was great .", "boring", "a wonderful story with brilliant acting and good music ."]
TEMPLATE = "[P*2] {text} [P] Answer: [MASK] ."


def _real_ids(tok, n):
    """n ordinary (non-special) token ids."""
    special = set(tok.all_special_ids)
    return [i for i in range(len(tok)) if i not in special][5 : 5 + n]


def _reference(model: PTunedModel, lm, ex: dict, real: list[int]) -> torch.Tensor:
    """Label log-probs from the plain LM on the text with real tokens at pseudo positions."""
    fields = model.compiled.tokenize_fields([ex])[0]
    per_label = [[] for _ in model.answers.labels]
    for cand, label in zip(model.answers.candidates, model.answers.cand_label_list):
        length = len(cand)
        if model.kind == "masked":
            enc = model.compiled.encode(fields, answer_len=length)
            ids = [real[p] if p >= 0 else t for t, p in zip(enc.input_ids, enc.pseudo_index)]
            logp = lm(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            s = sum(logp[pos, c] for pos, c in zip(enc.answer_positions, cand))
        else:
            enc = model.compiled.encode(fields, answer_len=1)
            ids = [real[p] if p >= 0 else t for t, p in zip(enc.input_ids, enc.pseudo_index)]
            seq = ids + list(cand)
            logp = lm(input_ids=torch.tensor([seq])).logits[0].log_softmax(-1)
            s = sum(logp[len(ids) - 1 + i, c] for i, c in enumerate(cand))
        per_label[label].append(s)
    return torch.stack([torch.logsumexp(torch.stack(v), 0) for v in per_label])


def _model(family, *, side="right", verbalizer=None, encoder="none", normalize="vocab", seed=0, **kw):
    lm, tok = pair(family, seed=seed)
    cfg = PromptConfig(
        template=kw.pop("template", TEMPLATE),
        verbalizer=verbalizer or {"pos": "yes", "neg": "no"},
        encoder=EncoderConfig(type=encoder),
        normalize=normalize,
        padding_side=side,
        **kw,
    )
    model = PTunedModel(lm, tok, cfg).eval()
    return model, lm, tok


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("words", ["single", "multi"])
def test_embedding_equivalence(family, side, batch_size, words):
    verbalizer = {"pos": "yes", "neg": "no"} if words == "single" else {
        "pos": ["great movie", "yes"], "neg": "terrible idea"}
    model, lm, tok = _model(family, side=side, verbalizer=verbalizer)
    real = _real_ids(tok, model.compiled.n_pseudo)
    with torch.no_grad():
        model.encoder.embedding.weight.copy_(lm.get_input_embeddings().weight[real])
    examples = [{"text": t} for t in TEXTS[:batch_size]]
    with torch.no_grad():
        scores = model(model.collate(model.prepare(examples))).scores
        for i, ex in enumerate(examples):
            ref = _reference(model, lm, ex, real)
            torch.testing.assert_close(scores[i], ref, atol=1e-5, rtol=1e-5)
    if words == "multi":
        assert any(len(c) > 1 for c in model.answers.candidates), "the test must cover multi-token words"
    if side == "left" and batch_size > 1:
        assert (model.collate(model.prepare(examples)).views[0].attention_mask[:, 0] == 0).any()


@pytest.mark.parametrize("family", ["opt", "gpt_neox", "deberta-v2"])
def test_embedding_equivalence_other_architectures(family):
    model, lm, tok = _model(family, side="left")
    real = _real_ids(tok, model.compiled.n_pseudo)
    with torch.no_grad():
        model.encoder.embedding.weight.copy_(lm.get_input_embeddings().weight[real])
        examples = [{"text": t} for t in TEXTS]
        scores = model(model.collate(model.prepare(examples))).scores
        for i, ex in enumerate(examples):
            torch.testing.assert_close(scores[i], _reference(model, lm, ex, real), atol=1e-5, rtol=1e-5)


def test_segments_reach_the_model():
    """With [SEP] the second segment gets token type 1, as the tokenizer's pair encoding."""
    model, lm, tok = _model("bert", template="{text} [SEP] {text} [P] [MASK]")
    enc = model.compiled.encode(model.compiled.tokenize_fields([{"text": "great"}])[0])
    pair_enc = tok("great", "great")
    n = len(pair_enc["input_ids"]) - 1  # up to the pair's final [SEP]
    assert enc.input_ids[:n] == pair_enc["input_ids"][:n]
    assert enc.token_type_ids[:n] == pair_enc["token_type_ids"][:n]
    assert enc.input_ids[-1] == tok.sep_token_id
    assert set(enc.token_type_ids[n:]) == {1}


@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_padding_invariance(family, encoder):
    """An example's scores do not depend on the other examples of its batch."""
    examples = [{"text": t} for t in TEXTS]
    alone = {}
    for side in ("right", "left"):
        model, _, _ = _model(family, side=side, encoder=encoder,
                             verbalizer={"pos": ["great movie", "yes"], "neg": "no"}, normalize="labels")
        with torch.no_grad():
            items = model.prepare(examples)
            together = model(model.collate(items)).scores
            for i in range(len(items)):
                single = model(model.collate([items[i]])).scores[0]
                torch.testing.assert_close(together[i], single, atol=1e-5, rtol=1e-5)
                alone.setdefault(i, single)
                torch.testing.assert_close(alone[i], single, atol=1e-5, rtol=1e-5)  # left == right


def test_fast_path_matches_full_vocabulary_path(family, monkeypatch):
    """Candidate-restricted logits give the same label probabilities and gradients."""
    model, _, _ = _model(family, encoder="lstm", normalize="labels", verbalizer={"pos": "the", "neg": "was"})
    model.train()
    batch = model.collate(model.prepare([{"text": t, "label": l} for t, l in zip(TEXTS, ["pos", "neg", "pos"])]))
    from ptune import scoring

    assert scoring._restricted(model, batch.views[0])
    out_fast = model(batch)
    out_fast.loss.backward()
    g_fast = [p.grad.clone() for p in model.prompt_parameters()]
    model.zero_grad()
    monkeypatch.setattr(scoring, "_restricted", lambda model, view: False)
    out_slow = model(batch)
    out_slow.loss.backward()
    torch.testing.assert_close(out_fast.scores.softmax(-1), out_slow.scores.softmax(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out_fast.loss, out_slow.loss, atol=1e-6, rtol=1e-5)
    for a, p in zip(g_fast, model.prompt_parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-4)


def test_fast_path_matches_the_plain_path(family):
    """Head at answer positions over candidates + cached encoder == full logits everywhere."""
    model, _, _ = _model(family, encoder="lstm", normalize="labels", verbalizer={"pos": ["the", "great movie"], "neg": "was"})
    batch = model.collate(model.prepare([{"text": t, "label": l} for t, l in zip(TEXTS, ["pos", "neg", "pos"])]))
    model.eval()
    with torch.no_grad():
        fast = model(batch).scores
        cached = model(batch).scores
    model.train()
    out = model(batch)
    out.loss.backward()
    grads = [p.grad.clone() for p in model.prompt_parameters()]
    model.zero_grad()
    model.runner.capture = False  # the LM computes (batch, seq, vocab) logits as usual
    model.eval()
    with torch.no_grad():
        plain = model(batch).scores
    model.train()
    out_plain = model(batch)
    out_plain.loss.backward()
    torch.testing.assert_close(fast, cached, atol=0, rtol=0)
    torch.testing.assert_close(fast.softmax(-1), plain.softmax(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.loss, out_plain.loss, atol=1e-6, rtol=1e-5)
    for g, p in zip(grads, model.prompt_parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-4)


def test_length_buckets_do_not_change_scores():
    model, _, _ = _model("gpt2", encoder="lstm", side="left")
    items = model.prepare([{"text": t} for t in TEXTS])
    with torch.no_grad():
        plain = model(model.collate(items)).scores
        model.speed = SpeedConfig(pad_to_multiple_of=8)
        batch = model.collate(items)
        assert batch.views[0].input_ids.shape[1] % 8 == 0
        torch.testing.assert_close(model(batch).scores, plain, atol=1e-5, rtol=1e-5)


def test_head_runs_only_at_answer_positions(family):
    """The LM returns the head's input, never (batch, seq, vocab) logits."""
    model, lm, _ = _model(family, encoder="lstm", normalize="labels")
    shapes = []
    handle = lm.register_forward_hook(lambda mod, args, out: shapes.append(tuple(out.logits.shape)))
    try:
        with torch.no_grad():
            model(model.collate(model.prepare([{"text": t} for t in TEXTS])))
    finally:
        handle.remove()
    head = lm.get_output_embeddings()
    assert shapes and all(s[-1] == head.in_features != len(model.tokenizer) for s in shapes)


def test_pseudo_tokens_enter_in_order_across_blocks():
    """All pseudo tokens form one sequence numbered left to right wherever they stand."""
    model, _, _ = _model("bert", template="[P*2] {text} [P] [MASK] [P*3]")
    enc = model.compiled.encode(model.compiled.tokenize_fields([{"text": "great"}])[0])
    assert [p for p in enc.pseudo_index if p >= 0] == list(range(6))
    assert model.encoder.n_pseudo == 6


def test_kind_matches_family(family):
    model, _, _ = _model(family)
    assert model.kind == ("masked" if family in MASKED else "causal")
