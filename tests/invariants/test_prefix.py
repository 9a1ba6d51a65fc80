"""The cached fast paths of causal LMs: the rows' shared start (pseudo tokens, anchors, BOS)
runs once per view, the text before the first pseudo token runs without autograd, and both
serve as a key/value cache for the rest; scores and gradients must be the ones of the plain
full forward."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from conftest import pair
from ptune import EncoderConfig, PromptConfig, PTunedModel
from ptune.config import SpeedConfig

TEXTS = ["the movie was great and i loved it , really .", "boring plot and awful dialogue , bad film , yes .",
         "Paris is the capital of France and Rome is the capital of Italy ."]


def _cached(model, on: bool) -> None:
    model.speed = dataclasses.replace(model.speed, prefix_cache=on)


def _run(model, examples, prefix):
    _cached(model, prefix)
    model.train()
    for p in model.encoder.parameters():
        p.grad = None
    calls = []
    hook = model.lm.register_forward_pre_hook(lambda m, a, kw: calls.append(
        (*kw["inputs_embeds"].shape[:2], torch.is_grad_enabled())),
                                              with_kwargs=True)
    try:
        out = model(model.collate(model.prepare(examples)))
        out.loss.backward()
    finally:
        hook.remove()
    return out.scores.detach(), [p.grad.clone() for p in model.encoder.parameters()], calls


TEMPLATES = {
    "text-first": "{text} [P*2] Answer: [P] [MASK]",  # frozen text prefix, no autograd
    "pseudo-first": "[P*2] Question: {text} [P] [MASK]",  # shared prefix with pseudo tokens, autograd
    "anchor-first": "Question: {text} [P*2] [MASK]",  # shared constant text, then the frozen text prefix
}


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "gpt_neox"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("words", ["single", "multi"])
@pytest.mark.parametrize("layout", list(TEMPLATES))
def test_prefix_path_equals_full_forward(family, side, words, layout):
    lm, tok = pair(family, seed=0)
    verbalizer = {"pos": "yes", "neg": "no"} if words == "single" else {"pos": ["great movie", "yes"], "neg": "awful film"}
    cfg = PromptConfig(template=TEMPLATES[layout], verbalizer=verbalizer,
                       encoder=EncoderConfig(type="lstm"), padding_side=side, normalize="vocab")
    model = PTunedModel(lm, tok, cfg, seed=0)
    examples = [{"text": t, "label": lab} for t, lab in zip(TEXTS, ["pos", "neg", "pos"])]
    fast, fast_grads, fast_calls = _run(model, examples, True)
    full, full_grads, full_calls = _run(model, examples, False)
    assert len(fast_calls) > len(full_calls), "a prefix pass must have run"
    assert sum(r * t for r, t, g in fast_calls if g) < sum(r * t for r, t, _ in full_calls), \
        "fewer tokens run with autograd"
    if layout == "pseudo-first":  # one row for the shared start; it carries gradient to the prompt
        assert fast_calls[0][0] == 1 and fast_calls[0][1] >= 2 and fast_calls[0][2]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shared_prefix_with_a_tuned_lm_gives_its_weight_gradients(family):
    """A jointly tuned LM without dropout may share the prefix too: the LM's weight
    gradients sum over rows exactly as in the full forward."""
    lm, tok = pair(family, seed=0)
    cfg = PromptConfig(template="[P*2] Question: {text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    model.set_lm_trainable(True, dropout=False)
    examples = [{"text": t, "label": lab} for t, lab in zip(TEXTS, ["pos", "neg", "pos"])]
    grads = {}
    for cached in (True, False):
        model.zero_grad(set_to_none=True)
        _, _, calls = _run(model, examples, cached)
        assert len(calls) == (2 if cached else 1)
        grads[cached] = {n: p.grad.clone() for n, p in model.lm.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 5
    for n in grads[True]:
        torch.testing.assert_close(grads[True][n], grads[False][n], atol=1e-5, rtol=1e-4, msg=n)
    model.set_lm_trainable(True, dropout=True)  # dropout draws per row: no sharing
    _, _, calls = _run(model, examples, True)
    assert len(calls) == 1


def test_prefix_path_off_where_it_does_not_apply():
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="{text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    examples = [{"text": t, "label": "pos"} for t in TEXTS]
    model.set_lm_trainable(True)  # a tuned LM needs gradients everywhere
    _, _, calls = _run(model, examples, True)
    assert len(calls) == 1
    cfg = PromptConfig(template="[P*2] {text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    model.speed = SpeedConfig(shared_prefix_min_tokens=100)  # as on an accelerator: 2 saved tokens do not pay for a pass
    _, _, calls = _run(model, examples, True)
    assert len(calls) == 1


def test_a_failure_in_the_cached_path_is_an_error_that_names_the_switch(monkeypatch):
    """A shortcut that fails raises (with a hint), never degrades silently; the switch then
    gives the full forward."""
    from ptune import cache

    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="{text} [P*2] Answer: [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    examples = [{"text": t, "label": "pos"} for t in TEXTS]
    full, full_grads, _ = _run(model, examples, False)

    def broken(*a, **kw):
        raise NotImplementedError("no cache here")

    monkeypatch.setattr(cache, "answer_hidden_cached", broken)
    with pytest.raises(NotImplementedError) as info:
        _run(model, examples, True)
    if sys.version_info >= (3, 11):  # exceptions carry notes
        assert "model.speed.prefix_cache = False" in " ".join(info.value.__notes__)
    assert model.speed.prefix_cache, "the switch stays where the user put it"
    scores, grads, _ = _run(model, examples, False)
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
            _cached(model, True)
            fast = model(model.collate(items)).scores
            shared = list(shapes)
            _cached(model, False)
            full = model(model.collate(items)).scores
    finally:
        hook.remove()
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    views = model.collate(items).views
    multi = [v for v in views if v.row_example.numel() > len(set(v.row_example.tolist()))]
    assert multi, "the test needs rows that repeat an example"
    # each repeating view: a prefix pass over its distinct examples, then every row's remainder
    for v in multi:
        n_ex = len(set(v.row_example.tolist()))
        assert any(r == n_ex and t < v.input_ids.shape[1] for r, t in shared)
    # and every view of several rows first runs their common start ([P], a BOS) on one row
    starts = [v for v in views if v.input_ids.shape[0] > 1 and v.common_prefix > 0]
    # (once: later views with the same start reuse its keys and values at evaluation)
    assert starts and sum(r == 1 for r, _ in shared) >= 1
    assert len(views) + len(multi) + 1 <= len(shared) <= len(views) + len(multi) + len(starts)


def test_evaluation_reuses_the_shared_prefix_until_the_prompt_or_lm_changes():
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="[P*3] Question: {text} [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0).eval()
    batch = model.collate(model.prepare([{"text": t, "label": "pos"} for t in TEXTS]))
    calls = []
    hook = model.lm.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["inputs_embeds"].shape[0]),
                                              with_kwargs=True)

    def scores(cached=True):
        _cached(model, cached)
        with torch.no_grad():
            return model(batch).scores

    try:
        first = scores()
        assert calls[0] == 1 and 1 not in calls[1:]  # the shared start on one row, then the rows
        calls.clear()
        again = scores()
        assert calls and 1 not in calls, "the second batch reuses the shared prefix"
        torch.testing.assert_close(again, first)
        torch.testing.assert_close(first, scores(cached=False), atol=1e-5, rtol=1e-5)
        with torch.no_grad():  # a new prompt: recomputed
            for p in model.encoder.parameters():
                p.add_(0.1)
        calls.clear()
        moved = scores()
        assert calls[0] == 1
        torch.testing.assert_close(moved, scores(cached=False), atol=1e-5, rtol=1e-5)
        with torch.no_grad():  # new LM weights: recomputed
            model.lm.transformer.h[0].mlp.c_fc.weight.mul_(1.5)
        calls.clear()
        changed = scores()
        assert calls[0] == 1
        torch.testing.assert_close(changed, scores(cached=False), atol=1e-5, rtol=1e-5)
    finally:
        hook.remove()


def test_cached_paths_step_aside_for_activation_checkpointing():
    """transformers ignores the cache of an LM in train mode with activation checkpointing:
    a frozen LM with dropout kept on then runs the plain full forward."""
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="{text} [P*2] Answer: [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    model.set_lm_trainable(False, dropout=True)
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    examples = [{"text": t, "label": "pos"} for t in TEXTS]
    _, _, calls = _run(model, examples, True)
    assert len(calls) == 1 and model.speed.prefix_cache


def test_shared_prefix_memo_tells_autocast_and_replaced_weights_apart():
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="[P*3] Question: {text} [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0).eval()
    batch = model.collate(model.prepare([{"text": t, "label": "pos"} for t in TEXTS]))
    with torch.no_grad():
        model(batch)
        key = model._memo.key
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(batch)
        assert model._memo.key != key, "bf16 autocast needs its own keys and values"
        model(batch)
        key = model._memo.key
        fresh, _ = pair("gpt2", seed=1)  # other weights, assigned as new tensors (versions start at 0)
        model.lm.load_state_dict(fresh.state_dict(), assign=True)
        model(batch)
        assert model._memo.key != key
        _cached(model, False)
        full = model(batch).scores
        _cached(model, True)
        torch.testing.assert_close(model(batch).scores, full, atol=1e-5, rtol=1e-5)
