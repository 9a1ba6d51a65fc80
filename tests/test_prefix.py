"""The frozen-prefix fast path of causal LMs: the text before the first pseudo token runs
once without autograd and serves as a key/value cache; scores and gradients must be the
ones of the plain full forward."""

from __future__ import annotations

import pytest
import torch

from conftest import pair
from ptune import EncoderConfig, PromptConfig, PTunedModel

TEXTS = ["the movie was great and i loved it , really .", "boring plot and awful dialogue , bad film , yes .",
         "Paris is the capital of France and Rome is the capital of Italy ."]


def _run(model, examples, prefix):
    model.prefix_cache = prefix
    model.train()
    for p in model.encoder.parameters():
        p.grad = None
    calls = []
    hook = model.lm.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["inputs_embeds"].shape[1]),
                                              with_kwargs=True)
    try:
        out = model(model.collate(model.prepare(examples)))
        out.loss.backward()
    finally:
        hook.remove()
    return out.scores.detach(), [p.grad.clone() for p in model.encoder.parameters()], calls


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "gpt_neox"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("words", ["single", "multi"])
def test_prefix_path_equals_full_forward(family, side, words):
    lm, tok = pair(family, seed=0)
    verbalizer = {"pos": "yes", "neg": "no"} if words == "single" else {"pos": ["great movie", "yes"], "neg": "awful film"}
    cfg = PromptConfig(template="{text} [P*2] Answer: [P] [MASK]", verbalizer=verbalizer,
                       encoder=EncoderConfig(type="lstm"), padding_side=side, normalize="vocab")
    model = PTunedModel(lm, tok, cfg, seed=0)
    examples = [{"text": t, "label": lab} for t, lab in zip(TEXTS, ["pos", "neg", "pos"])]
    fast, fast_grads, fast_calls = _run(model, examples, True)
    full, full_grads, full_calls = _run(model, examples, False)
    assert len(fast_calls) == 2 * len(full_calls), "the prefix path must have run"
    assert all(c < f for c, f in zip(fast_calls[1::2], full_calls))
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_prefix_path_off_where_it_does_not_apply():
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="[P*2] {text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    examples = [{"text": t, "label": "pos"} for t in TEXTS]
    _, _, calls = _run(model, examples, True)
    assert len(calls) == 1  # pseudo tokens first: nothing to skip
    cfg = PromptConfig(template="{text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    model.set_lm_trainable(True)  # a tuned LM needs gradients everywhere
    _, _, calls = _run(model, examples, True)
    assert len(calls) == 1


def test_a_model_that_rejects_the_cache_falls_back_to_the_full_forward(monkeypatch, caplog):
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="{text} [P*2] Answer: [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    examples = [{"text": t, "label": "pos"} for t in TEXTS]
    full, full_grads, _ = _run(model, examples, False)

    def broken(*a, **kw):
        raise NotImplementedError("no cache here")

    monkeypatch.setattr(model, "_answer_hidden_after_prefix", broken)
    scores, grads, calls = _run(model, examples, True)
    assert model.prefix_cache is False and "no frozen-prefix cache" in caplog.text
    torch.testing.assert_close(scores, full)
    for a, b in zip(grads, full_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_of_one_example_share_its_prefix_at_evaluation(family, side):
    """Per-candidate rows (causal multi-token answers) run the text before the answer once per example."""
    lm, tok = pair(family, seed=0)
    cfg = PromptConfig(template="[P] {text} [P*2] Answer: [MASK]", candidates_field="choices",
                       encoder=EncoderConfig(type="mlp"), padding_side=side)
    model = PTunedModel(lm, tok, cfg, seed=0).eval()
    examples = [{"text": t, "choices": ["the film was great", "awful dialogue", "Paris and Rome", "yes"][: 2 + i],
                 "label": 0} for i, t in enumerate(TEXTS)]
    items = model.prepare(examples)
    shapes = []
    hook = model.lm.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["inputs_embeds"].shape[:2])),
                                              with_kwargs=True)
    try:
        with torch.no_grad():
            model.prefix_cache = True
            fast = model(model.collate(items)).scores
            shared, kept = list(shapes), model.prefix_cache
            model.prefix_cache = False
            full = model(model.collate(items)).scores
    finally:
        hook.remove()
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    assert kept, "the cached path fell back to the full forward"
    views = model.collate(items).views
    multi = [v for v in views if v.row_example.numel() > len(set(v.row_example.tolist()))]
    assert multi, "the test needs rows that repeat an example"
    # each repeating view: a prefix pass over its distinct examples, then every row's remainder
    for v in multi:
        n_ex = len(set(v.row_example.tolist()))
        assert any(r == n_ex and t < v.input_ids.shape[1] for r, t in shared)
    assert len(shared) == len(views) + len(multi)
