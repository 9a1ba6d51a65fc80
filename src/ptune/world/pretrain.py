"""The world's tokenizers and tiny LMs: BPE with every object one token, pretraining of a GPT-2
and a BERT on the corpus, and the memorization check (which wordings recall the facts)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from .spec import _SPECIALS, SPLITS, WorldConfig


logger = logging.getLogger("ptune.world")


# ---------------------------------------------------------------- tokenizer
def _train_bpe(lines: list[str], vocab_size: int, skip: set[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE merges with ``##`` continuation marks and a deterministic tie-break.

    (The ``tokenizers`` trainer assigns ``##`` ids in hash-map order, so its merges differ
    from run to run; the world's word types are few, so plain Python is fast enough.)
    """
    counts = Counter(w for line in lines for w in re.findall(r"\w+|[^\w\s]+", line) if w not in skip)
    words = {w: [w[0], *("##" + c for c in w[1:])] for w in sorted(counts)}
    vocab = [*_SPECIALS, *sorted({t for syms in words.values() for t in syms} - set(_SPECIALS))]
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for w, syms in words.items():
        for p in zip(syms, syms[1:]):
            pairs[p] += counts[w]
            where[p].add(w)
    merges = []
    while len(vocab) < vocab_size and pairs:
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.append(best[0] + best[1][2:])
        for w in sorted(where.pop(best)):
            old = words[w]
            new, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and (old[i], old[i + 1]) == best:
                    new.append(vocab[-1])
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            for p in zip(old, old[1:]):
                pairs[p] -= counts[w]
                if pairs[p] <= 0:
                    del pairs[p]
            for p in zip(new, new[1:]):
                pairs[p] += counts[w]
                where[p].add(w)
            words[w] = new
    return {t: i for i, t in enumerate(vocab)}, merges


def _tokenizers(cfg: WorldConfig, lines: list[str], objects: list[str]) -> tuple[Any, Any]:
    """One BPE vocabulary, wrapped twice: GPT (``<eos> $A``) and BERT (``[CLS] $A [SEP]``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _train_bpe(lines, cfg.vocab_size, skip=set(objects))  # objects: whole tokens, no merges
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(_SPECIALS)
    tok.add_tokens([AddedToken(o, single_word=True, normalized=False) for o in objects])
    ids = {s: tok.token_to_id(s) for s in _SPECIALS}
    common = dict(pad_token="[PAD]", unk_token="[UNK]", padding_side="right")
    gpt_tok = Tokenizer.from_str(tok.to_str())
    gpt_tok.post_processor = processors.TemplateProcessing(
        single="<eos> $A", pair="<eos> $A $B:1", special_tokens=[("<eos>", ids["<eos>"])])
    gpt = PreTrainedTokenizerFast(tokenizer_object=gpt_tok, bos_token="<eos>", eos_token="<eos>",
                                  model_input_names=["input_ids", "attention_mask"], **common)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    bert = PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"], **common)
    for name, t in (("gpt", gpt), ("bert", bert)):
        for o in objects:  # the harness spells words as after a space
            if len(t(" " + o, add_special_tokens=False)["input_ids"]) != 1:
                raise RuntimeError(f"{name} tokenizer: object {o!r} is not a single token")
    return gpt, bert


# ---------------------------------------------------------------- pretraining
def _pack(sentences: list[list[int]], block: int, start: int | None, end: int | None, pad: int,
          objects: set[int], period: int) -> tuple[Any, Any]:
    """Greedily pack whole sentences into ``(N, block)`` blocks; also mark object slots.

    GPT blocks are ``<eos> s1 <eos> s2 ...``; BERT blocks are ``[CLS] s1 s2 ... [SEP]``. An
    object slot is the object token before a sentence's final period (every wording ends
    with ``[Y] .``), masked more often for BERT (salient-entity masking).
    """
    import torch

    room = block - (start is not None and end is not None) * 2
    rows, slots, cur, cur_slots = [], [], [], []
    for ids in sentences:
        piece = ([start] if end is None else []) + ids
        if cur and len(cur) + len(piece) > room:
            rows.append(cur)
            slots.append(cur_slots)
            cur, cur_slots = [], []
        if len(ids) >= 2 and ids[-1] == period and ids[-2] in objects:
            cur_slots.append(len(cur) + len(piece) - 2)
        cur = cur + piece[:room]
    rows.append(cur)
    slots.append(cur_slots)
    ids_t = torch.full((len(rows), block), pad, dtype=torch.long)
    slot_t = torch.zeros((len(rows), block), dtype=torch.bool)
    off = 1 if end is not None else 0
    for i, (row, sl) in enumerate(zip(rows, slots)):
        row = ([start] + row + [end]) if end is not None else row
        ids_t[i, :len(row)] = torch.tensor(row)
        slot_t[i, [s + off for s in sl if s + off < block]] = True
    return ids_t, slot_t


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10 %


def _pretrain(model: Any, blocks: Any, slots: Any, cfg: WorldConfig, kind: str, special: dict[str, int],
              vocab: int, progress: bool) -> dict[str, Any]:
    """Plain loop: AdamW, warm-up + cosine, clip 1.0; causal LM or MLM with object masking."""
    import torch
    from tqdm.auto import tqdm

    epochs, batch, lr = ((cfg.gpt_epochs, cfg.gpt_batch, cfg.gpt_lr) if kind == "gpt"
                         else (cfg.bert_epochs, cfg.bert_batch, cfg.bert_lr))
    n = blocks.shape[0]
    per_epoch = math.ceil(n / batch)
    total = epochs * per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.warmup, total))
    gen = torch.Generator().manual_seed(cfg.seed)
    is_pad = blocks == special["[PAD]"]
    is_special = is_pad | (blocks == special["[CLS]"]) | (blocks == special["[SEP]"])
    model.train()
    losses: list[float] = []
    bar = tqdm(total=total, desc=f"pretrain {kind}", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            ids = blocks[idx]
            if kind == "gpt":
                out = model(input_ids=ids, attention_mask=(~is_pad[idx]).long(),
                            labels=ids.masked_fill(is_pad[idx], -100))
            else:  # 15 % random MLM (80/10/10) plus the object slot with p=object_mask, always [MASK]
                r = torch.rand(ids.shape, generator=gen)
                pick = (torch.rand(ids.shape, generator=gen) < cfg.mlm_prob) & ~is_special[idx]
                obj = slots[idx] & (torch.rand(ids.shape, generator=gen) < cfg.object_mask)
                inputs = ids.clone()
                inputs[pick & (r < 0.8)] = special["[MASK]"]
                rand = pick & (r >= 0.8) & (r < 0.9)
                inputs[rand] = torch.randint(len(_SPECIALS), vocab, (int(rand.sum()),), generator=gen)
                inputs[obj] = special["[MASK]"]
                labels = ids.masked_fill(~(pick | obj), -100)
                out = model(input_ids=inputs, attention_mask=(~is_pad[idx]).long(), labels=labels)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            bar.update(1)
            if len(losses) % 200 == 0:
                logger.info("%s step %d/%d loss %.3f", kind, len(losses), total, sum(losses[-50:]) / 50)
    bar.close()
    model.eval()
    tail = losses[-min(50, len(losses)):]
    return {"steps": total, "epochs": epochs, "blocks": n, "exposures_per_fact": cfg.reps * epochs,
            "final_loss": round(sum(tail) / len(tail), 4)}


def _models(cfg: WorldConfig, vocab: int, special: dict[str, int]) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    out: dict[str, Any] = {}
    if "gpt" in cfg.models:
        torch.manual_seed(cfg.seed)
        out["gpt"] = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_positions=cfg.positions, n_embd=cfg.hidden, n_layer=cfg.layers, n_head=cfg.heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=special["<eos>"],
            eos_token_id=special["<eos>"], pad_token_id=special["[PAD]"]))
    if "bert" in cfg.models:
        torch.manual_seed(cfg.seed)
        out["bert"] = BertForMaskedLM(BertConfig(
            vocab_size=vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
            intermediate_size=4 * cfg.hidden, max_position_embeddings=cfg.positions, type_vocab_size=2,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=special["[PAD]"]))
    return out


# ---------------------------------------------------------------- memorization check
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _probe(world_dir: Path, which: str, splits: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    """P@1 per relation, split and wording (the 4 training wordings, then the manual one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    if which not in ("gpt", "bert"):
        raise ConfigError("which", f"{which!r}; accepted: gpt, bert")
    lama = world_dir / "lama"
    tok = AutoTokenizer.from_pretrained(world_dir / which)
    tok.padding_side = "right"
    auto = AutoModelForCausalLM if which == "gpt" else AutoModelForMaskedLM
    lm = auto.from_pretrained(world_dir / which).eval()
    words = [w for w in (lama / "common_vocab_cased.txt").read_text(encoding="utf-8").split("\n") if w]
    cand = torch.tensor(tok.convert_tokens_to_ids(words))
    out: dict[str, dict[str, list[float]]] = {}
    for rel in _read_jsonl(lama / "relations.jsonl"):
        wordings = [*rel["train_templates"], rel["template"]]
        out[rel["relation"]] = {}
        for split in splits:
            facts = _read_jsonl(lama / "fact-retrieval" / rel["relation"] / f"{split}.jsonl")
            gold = torch.tensor(tok.convert_tokens_to_ids([f["obj_label"] for f in facts]))
            accs = [0.0] * len(wordings)
            for j, w in enumerate(wordings if facts else []):
                if which == "gpt":  # LAMA convention: cut the template at [Y], predict the next token
                    texts = [w.split("[Y]")[0].replace("[X]", f["sub_label"]).strip() for f in facts]
                else:
                    texts = [w.replace("[X]", f["sub_label"]).replace("[Y]", tok.mask_token) for f in facts]
                enc = tok(texts, return_tensors="pt", padding=True)
                with torch.no_grad():
                    logits = lm(**enc).logits  # (B, T, V)
                if which == "gpt":
                    pos = enc["attention_mask"].sum(1) - 1
                else:
                    pos = (enc["input_ids"] == tok.mask_token_id).int().argmax(1)
                answer = logits[torch.arange(len(facts)), pos][:, cand]  # (B, n_candidates)
                accs[j] = float((cand[answer.argmax(1)] == gold).float().mean())
            out[rel["relation"]][split] = accs
    return out


def memorized(world_dir: str | os.PathLike[str], which: Literal["gpt", "bert"], split: str = "test", *,
              wording: Literal["best", "manual"] = "best") -> dict[str, float]:
    """What the world's LM knows: P@1 per relation, predictions restricted to the object vocabulary.

    Args:
        world_dir: a folder written by :func:`build_world`.
        which: ``gpt`` (next token after the wording cut at ``[Y]``) or ``bert`` (``[MASK]``).
        split: the facts to score: ``train``, ``dev`` or ``test``.
        wording: ``best``: the training wording with the best dev P@1 (the "oracle");
            ``manual``: LAMA's held-out manual template.

    Returns:
        Relation id -> P@1.
    """
    if wording not in ("best", "manual"):
        raise ConfigError("wording", f"{wording!r}; accepted: best, manual")
    if split not in SPLITS:
        raise ConfigError("split", f"{split!r}; accepted: {', '.join(SPLITS)}")
    scores = _probe(Path(world_dir), which, tuple(dict.fromkeys(("dev", split))))
    return {rel: round(s[split][-1 if wording == "manual" else _best(s)], 4) for rel, s in scores.items()}


def _best(scores: dict[str, list[float]]) -> int:
    """Index of the training wording with the best dev P@1 (the first on ties)."""
    return max(range(len(scores["dev"]) - 1), key=lambda i: (scores["dev"][i], -i))
