"""Greedy answers may hold special tokens only when asked (PET's WSC fills masks with padding)."""

from __future__ import annotations

import torch

from conftest import pair
from ptune import PromptConfig, PTunedModel


def test_ban_special_off_lets_padding_fill_a_mask():
    lm, tok = pair("albert", seed=0)
    model = PTunedModel(lm, tok, PromptConfig(template="{text} [P] refers to [MASK] .", candidates_field="choices",
                                              label_field="target", normalize="vocab"), seed=0)
    with torch.no_grad():  # padding is by far the most probable token everywhere
        lm.get_output_embeddings().bias[tok.pad_token_id] += 1e3
    items = model.prepare([{"text": "the movie was great", "choices": ["the film"], "target": 0}])
    banned = model.generate(items, [3])[0]
    allowed = model.generate(items, [3], ban_special=False)[0]
    assert tok.pad_token_id not in banned["ids"] and banned["text"]
    assert allowed["ids"] == [tok.pad_token_id] * 3 and allowed["text"] == ""
