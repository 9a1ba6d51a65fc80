"""Open-ended generation against the LM's full forward pass, one token at a time."""

from __future__ import annotations

import pytest
import torch

from conftest import pair
from ptune import ConfigError, DataError, PromptConfig, PTunedModel
from ptune.config import GenerateConfig
from ptune.generate import input_embeds

TEXTS = ["the movie was great .", "cat", "a wonderful story with brilliant acting and good music .", "is it good ?"]
# pseudo tokens before the input, between its parts and right before the generation point
TEMPLATE = "[P*2] {text} [P] Answer:[P][MASK] ignored after the slot"


def _model(family: str) -> PTunedModel:
    lm, tok = pair(family, init_range=0.2, dropout=0.0)
    config = PromptConfig(template=TEMPLATE, verbalizer={"pos": "yes", "neg": "no"}, encoder="lstm")
    return PTunedModel(lm, tok, config, seed=0).eval()


@torch.no_grad()
def _full_forward_greedy(model: PTunedModel, example: dict, n: int) -> list[int]:
    """The reference: each token is the argmax of the full forward over everything so far
    (no cache, no padding, one example)."""
    emb = input_embeds(model, [example])[0].unsqueeze(0)  # (1, T, H)
    eos = model.tokenizer.eos_token_id
    out: list[int] = []
    for _ in range(n):
        logits = model.lm(inputs_embeds=emb, use_cache=False).logits[0, -1]
        tok = int(logits.argmax())
        if tok == eos:
            break
        out.append(tok)
        emb = torch.cat([emb, model.lm.get_input_embeddings()(torch.tensor([[tok]]))], 1)
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_equals_full_forward_decoding(family):
    model = _model(family)
    examples = [{"text": t} for t in TEXTS]
    got = model.generate_text(examples, max_new_tokens=8, batch_size=3)  # left padding, two batches
    for ex, row in zip(examples, got):
        want = _full_forward_greedy(model, ex, 8)
        assert row["ids"] == want, ex
        assert row["finish_reason"] == ("length" if len(want) == 8 else "eos")
        assert row["text"] == model.tokenizer.decode(want, skip_special_tokens=True)
    alone = model.generate_text(examples[1:2], max_new_tokens=8)
    assert alone[0]["ids"] == got[1]["ids"]


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_input_embeds_give_the_label_scores(family):
    """The embedding sequence a serving engine receives: the LM's logits after it (causal) or
    at its mask token (masked) give ptune's label probabilities."""
    lm, tok = pair(family, init_range=0.2, dropout=0.0)
    template = "[P*2] {text} [P] Answer:[MASK] ." if family == "bert" else TEMPLATE
    model = PTunedModel(lm, tok, PromptConfig(template=template, verbalizer={"pos": "yes", "neg": "no"}),
                        seed=0).eval()
    examples = [{"text": t} for t in TEXTS]
    assert all(len(c) == 1 for c in model.answers.candidates)  # single-token words
    words = [c[0] for c in model.answers.candidates]
    items = model.prepare(examples)
    for item, pred, emb in zip(items, model.predict(items), input_embeds(model, items)):
        slot = model.collator.compiled.encode(item.fields, answer_len=1).answer_positions[0]
        assert slot == emb.shape[0] - 1 or family == "bert"  # a causal LM's sequence ends at the answer
        with torch.no_grad():
            logits = model.lm(inputs_embeds=emb.unsqueeze(0)).logits[0, slot]
        probs = logits.log_softmax(-1)[words].softmax(-1)
        assert torch.allclose(probs, torch.tensor([pred["scores"]["pos"], pred["scores"]["neg"]]), atol=1e-6)


def test_sampling_seed_top_p_stop_strings_and_eos():
    model = _model("llama")
    examples = [{"text": t} for t in TEXTS]
    greedy = model.generate_text(examples, max_new_tokens=6)
    # a nucleus smaller than the top token's probability keeps only that token: greedy again
    assert [r["ids"] for r in model.generate_text(examples, do_sample=True, top_p=1e-6, seed=3,
                                                   max_new_tokens=6)] == [r["ids"] for r in greedy]
    a = model.generate_text(examples, do_sample=True, temperature=5.0, seed=1, max_new_tokens=6)
    b = model.generate_text(examples, do_sample=True, temperature=5.0, seed=1, max_new_tokens=6)
    c = model.generate_text(examples, do_sample=True, temperature=5.0, seed=2, max_new_tokens=6)
    assert a == b and a != c
    row = greedy[0]
    assert row["finish_reason"] == "length" and len(row["ids"]) == 6
    stop = model.tokenizer.decode(row["ids"][2:3])
    stopped = model.generate_text(examples[:1], GenerateConfig(max_new_tokens=6, stop=(stop,)))[0]
    assert stopped["finish_reason"] == "stop" and stopped["text"] == row["text"][: row["text"].find(stop)]
    assert stopped["ids"] == row["ids"][: len(stopped["ids"])]
    # the LM's own end-of-sequence token ends a row; the token is not part of the answer
    model.lm.generation_config.eos_token_id = row["ids"][3]
    ended = model.generate_text(examples[:1], max_new_tokens=6)[0]
    assert ended["finish_reason"] == "eos" and ended["ids"] == row["ids"][: row["ids"].index(row["ids"][3])]


def test_refusals():
    lm, tok = pair("bert")
    masked = PTunedModel(lm, tok, PromptConfig(template="[P*2] {text} [MASK]", verbalizer={"a": "yes", "b": "no"}))
    with pytest.raises(ConfigError, match="needs a causal LM"):
        masked.generate_text([{"text": "cat"}])
    model = _model("gpt2")
    with pytest.raises(DataError, match="example 1: .*exceed the LM's 128 positions"):
        model.generate_text([{"text": "cat"}], max_new_tokens=125)
    with pytest.raises(ConfigError, match="temperature: applies to sampling only"):
        model.generate_text([{"text": "cat"}], temperature=0.5)
    with pytest.raises(ConfigError, match="top_p"):
        GenerateConfig(do_sample=True, top_p=0)
