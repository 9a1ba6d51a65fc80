"""The world's tokenizers and tiny LMs: BPE with every object one token (built by
:mod:`ptune.tiny`), pretraining of a GPT-2 and a BERT on the corpus, and the memorization
check (which wordings recall the facts, scored by :mod:`ptune.tasks.lama`)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

from ..config import PromptConfig
from ..errors import ConfigError
from ..lm import MASKED, detect_kind, kind_of, load_base
from ..model import PTunedModel
from ..progress import Progress
from ..tasks.lama import load_facts, load_relations, rank_eval, vocabulary
from ..tiny import tokenizer_backend, wrap_tokenizer
from ..verbalizer import Verbalizer
from .spec import _SPECIALS, SPLITS, WorldConfig


logger = logging.getLogger("ptune.world")


# ---------------------------------------------------------------- tokenizer
def _tokenizers(cfg: WorldConfig, lines: list[str], objects: list[str]) -> tuple[Any, Any]:
    """One BPE vocabulary (``##`` continuations, every object one token), wrapped twice:
    GPT (``<eos> $A``) and BERT (``[CLS] $A [SEP]``)."""
    from tokenizers import Tokenizer, pre_tokenizers

    backend = tokenizer_backend("bert", lines, cfg.vocab_size, objects, specials=_SPECIALS,
                                pre_tokenizer=pre_tokenizers.Whitespace(), every_continuation=False)
    gpt = wrap_tokenizer(Tokenizer.from_str(backend.to_str()), template=("<eos> $A", "<eos> $A $B:1"),
                         bos_token="<eos>", eos_token="<eos>", pad_token="[PAD]", unk_token="[UNK]",
                         padding_side="right")
    bert = wrap_tokenizer(backend, "bert", padding_side="right")
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
    """Learning-rate factor at ``step``: linear warm-up from ``1 / warmup``, then cosine to 10 %.

    transformers' ``cosine_with_min_lr`` schedule (``min_lr_rate=0.1``) gives the same
    factors after warm-up but starts warm-up at 0 (``step / warmup``), so it would train
    other LMs.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10 %


def _pretrain(model: Any, blocks: Any, slots: Any, cfg: WorldConfig, name: str, special: dict[str, int],
              vocab: int, progress: bool) -> dict[str, Any]:
    """Plain loop: AdamW, warm-up + cosine, clip 1.0; causal LM or MLM with object masking.

    ``name`` (``gpt`` or ``bert``) picks the config's epochs, batch size and learning rate;
    the model's kind picks the objective.
    """
    import torch

    epochs, batch, lr = ((cfg.gpt_epochs, cfg.gpt_batch, cfg.gpt_lr) if name == "gpt"
                         else (cfg.bert_epochs, cfg.bert_batch, cfg.bert_lr))
    masked = _masked(model)
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
    bar = Progress(total, f"world: pretrain {name}", "step", enabled=progress)
    for epoch in range(epochs):
        bar.note(f"epoch {epoch + 1}/{epochs}")
        order = torch.randperm(n, generator=gen)
        for i in range(per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            ids = blocks[idx]
            if masked:
                inputs, labels = _mlm(ids, slots[idx], is_special[idx], cfg, special["[MASK]"], vocab, gen)
                out = model(input_ids=inputs, attention_mask=(~is_pad[idx]).long(), labels=labels)
            else:
                out = model(input_ids=ids, attention_mask=(~is_pad[idx]).long(),
                            labels=ids.masked_fill(is_pad[idx], -100))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            bar.update(1)
            if len(losses) % 200 == 0:
                logger.info("%s step %d/%d loss %.3f", name, len(losses), total, sum(losses[-50:]) / 50)
    bar.close()
    model.eval()
    tail = losses[-min(50, len(losses)):]
    return {"steps": total, "epochs": epochs, "blocks": n, "exposures_per_fact": cfg.reps * epochs,
            "final_loss": round(sum(tail) / len(tail), 4)}


def _masked(model: Any) -> bool:
    """Whether ``model`` is a masked LM (trained with MLM; else next-token prediction)."""
    return kind_of(detect_kind(model)) is MASKED


def _mlm(ids: Any, slots: Any, is_special: Any, cfg: WorldConfig, mask: int, vocab: int, gen: Any) -> tuple[Any, Any]:
    """MLM inputs and labels: 15 % random masking (80/10/10) plus the object slot with
    probability ``object_mask``, always ``[MASK]``."""
    import torch

    r = torch.rand(ids.shape, generator=gen)
    pick = (torch.rand(ids.shape, generator=gen) < cfg.mlm_prob) & ~is_special
    obj = slots & (torch.rand(ids.shape, generator=gen) < cfg.object_mask)
    inputs = ids.clone()
    inputs[pick & (r < 0.8)] = mask
    rand = pick & (r >= 0.8) & (r < 0.9)
    inputs[rand] = torch.randint(len(_SPECIALS), vocab, (int(rand.sum()),), generator=gen)
    inputs[obj] = mask
    return inputs, ids.masked_fill(~(pick | obj), -100)


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
def _probe(world_dir: Path, which: str, splits: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    """P@1 per relation, split and wording (the 4 training wordings, then the manual one),
    scored by LAMA's harness over the world's object vocabulary."""
    if which not in ("gpt", "bert"):
        raise ConfigError("which", f"{which!r}; accepted: gpt, bert")
    lama = world_dir / "lama"
    lm, tok, kind = load_base(str(world_dir / which))
    verbalizer = Verbalizer.from_vocabulary(vocabulary("common", tok, lama)).to_dict()
    out: dict[str, dict[str, list[float]]] = {}
    for rid, rel in load_relations(lama).items():
        facts = {s: load_facts(lama, rid, s) for s in splits}
        out[rid] = {s: [] for s in splits}
        for wording in (*rel.train_templates, rel.template):
            cfg = PromptConfig(template=wording, verbalizer=verbalizer, label_field="object", normalize="vocab",
                               kind=kind)  # type: ignore[arg-type]
            model = PTunedModel(lm, tok, cfg, base_model=str(world_dir / which))
            for s, rec in facts.items():
                out[rid][s].append(rank_eval(model, rec.examples, rec.sources)["p@1"] if rec is not None else 0.0)
    return out


def memorized(world_dir: str | os.PathLike[str], which: Literal["gpt", "bert"], split: str = "test", *,
              wording: Literal["best", "manual"] = "best") -> dict[str, float]:
    """What the world's LM knows: P@1 per relation, predictions restricted to the object vocabulary
    (LAMA's scorer, :func:`ptune.tasks.lama.rank_eval`, with each wording as the template).

    Args:
        world_dir: a folder written by :func:`build_world`.
        which: ``gpt`` (the causal LM) or ``bert`` (the masked LM).
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
