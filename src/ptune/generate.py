"""Writing answers instead of scoring them: greedy answers of given token lengths.

Masked LMs fill the answer's masks one at a time, the most confident first, each pass
seeing the tokens filled so far (PET's iterative filling); causal LMs continue the prompt
greedily, the prompt (pseudo tokens included) in one pass and then one token per pass
from the key/value cache. Special tokens are never chosen.

Example:
    >>> items = model.prepare([{"text": "..."}])                            # doctest: +SKIP
    >>> generate(model, items, lengths=[2])[0]["text"]                      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .cache import add_switch_hint, usable
from .errors import ConfigError
from .inference import model_device
from .template import Encoded

__all__ = ["generate"]


@torch.no_grad()
def generate(model: Any, items: Sequence[Any], lengths: Sequence[int], batch_size: int = 32) -> list[dict[str, Any]]:
    """Greedy answers of ``lengths[i]`` tokens for each prepared item.

    Returns:
        One dict per item: ``ids`` (the chosen tokens, in answer order), ``text`` (decoded)
        and ``logprob`` (the sum of the chosen tokens' log-probabilities when chosen).
    """
    if len(lengths) != len(items):
        raise ConfigError("lengths", f"{len(lengths)} lengths for {len(items)} items")
    bad = [k for k in lengths if int(k) < 1]
    if bad:
        raise ConfigError("lengths", f"must be at least 1, got {bad[0]}")
    was = model.training
    model.eval()
    device = model_device(model)
    banned = torch.tensor(sorted(set(model.tokenizer.all_special_ids)), dtype=torch.long, device=device)
    prompt = model.pseudo_embeddings()
    results: list[dict[str, Any] | None] = [None] * len(items)
    try:
        order = sorted(range(len(items)), key=lambda i: lengths[i])
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            for k in sorted({int(lengths[i]) for i in chunk}):
                idx = [i for i in chunk if lengths[i] == k]
                with model.runner.kernels(model.speed.lm_shortcuts):
                    rows = _generate_rows(model, [items[i] for i in idx], k, prompt, banned, device)
                for i, res in zip(idx, rows):
                    results[i] = res
    finally:
        model.train(was)
    return results  # type: ignore[return-value]


def _generate_rows(model: Any, items: Sequence[Any], k: int, prompt, banned, device) -> list[dict[str, Any]]:
    collator = model.collator
    filler = [collator.pad_id] * k
    encs = [collator.compiled.encode(it.fields, answer_len=k, answer_ids=filler, source=it.source) for it in items]
    if usable(model.runner, model.speed):
        try:
            return _decode_with_cache(model, encs, k, prompt, banned, device)
        except Exception as e:
            add_switch_hint(e, "cached greedy decoding", "model.speed.prefix_cache = False")
            raise
    r = len(encs)
    view = collator.pad(encs, torch.zeros((r, 1, k), dtype=torch.long), torch.zeros((r, 1), dtype=torch.long),
                        torch.arange(r), False).to(device)
    chosen = torch.zeros((r, k), dtype=torch.long, device=device)
    logprob = torch.zeros(r, device=device)
    filled = torch.zeros((r, k), dtype=torch.bool, device=device)
    rows = torch.arange(r, device=device)
    for step in range(k):
        logp = model.answer_logits(view, prompt).float().log_softmax(-1)  # (R, k, V)
        logp[..., banned] = float("-inf")
        best, tok = logp.max(-1)  # (R, k)
        pos, where = model.runner.kind.fill_step(best, filled, step, view.answer_positions)
        t = tok[rows, pos]
        chosen[rows, pos] = t
        filled[rows, pos] = True
        logprob += best[rows, pos]
        if step < k - 1 or model.runner.kind.answer_in_input:
            view.input_ids[rows, where] = t
    return _decoded(model.tokenizer, chosen, logprob)


def _decode_with_cache(model: Any, encs: list[Encoded], k: int, prompt, banned, device) -> list[dict[str, Any]]:
    """Greedy decoding of a causal LM: one pass over the prompt (pseudo tokens included,
    left-padded so every row's answer starts in the same column), then one token per pass
    from the key/value cache."""
    from transformers import DynamicCache

    runner = model.runner
    r = len(encs)
    view = model.collator.pad(encs, torch.zeros((r, 1, k), dtype=torch.long), torch.zeros((r, 1), dtype=torch.long),
                              torch.arange(r), False, side="left").to(device)
    mask = view.attention_mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    start = int(view.answer_positions[0, 0]) + 1  # the prompt, through the answer position
    cache = DynamicCache(config=runner.lm.config)
    emb = model.embed(view.input_ids[:, :start], view.pseudo_index[:, :start], prompt)
    chosen = torch.zeros((r, k), dtype=torch.long, device=device)
    logprob = torch.zeros(r, device=device)
    for step in range(k):
        col = start + step - 1  # the column whose output predicts answer token `step`
        with runner.capture_head():
            h = runner.lm(inputs_embeds=emb, attention_mask=mask[:, : col + 1],
                          position_ids=pos[:, col + 1 - emb.shape[1] : col + 1], use_cache=True,
                          **{runner.cache_arg: cache}).logits[:, -1]
        logp = runner.logits(h).float().log_softmax(-1)
        logp[:, banned] = float("-inf")
        best, tok = logp.max(-1)
        chosen[:, step], logprob = tok, logprob + best
        emb = runner.lm.get_input_embeddings()(tok).unsqueeze(1)
    return _decoded(model.tokenizer, chosen, logprob)


def _decoded(tokenizer: Any, chosen: torch.Tensor, logprob: torch.Tensor) -> list[dict[str, Any]]:
    return [{"ids": ids, "text": tokenizer.decode(ids, skip_special_tokens=True).strip(), "logprob": float(lp)}
            for ids, lp in zip(chosen.tolist(), logprob.tolist())]
