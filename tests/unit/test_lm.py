"""ptune.lm: the one masked/causal decision, and loading a base model from a folder."""

from __future__ import annotations

import pytest
import torch
import transformers

from conftest import pair
from ptune.errors import ConfigError
from ptune.lm import CAUSAL, MASKED, LMRunner, detect_kind, kind_of, load_base

KINDS = {"gpt2": "causal", "llama": "causal", "opt": "causal", "gpt_neox": "causal",
         "bert": "masked", "roberta": "masked", "albert": "masked", "deberta-v2": "masked"}


@pytest.mark.parametrize("family", list(KINDS))
def test_one_rule_for_a_model_and_its_config(family):
    lm, _ = pair(family, seed=0)
    assert detect_kind(lm) == KINDS[family]
    config = lm.config.__class__.from_dict(lm.config.to_dict())
    config.architectures = [type(lm).__name__]
    assert detect_kind(config) == KINDS[family]
    config.architectures = None  # no recorded class: the model type decides
    assert detect_kind(config) == KINDS[family]


def test_a_bert_config_with_a_causal_head_class_is_causal():
    config = transformers.BertConfig(architectures=["BertLMHeadModel"])
    assert detect_kind(config) == "causal"
    assert detect_kind(transformers.BertConfig()) == "masked"  # the type's masked head comes first


def test_a_model_that_is_neither_is_refused():
    config = transformers.CLIPVisionConfig()
    with pytest.raises(ConfigError, match="masked or a causal LM"):
        detect_kind(config)
    with pytest.raises(ConfigError, match="not a model kind"):
        kind_of("seq2seq")


def test_answer_layout_per_kind():
    assert MASKED.answer_tokens(2, None, 103) == [103, 103]
    assert MASKED.answer_positions(5, 2) == [5, 6]
    assert CAUSAL.answer_tokens(3, [7, 8, 9], None) == [7, 8]  # the last token is only predicted
    assert CAUSAL.answer_positions(5, 3) == [4, 5, 6]  # the token before each answer token
    assert CAUSAL.answer_tokens(1, None, None) == []
    with pytest.raises(ConfigError, match="answer tokens"):
        CAUSAL.answer_tokens(2, None, None)
    assert CAUSAL.candidate_in_input(2) and not CAUSAL.candidate_in_input(1)
    assert not MASKED.candidate_in_input(3)


def test_fill_step_masked_fills_the_most_confident_open_mask_causal_the_next_token():
    best = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    filled = torch.tensor([[False, True, False], [False, False, False]])
    positions = torch.tensor([[10, 11, 12], [20, 21, 22]])
    pos, where = MASKED.fill_step(best, filled, 0, positions)
    assert pos.tolist() == [2, 0] and where.tolist() == [12, 20]
    pos, where = CAUSAL.fill_step(best, filled, 1, positions)
    assert pos.tolist() == [1, 1] and where.tolist() == [12, 22]  # enters the input one column later


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_load_base_from_a_local_folder(tmp_path, family):
    lm, tok = pair(family, seed=0)
    lm.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, tokenizer, kind = load_base(str(tmp_path / "m"))
    assert kind == KINDS[family] and type(loaded) is type(lm)
    assert tokenizer.get_vocab() == tok.get_vocab()
    torch.testing.assert_close(loaded.get_input_embeddings().weight, lm.get_input_embeddings().weight)
    with pytest.raises(ConfigError, match="cannot load"):
        load_base(str(tmp_path / "missing"))


@pytest.mark.parametrize("family,offset", [("bert", 0), ("roberta", None)])
def test_runner_finds_the_position_numbering_for_left_padding(family, offset):
    lm, tok = pair(family, seed=0)
    runner = LMRunner(lm, tok)
    mask = torch.tensor([[0, 0, 1, 1]])
    pos = runner.positions(mask, "left")
    expected = offset if offset is not None else lm.config.pad_token_id + 1
    assert pos.tolist() == [[expected, expected, expected, expected + 1]]
    assert runner.positions(mask, "right") is None


def test_the_prompt_s_gradient_is_the_same_on_every_run_with_several_threads():
    """``LMRunner.embed`` splices the pseudo tokens in with an embedding lookup, whose CPU
    backward sums each prompt row's gradients in a fixed order; advanced indexing summed
    them in thread order, so a seeded run's prompt differed from run to run."""
    lm, tok = pair("bert")
    runner = LMRunner(lm, tok)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randn(9, lm.config.hidden_size, generator=gen, requires_grad=True)
    ids = torch.randint(5, 50, (64, 40), generator=gen)
    pseudo = torch.randint(-1, 9, (64, 40), generator=gen)  # -1: a word, 0..8: a pseudo token
    weight = torch.randn(64, 40, lm.config.hidden_size, generator=gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        for _ in range(20):
            prompt.grad = None
            (runner.embed(ids, pseudo, prompt) * weight).sum().backward()
            seen.append(prompt.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(g, seen[0]) for g in seen)
    want = torch.zeros_like(prompt)  # and it is the sum of the pseudo positions' gradients
    want.index_add_(0, pseudo[pseudo >= 0], weight[pseudo >= 0])
    torch.testing.assert_close(seen[0], want)
