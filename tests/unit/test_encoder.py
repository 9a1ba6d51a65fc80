"""Prompt encoders: the paper's shapes, caching, initialisation from words."""

from __future__ import annotations

import pytest
import torch

from conftest import pair
from ptune import ConfigError, EncoderConfig, PromptConfig, PromptEncoder, PTunedModel


def test_lstm_is_the_papers():
    enc = PromptEncoder(EncoderConfig(type="lstm"), n_pseudo=5, hidden_size=16)
    assert enc.lstm.num_layers == 2 and enc.lstm.bidirectional and enc.lstm.hidden_size == 8
    linears = [m for m in enc.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 16), (16, 16)]
    assert isinstance(enc.mlp[1], torch.nn.ReLU)
    assert enc().shape == (5, 16)


def test_lstm_hidden_gives_the_few_shot_codes_sizes():
    """The paper's SuperGLUE code on ALBERT (128-wide embeddings): 128 LSTM units per
    direction, then an MLP 256 -> 128 -> 128."""
    enc = PromptEncoder(EncoderConfig(type="lstm", lstm_hidden=128), n_pseudo=3, hidden_size=128)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert shapes["lstm.weight_ih_l0"] == (4 * 128, 128) and shapes["lstm.weight_hh_l0"] == (4 * 128, 128)
    assert shapes["lstm.weight_ih_l1"] == (4 * 128, 256)  # layer 2 reads both directions
    assert shapes["mlp.0.weight"] == (128, 256) and shapes["mlp.2.weight"] == (128, 128)
    assert enc().shape == (3, 128)
    assert PromptEncoder(EncoderConfig(type="lstm", lstm_hidden=5), 2, 7)().shape == (2, 7)  # odd H is fine
    assert EncoderConfig.from_dict({"type": "lstm", "lstm_hidden": 128}).lstm_hidden == 128
    with pytest.raises(ConfigError, match="lstm_hidden"):
        EncoderConfig(type="mlp", lstm_hidden=64)
    with pytest.raises(ConfigError, match="lstm_hidden"):
        EncoderConfig(type="lstm", lstm_hidden=0)


def test_mlp_and_none():
    mlp = PromptEncoder(EncoderConfig(type="mlp"), 3, 8)
    assert mlp.lstm is None and mlp().shape == (3, 8)
    none = PromptEncoder(EncoderConfig(type="none"), 3, 8)
    assert none.lstm is None and none.mlp is None
    assert torch.equal(none(), none.embedding.weight)


def test_lstm_output_depends_on_every_pseudo_token():
    """Association (paper §1): the bidirectional LSTM mixes all pseudo tokens."""
    enc = PromptEncoder(EncoderConfig(type="lstm"), 4, 8).eval()
    with torch.no_grad():
        before = enc().clone()
        enc.embedding.weight[3] += 1.0
        after = enc()
    assert not torch.allclose(before[0], after[0])


def test_eval_output_is_cached_until_parameters_change():
    enc = PromptEncoder(EncoderConfig(type="lstm"), 4, 8).eval()
    with torch.no_grad():
        first = enc()
        assert enc() is first
        enc.mlp[0].bias += 1
        second = enc()
    assert second is not first and not torch.equal(second, first)
    enc.train()
    with torch.no_grad():
        assert enc() is not enc()  # training mode never caches
    enc.eval()
    out = enc()  # gradients on: no cache, the graph is kept
    assert out.requires_grad


def test_runs_once_per_forward(monkeypatch):
    lm, tok = pair("bert")
    model = PTunedModel(lm, tok, PromptConfig(template="[P*2] {text} [P] [MASK]", verbalizer={"a": ["great movie", "the"], "b": "was"}))
    calls = []
    original = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda: calls.append(1) or original())
    model.train()
    batch = model.collate(model.prepare([{"text": "a"}, {"text": "b c"}]))
    assert len(batch.views) == 2  # two word lengths, still one encoder call
    model(batch)
    assert len(calls) == 1


def test_init_from_words():
    lm, tok = pair("gpt2")
    model = PTunedModel(lm, tok, PromptConfig(template="[P*2:the] {text} [P] [MASK]", verbalizer={"a": "the", "b": "was"},
                                             encoder=EncoderConfig(type="none")))
    table = lm.get_input_embeddings().weight
    the = tok(" the", add_special_tokens=False)["input_ids"]
    w = model.encoder.embedding.weight
    assert torch.allclose(w[0], table[the].mean(0)) and torch.allclose(w[1], table[the].mean(0))
    assert not torch.allclose(w[2], table[the].mean(0))


def test_config_errors():
    with pytest.raises(ConfigError, match="encoder.type: 'gru'"):
        EncoderConfig(type="gru")
    with pytest.raises(ConfigError, match="only applies to the lstm"):
        EncoderConfig(type="mlp", lstm_dropout=0.1)
    with pytest.raises(ConfigError, match="unknown keys"):
        EncoderConfig.from_dict({"type": "lstm", "layers": 3})


def test_seed_fixes_the_initial_prompt_whatever_ran_before():
    lm, tok = pair("gpt2")
    cfg = PromptConfig(template="[P*2] {text} [MASK]", verbalizer={"a": "the", "b": "was"})
    first = PTunedModel(lm, tok, cfg, seed=5).encoder.embedding.weight.detach().clone()
    torch.rand(100)  # move the global RNG
    again = PTunedModel(lm, tok, cfg, seed=5).encoder.embedding.weight
    other = PTunedModel(lm, tok, cfg, seed=6).encoder.embedding.weight
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_nearest_tokens_find_the_words_the_prompt_is_made_of():
    lm, tok = pair("gpt2", seed=0)
    cfg = PromptConfig(template="{text} [P*3] [MASK]", verbalizer={"pos": "yes", "neg": "no"},
                       encoder=EncoderConfig(type="none"))
    model = PTunedModel(lm, tok, cfg, seed=0)
    words = [" movie", " great", " Paris"]
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    with torch.no_grad():
        model.encoder.embedding.weight.copy_(lm.get_input_embeddings().weight[ids])
    near = model.nearest_tokens(4)
    assert [row[0][0] for row in near] == tok.convert_ids_to_tokens(ids)
    assert all(abs(row[0][1] - 1.0) < 1e-4 and len(row) == 4 for row in near)
    assert all(row[0][1] >= row[1][1] >= row[2][1] for row in near)
    special = set(tok.convert_ids_to_tokens(tok.all_special_ids))
    assert not special & {t for row in near for t, _ in row}
