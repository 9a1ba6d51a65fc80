"""ptune.kernels: faster equivalents swapped in only while ptune runs the LM."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import FastGELUActivation, NewGELUActivation

from conftest import pair
from ptune import PromptConfig, PTunedModel
from ptune.config import SpeedConfig
from ptune.kernels import FusedActivations


def test_tanh_gelu_swap_is_scoped_and_numerically_equal():
    lm, _ = pair("gpt2", seed=0)
    gelus = [m for m in lm.modules() if isinstance(m, NewGELUActivation)]
    assert gelus, "the tiny GPT-2 must use the Python tanh-GELU"
    x = torch.randn(4, 64) * 3
    swap = FusedActivations(lm)
    with swap:
        assert all("forward" in vars(m) for m in gelus)
        with swap:  # re-entrant: the inner exit keeps the swap
            pass
        assert all("forward" in vars(m) for m in gelus)
        fused = gelus[0](x)
    assert not any("forward" in vars(m) for m in gelus), "the user's model is restored"
    plain = gelus[0](x)
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(FastGELUActivation()(x), plain, atol=1e-6, rtol=1e-6)
    assert FusedActivations(lm, enabled=False).modules == []


def test_ptuned_forward_uses_the_fused_kernel_and_matches_the_plain_one():
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="[P*2] {text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0).eval()
    batch = model.collate(model.prepare([{"text": "a fine film", "label": "pos"}, {"text": "bad", "label": "neg"}]))
    seen = []
    act = next(m for m in lm.modules() if isinstance(m, NewGELUActivation))
    hook = act.register_forward_hook(lambda m, a, out: seen.append("forward" in vars(m)))
    try:
        with torch.no_grad():
            fast = model(batch).scores
            model.speed = SpeedConfig(lm_shortcuts=False)
            plain = model(batch).scores
    finally:
        hook.remove()
    assert seen and seen[0] is True and seen[-1] is False
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def _scores_and_grads(model, batch, lm_grads=False):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out.loss.backward()
    params = list(model.encoder.parameters()) + (list(model.lm.parameters()) if lm_grads else [])
    return out.scores.detach(), [p.grad.clone() if p.grad is not None else None for p in params]


@pytest.mark.parametrize("family,applies", [("bert", True), ("roberta", True), ("deberta-v2", True),
                                            ("albert", False)])
@pytest.mark.parametrize("side", ["right", "left"])
def test_answer_only_last_layer_matches_the_full_forward(family, applies, side):
    """Masked LMs: the last layer after self-attention runs only at the answer positions;
    scores and gradients (prompt and, for a tuned LM, the LM's weights) are the full forward's.
    ALBERT shares one layer object across depths: the probe must refuse it."""
    lm, tok = pair(family, seed=0)
    cfg = PromptConfig(template="[P*2] {text} [P] [MASK] .", verbalizer={"pos": ["great", "yes"], "neg": "no"},
                       padding_side=side, normalize="vocab")
    model = PTunedModel(lm, tok, cfg, seed=0)
    model.set_lm_trainable(True, dropout=False)
    examples = [{"text": t, "label": lab} for t, lab in [("the movie was great", "pos"), ("boring", "neg"),
                                                          ("Paris is the capital of France", "pos")]]
    batch = model.collate(model.prepare(examples))
    fired = []
    fast = _scores_and_grads(model, batch, lm_grads=True)
    shortcut = model.runner._answer_only
    if shortcut.layer is not None:
        hook = shortcut.layer.attention.output.register_forward_hook(lambda m, a, o: fired.append(o.shape[1]))
    else:
        hook = None
    _scores_and_grads(model, batch)
    if hook is not None:
        hook.remove()
    model.speed = SpeedConfig(lm_shortcuts=False)
    full = _scores_and_grads(model, batch, lm_grads=True)
    assert shortcut._ok is applies
    if applies:  # the attention output was cut to the answer positions (1 or 2 masks per row)
        assert fired and max(fired) <= 2 < batch.views[0].input_ids.shape[1]
    torch.testing.assert_close(fast[0], full[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(fast[1], full[1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shortcuts_step_aside_for_activation_checkpointing():
    """An LM that recomputes its layers in backward runs them again outside ptune's call: the
    answer-only last layer would not match its recomputation, so training then runs without
    the shortcuts (same loss and gradients as speed.lm_shortcuts=False, no checkpoint error)."""
    lm, tok = pair("bert", seed=0)
    cfg = PromptConfig(template="[P*2] {text} [MASK] .", verbalizer={"pos": "yes", "neg": "no"})
    model = PTunedModel(lm, tok, cfg, seed=0)
    model.set_lm_trainable(True, dropout=True)
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    batch = model.collate(model.prepare([{"text": "a good film", "label": "pos"}, {"text": "bad", "label": "neg"}]))
    runs = []
    for shortcuts in (True, False):
        model.speed = SpeedConfig(lm_shortcuts=shortcuts)
        torch.manual_seed(0)
        runs.append(_scores_and_grads(model, batch, lm_grads=True))
    torch.testing.assert_close(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        if a is not None:
            torch.testing.assert_close(a, b)
