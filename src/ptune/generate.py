"""Writing answers instead of scoring them: greedy answers of given token lengths, and
open-ended text from a causal LM.

:func:`generate`: masked LMs fill the answer's masks one at a time, the most confident
first, each pass seeing the tokens filled so far (PET's iterative filling); causal LMs
continue the prompt greedily, the prompt (pseudo tokens included) in one pass and then one
token per pass from the key/value cache. Special tokens are not chosen unless
``ban_special=False`` (PET lets a mask be filled with padding); the text leaves them out.

:func:`generate_text`: a causal LM writes free text at the answer slot, through
transformers' own ``generate`` fed with the input embeddings (pseudo tokens spliced in
wherever the template puts them before the slot), batched with left padding; greedy or
sampled, with stop strings (:class:`ptune.config.GenerateConfig`).

:func:`input_embeds`: an example's whole input as embeddings, the sequence that a serving
engine accepts as ``prompt_embeds`` / ``input_embeds``.

Example:
    >>> items = model.prepare([{"text": "..."}])                            # doctest: +SKIP
    >>> generate(model, items, lengths=[2])[0]["text"]                      # doctest: +SKIP
    >>> generate_text(model, [{"text": "..."}], GenerateConfig(max_new_tokens=20))  # doctest: +SKIP
    [{'text': ..., 'ids': [...], 'finish_reason': 'length'}]
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .batch import Item, View
from .cache import add_switch_hint, usable
from .config import GenerateConfig
from .errors import ConfigError, DataError
from .inference import model_device
from .progress import Progress
from .template import Encoded

__all__ = ["generate", "generate_text", "generate_text_rows", "input_embeds"]


@torch.no_grad()
def generate(model: Any, items: Sequence[Any], lengths: Sequence[int], batch_size: int = 32, *,
             ban_special: bool = True) -> list[dict[str, Any]]:
    """Greedy answers of ``lengths[i]`` tokens for each prepared item (special tokens
    allowed with ``ban_special=False``).

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
    special = sorted(set(model.tokenizer.all_special_ids)) if ban_special else []
    banned = torch.tensor(special, dtype=torch.long, device=device)
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


def _left_padded(model: Any, encs: list[Encoded], k: int, prompt, device) -> tuple[View, int, torch.Tensor]:
    """The rows left-padded so every row's answer starts in the same column: the view, the
    number of columns through the (first) answer position, and their input embeddings
    (R, start, H) with the pseudo tokens spliced in."""
    r = len(encs)
    view = model.collator.pad(encs, torch.zeros((r, 1, k), dtype=torch.long), torch.zeros((r, 1), dtype=torch.long),
                              torch.arange(r), False, side="left").to(device)
    start = int(view.answer_positions[0, 0]) + 1  # the prompt, through the answer position
    return view, start, model.embed(view.input_ids[:, :start], view.pseudo_index[:, :start], prompt)


def _decode_with_cache(model: Any, encs: list[Encoded], k: int, prompt, banned, device) -> list[dict[str, Any]]:
    """Greedy decoding of a causal LM: one pass over the prompt (pseudo tokens included,
    left-padded so every row's answer starts in the same column), then one token per pass
    from the key/value cache."""
    from transformers import DynamicCache

    runner = model.runner
    r = len(encs)
    view, start, emb = _left_padded(model, encs, k, prompt, device)
    mask = view.attention_mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=runner.lm.config)
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


# ----------------------------------------------------------------------------- open-ended text
def _items(model: Any, examples: Sequence[Any]) -> list[Item]:
    if examples and isinstance(examples[0], Item):
        return list(examples)
    return model.prepare(list(examples))


def _encode(model: Any, item: Item) -> Encoded:
    """The example's input up to the answer slot (a causal LM), or whole with one mask
    token at the slot (a masked LM)."""
    return model.collator.compiled.encode(item.fields, answer_len=1, answer_ids=[model.pad_id], source=item.source)


@torch.no_grad()
def input_embeds(model: Any, examples: Sequence[Any]) -> list[torch.Tensor]:
    """Each example's input as the sequence of input embeddings the LM reads: word
    embeddings with the pseudo-token embeddings spliced in, special tokens included.

    For a causal LM the sequence ends where the answer begins: the LM's next-token
    distribution after it gives the label scores, and a serving engine that accepts
    ``prompt_embeds`` (vLLM) or ``input_embeds`` (SGLang) continues the text from there.
    For a masked LM the sequence is the whole input with one mask token at the answer slot.

    Args:
        model: a :class:`~ptune.model.PTunedModel`.
        examples: dicts with the template's fields, or prepared items.

    Returns:
        One (T_i, H) tensor per example, on the model's device, in the LM's dtype.
    """
    was = model.training
    model.eval()
    try:
        prompt = model.pseudo_embeddings()
        device = model_device(model)
        out = []
        for item in _items(model, examples):
            enc = _encode(model, item)
            ids = torch.tensor([enc.input_ids], device=device)
            out.append(model.embed(ids, torch.tensor([enc.pseudo_index], device=device), prompt)[0])
        return out
    finally:
        model.train(was)


def generate_text(model: Any, examples: Sequence[Any], config: GenerateConfig | None = None,
                  batch_size: int = 16, *, progress: bool = False) -> list[dict[str, Any]]:
    """Open-ended text written by a causal LM at the template's answer slot.

    The template's text after the slot is not part of the input (a causal LM continues
    from the slot); pseudo tokens may stand anywhere before it. Rows of a batch are
    left-padded with position ids counted from each row's first token, so an example's
    text does not depend on its batch (up to float rounding); greedy decoding equals
    decoding one token at a time from the LM's full forward pass.

    Args:
        model: a :class:`~ptune.model.PTunedModel` over a causal LM.
        examples: dicts with the template's fields, or prepared items.
        config: length, greedy or sampling, stop strings (default: greedy, 32 tokens).
        batch_size: examples per ``generate`` call.
        progress: report progress (:mod:`ptune.progress`: a bar on a terminal, a line every
            30 s otherwise).

    Returns:
        One dict per example: ``text`` (decoded, cut before the first stop string),
        ``ids`` (the written tokens, without the end-of-sequence token) and
        ``finish_reason``: ``"stop"`` (a stop string), ``"eos"`` (the end-of-sequence
        token) or ``"length"`` (``max_new_tokens`` reached).

    Raises:
        ConfigError: a masked LM, or a bad batch size.
        DataError: an example whose input and ``max_new_tokens`` exceed the LM's positions.
    """
    return generate_text_rows([(model, item) for item in _items(model, examples)], config, batch_size,
                              progress=progress)


@torch.no_grad()
def generate_text_rows(rows: Sequence[tuple[Any, Item]], config: GenerateConfig | None = None,
                       batch_size: int = 16, *, progress: bool = False) -> list[dict[str, Any]]:
    """:func:`generate_text` for rows of several prompts on one LM: ``(model, prepared item)``
    pairs whose models share one causal LM object and tokenizer (a
    :class:`~ptune.multi.PromptBank`'s prompts). Each row's input is built by its own
    prompt; the rows of a batch, whatever their prompts, share the LM's ``generate`` calls,
    and each row's text is the one its prompt writes alone (up to float rounding)."""
    config = config or GenerateConfig()
    if not rows:
        return []
    lead = rows[0][0]
    if lead.runner.kind.answer_in_input:
        raise ConfigError("model", "open-ended generation needs a causal LM; this is a masked LM, which reads its "
                                   "answer at mask tokens inside the input (use predict, or generate for answers "
                                   "of fixed length)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", f"must be a positive integer, got {batch_size!r}")
    if any(m.lm is not lead.lm or m.tokenizer is not lead.tokenizer for m, _ in rows):
        raise ConfigError("rows", "the rows' prompts must share one LM object and tokenizer")
    encs = [_encode(m, it) for m, it in rows]
    limit = lead.runner.max_positions
    for (_, it), enc in zip(rows, encs):
        if len(enc.input_ids) + config.max_new_tokens > limit:
            raise DataError(it.source, f"{len(enc.input_ids)} input tokens and max_new_tokens "
                                       f"{config.max_new_tokens} exceed the LM's {limit} positions")
    gen = _hf_generation_config(lead, config)
    models = list({id(m): m for m, _ in rows}.values())
    was = [m.training for m in models]
    for m in models:
        m.eval()
    device = model_device(lead)
    out: list[dict[str, Any]] = []
    bar = Progress(len(encs), "generate", "input", enabled=progress)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=config.do_sample):
            if config.seed is not None:
                torch.manual_seed(config.seed)
            prompts = {id(m): m.pseudo_embeddings() for m in models}
            for s in range(0, len(encs), batch_size):
                chunk = range(s, min(s + batch_size, len(encs)))
                mask, emb = _mixed_inputs([(rows[i][0], encs[i]) for i in chunk], prompts, device)
                written = lead.lm.generate(inputs_embeds=emb, attention_mask=mask, generation_config=gen,
                                           tokenizer=lead.tokenizer)
                out += [_finished(lead.tokenizer, row, gen, config.stop)
                        for row in written[:, -gen.max_new_tokens:].tolist()]
                bar.update(len(chunk))
    finally:
        bar.close()
        for m, w in zip(models, was):
            m.train(w)
    return out


def _mixed_inputs(rows: list[tuple[Any, Encoded]], prompts: dict[int, Any], device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' attention mask and input embeddings, ``(R, T)`` and ``(R, T, H)``: each
    prompt's rows built by it (:func:`_left_padded`), then padded further on the left to
    one length (zero vectors the mask hides) and put back in row order."""
    groups: dict[int, list[int]] = {}
    for i, (m, _) in enumerate(rows):
        groups.setdefault(id(m), []).append(i)
    parts = []
    for key, idx in groups.items():
        model = rows[idx[0]][0]
        view, start, emb = _left_padded(model, [rows[i][1] for i in idx], 1, prompts[key], device)
        parts.append((idx, view.attention_mask[:, :start], emb))
    if len(parts) == 1:
        return parts[0][1], parts[0][2]
    width = max(mask.shape[1] for _, mask, _ in parts)
    order = [i for idx, _, _ in parts for i in idx]
    mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for _, m, _ in parts])
    emb = torch.cat([torch.nn.functional.pad(e, (0, 0, width - e.shape[1], 0)) for _, _, e in parts])
    back = torch.tensor(sorted(range(len(order)), key=order.__getitem__), device=mask.device)
    return mask[back], emb[back]


def _hf_generation_config(model: Any, config: GenerateConfig) -> Any:
    """transformers' GenerationConfig for ``config``: every logits processor that could
    change the choice is set explicitly, so the LM's own generation defaults (top-k,
    repetition penalty, ...) do not apply; its end-of-sequence token does."""
    from transformers import GenerationConfig

    eos = getattr(model.lm.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.tokenizer.eos_token_id
    sampling = {"temperature": config.temperature, "top_p": config.top_p, "top_k": 0} if config.do_sample else {}
    return GenerationConfig(max_new_tokens=config.max_new_tokens, do_sample=config.do_sample, num_beams=1,
                            repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0, eos_token_id=eos,
                            pad_token_id=model.pad_id, stop_strings=list(config.stop) or None, **sampling)


def _finished(tokenizer: Any, row: list[int], gen: Any, stop: Sequence[str]) -> dict[str, Any]:
    """One row of ``generate``'s output as text, ids and the reason it ended."""
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    cut = next((i for i, t in enumerate(row) if t in eos), None)
    ids, reason = (row[:cut], "eos") if cut is not None else (row, "length")
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    if hits:
        text, reason = text[: min(hits)], "stop"
        while cut is None and ids and ids[-1] == gen.pad_token_id:  # a row ended by a stop string is padded
            ids = ids[:-1]
    return {"text": text, "ids": ids, "finish_reason": reason}
