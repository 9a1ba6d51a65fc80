"""``ptune bench``: ptune and PEFT's P-tuning side by side on the same frozen model.

Three sides get the same random-init model of a named size (config only, no download),
the same batch of real tokens, the same number of pseudo tokens and the same
prompt-encoder type; steps alternate between them after a warm-up, so all see the same
machine state:

* ``ptune`` with its defaults;
* ``peft``: PEFT's ``PromptEncoderConfig`` as documented (the LM in train mode,
  full-vocabulary logits at every position, the loss over the whole vocabulary);
* ``peft-careful``: PEFT as a careful user runs it (the frozen LM in eval mode,
  ``logits_to_keep=1`` for causal LMs, the loss over the candidate words only).

PEFT has no masked-LM task type: masked LMs are wrapped with its ``FEATURE_EXTRACTION``
task type and the loss is taken at the mask position by hand.

Reported for each side: training and eval samples/s, median step time and its spread
(10th–90th percentile), peak GPU memory, trainable parameters and useful TFLOP/s
(frozen training ≈ 4 × non-embedding parameters × tokens per sample; eval ≈ 2 ×), and,
given the device's peak (``--peak-tflops``), that as a percentage of it.

Example:
    python -m ptune.bench --arch gpt2-small --encoder mlp --batch 8 --device cpu
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .config import COMPILE_MODES, PromptConfig
from .encoder import EncoderConfig
from .lm import KINDS
from .model import Item, PTunedModel

__all__ = ["ARCHS", "random_model", "run_bench", "main"]

SIDES = ("ptune", "peft", "peft-careful")
"""ptune; PEFT as documented; PEFT as a careful user runs it."""
SIDE_NAMES = {"peft": "as documented", "peft-careful": "careful use"}

ARCHS: dict[str, dict[str, Any]] = {
    "tiny": dict(family="gpt2", n_layer=2, n_embd=64, n_head=2, vocab_size=1000),
    "gpt2-small": dict(family="gpt2", n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
    "gpt2-medium": dict(family="gpt2", n_layer=24, n_embd=1024, n_head=16, vocab_size=50257),
    "bert-tiny": dict(family="bert", num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                      intermediate_size=128, vocab_size=1000),
    "bert-base": dict(family="bert", num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                      intermediate_size=3072, vocab_size=28996),
    "bert-large": dict(family="bert", num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                       intermediate_size=4096, vocab_size=28996),
    "llama-1b": dict(family="llama", num_hidden_layers=16, hidden_size=2048, num_attention_heads=32,
                     num_key_value_heads=8, intermediate_size=8192, vocab_size=128256),
}


def random_model(arch: str, dtype: torch.dtype = torch.float32) -> tuple[Any, str]:
    """A random-init model of a named size, and its kind."""
    import transformers as tf

    if arch not in ARCHS:
        raise SystemExit(f"ptune bench: unknown --arch {arch!r}; accepted: {', '.join(ARCHS)}")
    spec = dict(ARCHS[arch])
    family = spec.pop("family")
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = tf.GPT2Config(n_positions=512, bos_token_id=None, eos_token_id=None, **spec)
        return tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype), "causal"
    if family == "llama":
        cfg = tf.LlamaConfig(max_position_embeddings=512, **spec)
        return tf.AutoModelForCausalLM.from_config(cfg, dtype=dtype), "causal"
    cfg = tf.BertConfig(max_position_embeddings=512, **spec)
    return tf.AutoModelForMaskedLM.from_config(cfg, dtype=dtype), "masked"


_WORDS = [a + b for a in ("ba", "ko", "mi", "tu", "le", "ra", "si", "no", "pe", "du", "ga", "vo", "zi", "fe", "ju")
          for b in ("ran", "lek", "mot", "sif", "pul", "dor", "vin", "tas", "kem", "bol")]


def _tokenizer(kind: str) -> Any:
    from .tiny import train_tokenizer

    family = "bert" if KINDS[kind].answer_in_input else "gpt2"
    return train_tokenizer(family, [" ".join(_WORDS)] * 5, vocab_size=1200)


@dataclass
class Side:
    """One library's training and eval step on the shared batch."""

    name: str
    train_step: Callable[[], None]
    eval_step: Callable[[], None]
    trainable: int
    model: torch.nn.Module
    loss: Callable[[], torch.Tensor]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _ptune_side(lm: Any, kind: str, ids: torch.Tensor, target: torch.Tensor, encoder: str, n_pseudo: int,
                n_cand: int, device: str, dtype: torch.dtype, layout: str = "around") -> Side:
    from .tasks.lama_vocab import single_token_words

    tok = _tokenizer(kind)
    words = single_token_words(_WORDS, tok, space_before=True)[:n_cand]
    if len(words) < n_cand:
        raise RuntimeError(f"the bench tokenizer has only {len(words)} single-token candidate words")
    a, b = n_pseudo // 3, n_pseudo - 2 * (n_pseudo // 3)
    if KINDS[kind].answer_in_input:  # masked LMs: pseudo tokens after the answer slot too
        template = f"[P*{a}] {{text}} [P*{a}] [MASK] [P*{b}]"
    else:
        template = f"[P*{a}] {{text}} [P*{n_pseudo - a}] [MASK]"
    if layout == "text-first":  # the input, then every pseudo token, then the answer slot
        template = f"{{text}} [P*{n_pseudo}] [MASK]"
    if layout == "pseudo-first":  # PEFT's own layout: every pseudo token before the input
        template = f"[P*{n_pseudo}] {{text}} [MASK]"
    model = PTunedModel(lm, tok, PromptConfig(template=template, verbalizer={w: w for w in words},
                                              encoder=EncoderConfig(type=encoder), max_length=512))
    model.to(device)
    model.encoder.to(torch.float32)
    items = [Item({"text": row.tolist()}, int(t) % n_cand, f"row {i}") for i, (row, t) in enumerate(zip(ids, target))]
    batch = model.collate(items).to(device)
    return _side("ptune", model, model.prompt_parameters(), lambda: model(batch).loss,
                 lambda: model(batch).scores.argmax(-1), device, dtype)


def _peft_side(lm: Any, kind: str, ids: torch.Tensor, target: torch.Tensor, encoder: str, n_pseudo: int,
               n_cand: int, device: str, dtype: torch.dtype, careful: bool = False) -> Side:
    """PEFT's P-tuning as documented (``careful=False``: the LM in train mode, full-vocabulary
    logits at every position, the loss over the whole vocabulary), or as a careful user runs
    it (``careful=True``: the frozen LM in eval mode, ``logits_to_keep=1`` for causal LMs, the
    loss over the candidate words only)."""
    from peft import PromptEncoderConfig, get_peft_model

    hidden = lm.get_input_embeddings().embedding_dim
    masked = KINDS[kind].answer_in_input
    cfg = PromptEncoderConfig(
        task_type="FEATURE_EXTRACTION" if masked else "CAUSAL_LM", num_virtual_tokens=n_pseudo,
        token_dim=hidden, encoder_reparameterization_type="MLP" if encoder == "mlp" else "LSTM",
        encoder_hidden_size=hidden,
    )
    model = get_peft_model(lm, cfg).to(device)
    ids, target = ids.to(device), target.to(device)
    mask = torch.ones_like(ids)
    # the candidate words: n_cand token ids (the documented side's targets are token ids too)
    cand = torch.arange(n_cand, device=device)
    keep = {"logits_to_keep": 1} if careful and not masked else {}
    if masked or careful:  # answer at a [MASK]-like last position, read by hand
        labels = None
    else:
        labels = torch.full_like(ids, -100)
        labels[:, -1] = cand[target]
    params = [p for p in model.parameters() if p.requires_grad]

    def logits() -> torch.Tensor:  # (B, V) at the answer position
        return model(input_ids=ids, attention_mask=mask, **keep).logits[:, -1]

    def loss_of() -> torch.Tensor:
        if careful:
            model.get_base_model().eval()  # the frozen LM without dropout; the prompt encoder trains
            return torch.nn.functional.cross_entropy(logits()[:, cand].float(), target)
        if not masked:
            return model(input_ids=ids, attention_mask=mask, labels=labels).loss
        return torch.nn.functional.cross_entropy(logits().float(), cand[target])

    predict = (lambda: logits()[:, cand].argmax(-1)) if careful else (lambda: logits().argmax(-1))
    return _side("peft-careful" if careful else "peft", model, params, loss_of, predict, device, dtype)


def _side(name: str, model: torch.nn.Module, params: list[torch.nn.Parameter], loss_fn: Callable[[], torch.Tensor],
          predict_fn: Callable[[], Any], device: str, dtype: torch.dtype) -> Side:
    """The same optimizer, autocast and step structure for both libraries."""
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device == "cuda")
    autocast = torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32)

    def train_step() -> None:
        model.train()
        with autocast:
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_step() -> None:
        model.eval()
        with autocast:
            predict_fn()

    return Side(name, train_step, eval_step, sum(p.numel() for p in params), model, loss_fn)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time; ``cpu``: this process's CPU time, which other processes on a
shared machine do not inflate (CPU runs only)."""


def matmul_tflops(device: str = "cuda", dtype: str = "bf16", n: int = 8192, reps: int = 20) -> float:
    """The device's measured dense matmul rate at ``dtype`` (``n``×``n`` products): the
    peak that ``--peak-tflops`` compares with when the datasheet's is not given."""
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(n, n, device=device, dtype=tdtype)
    b = torch.randn(n, n, device=device, dtype=tdtype)
    for _ in range(3):
        a @ b
    seconds = min(_time(lambda: a @ b, device) for _ in range(reps))
    return 2 * n**3 / seconds / 1e12


def _time(fn: Callable[[], None], device: str, clock: Callable[[], float] = time.perf_counter) -> float:
    _sync(device)
    t = clock()
    fn()
    _sync(device)
    return clock() - t


def run_bench(arch: str = "tiny", *, encoder: str = "mlp", batch: int = 8, device: str = "cpu", dtype: str = "fp32",
              steps: int = 10, warmup: int = 2, real_tokens: int = 24, n_pseudo: int = 9, n_candidates: int = 100,
              sides: tuple[str, ...] = SIDES, layout: str = "around",
              compile: bool | str = False, peak_tflops: float | None = None,
              clock: str = "wall") -> list[dict[str, Any]]:
    """Time ptune and PEFT alternately on one frozen model; one result row per side.

    ``layout`` places ptune's pseudo tokens: ``around`` the text (the paper's LAMA shape,
    ``[P*3] {text} [P*6] [MASK]``), ``pseudo-first`` (all before the text, as PEFT has
    them) or ``text-first`` (all after it). With a causal LM, ptune runs the pseudo tokens
    before the text once per batch and, after the text, runs the text without autograd:
    see :func:`ptune.cache.answer_hidden_cached`. PEFT always puts them first.
    ``compile`` compiles the shared LM in place (``torch.compile``; a string is its mode):
    all sides run it. ``peak_tflops``: the device's peak at ``dtype``, for the rows'
    ``*_peak_pct`` (useful TFLOP/s as a percentage of it). ``clock``: a key of
    :data:`CLOCKS` (``cpu`` needs ``device="cpu"``).
    """
    if clock not in CLOCKS or (clock == "cpu" and device != "cpu"):
        raise ValueError(f"clock {clock!r}: wall, or cpu on the CPU")
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    lm, kind = random_model(arch)
    lm.to(device)
    for p in lm.parameters():
        p.requires_grad_(False)
    if compile:
        lm.compile(mode=None if compile is True else compile)
    vocab = lm.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 if vocab > 2000 else 10, vocab, (batch, real_tokens), generator=gen)
    target = torch.randint(0, n_candidates, (batch,), generator=gen)
    built = []
    if "ptune" in sides:
        built.append(_ptune_side(lm, kind, ids, target, encoder, n_pseudo, n_candidates, device, tdtype, layout))
    for name, careful in (("peft", False), ("peft-careful", True)):
        if name in sides:
            built.append(_peft_side(lm, kind, ids, target, encoder, n_pseudo, n_candidates, device, tdtype, careful))
    non_emb = sum(p.numel() for n, p in lm.named_parameters() if "embed" not in n and "wte" not in n and "wpe" not in n)
    times: dict[str, dict[str, list[float]]] = {s.name: {"train": [], "eval": []} for s in built}
    peak: dict[str, int | None] = {}
    for phase in ("train", "eval"):
        for s in built:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for _ in range(warmup):
                (s.train_step if phase == "train" else s.eval_step)()
            if device == "cuda" and phase == "train":
                peak[s.name] = torch.cuda.max_memory_allocated()
        for _ in range(steps):
            for s in built:
                times[s.name][phase].append(_time(s.train_step if phase == "train" else s.eval_step, device,
                                                  CLOCKS[clock]))
    tokens = real_tokens + n_pseudo
    rows = []
    for s in built:
        row: dict[str, Any] = {"side": s.name, "arch": arch, "kind": kind, "encoder": encoder, "batch": batch,
                               "compiled": compile, "clock": clock,
                               "layout": layout if s.name == "ptune" else "pseudo-first",
                               "device": device, "dtype": dtype, "trainable_params": s.trainable,
                               "peak_memory_mb": round(peak[s.name] / 2**20, 1) if peak.get(s.name) else None}
        for phase, flops_per_token in (("train", 4), ("eval", 2)):
            t = sorted(times[s.name][phase])
            med = statistics.median(t)
            row[f"{phase}_step_ms"] = round(1000 * med, 2)
            row[f"{phase}_spread_ms"] = [round(1000 * t[int(0.1 * (len(t) - 1))], 2), round(1000 * t[int(0.9 * (len(t) - 1))], 2)]
            row[f"{phase}_samples_per_s"] = round(batch / med, 2)
            row[f"{phase}_tflops"] = round(flops_per_token * non_emb * tokens * batch / med / 1e12, 3)
            if peak_tflops:
                row[f"{phase}_peak_pct"] = round(100 * row[f"{phase}_tflops"] / peak_tflops, 1)
        if KINDS[kind].answer_in_input and s.name != "ptune":
            row["note"] = ("PEFT has no masked-LM task type: FEATURE_EXTRACTION wrapper, loss at the mask by hand; "
                           "a masked LM takes no logits_to_keep")
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """ptune's samples/s over each PEFT side's: ``{side: {"train": x, "eval": y}}``."""
    by = {r["side"]: r for r in rows}
    if "ptune" not in by:
        return {}
    p = by["ptune"]
    return {side: {phase: p[f"{phase}_samples_per_s"] / by[side][f"{phase}_samples_per_s"]
                   for phase in ("train", "eval")}
            for side in SIDES[1:] if side in by}


def ratio_lines(rows: list[dict[str, Any]]) -> list[str]:
    """``ptune/PEFT (as documented): training 2.05x, eval 2.10x`` and the careful side's line."""
    return [f"ptune/PEFT ({SIDE_NAMES[side]}): training {r['train']:.2f}x, eval {r['eval']:.2f}x"
            for side, r in ratios(rows).items()]


def markdown(rows: list[dict[str, Any]]) -> str:
    """A table of the sides and ptune's ratios to each PEFT side."""
    pct = any("train_peak_pct" in r for r in rows)
    lines = ["| arch | encoder | batch | device | dtype | compiled | side | layout | train samples/s | "
             "eval samples/s | "
             "train step ms (p10–p90) | trainable | train TFLOP/s |" + (" train % of peak |" if pct else ""),
             "|" + "---|" * (14 if pct else 13)]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['encoder']} | {r['batch']} | {r['device']} | {r['dtype']} | "
                     f"{r.get('compiled') or 'no'} | {r['side']} | {r.get('layout', '')} | "
                     f"{r['train_samples_per_s']} | {r['eval_samples_per_s']} | {r['train_step_ms']} "
                     f"({r['train_spread_ms'][0]}–{r['train_spread_ms'][1]}) | {r['trainable_params']:,} | "
                     f"{r['train_tflops']} |" + (f" {r.get('train_peak_pct', '–')} |" if pct else ""))
    lines += [""] + ratio_lines(rows) if ratios(rows) else []
    notes = {r["note"] for r in rows if r.get("note")}
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ptune bench", description="ptune vs PEFT P-tuning, side by side")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def _count(text: str) -> int:
    """A whole number of at least 0 (argparse type)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _positive(text: str) -> int:
    """A whole number of at least 1 (argparse type)."""
    value = _count(text)
    if value < 1:
        raise ValueError(text)
    return value


_count.__name__, _positive.__name__ = "whole number", "positive integer"  # argparse: "invalid positive integer value"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="tiny", choices=list(ARCHS))
    p.add_argument("--encoder", choices=["mlp", "lstm"], default="mlp")
    p.add_argument("--batch", type=_positive, default=8)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=_positive, default=10, help="timed steps per side and phase")
    p.add_argument("--warmup", type=_count, default=2)
    p.add_argument("--layout", choices=["around", "pseudo-first", "text-first"], default="around",
                   help="where ptune's pseudo tokens go: around the text (default), all before it "
                        "(PEFT's layout) or all after it")
    p.add_argument("--compile", nargs="?", const=True, default=False, choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the shared LM (both sides run it); MODE as in ptune train --compile")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="time steps by elapsed time (wall, default) or by this process's CPU time (cpu: on a shared "
                        "CPU machine other processes do not inflate it; --device cpu only)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s at --dtype: the rows then give "
                                                      "useful TFLOP/s as a percentage of it")
    p.add_argument("--json", help="append the result rows as JSON lines to this file")


def run_from_args(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        print("ptune: error: --device cuda but no GPU is available", file=sys.stderr)
        return 2
    rows = run_bench(args.arch, encoder=args.encoder, batch=args.batch, device=args.device, dtype=args.dtype,
                     steps=args.steps, warmup=args.warmup, layout=args.layout, compile=args.compile,
                     peak_tflops=args.peak_tflops, clock=args.clock)
    if args.clock == "cpu" and args.device != "cpu":
        print("ptune: error: --clock cpu times CPU runs only", file=sys.stderr)
        return 2
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        print("ptune: error: --peak-tflops must be positive", file=sys.stderr)
        return 2
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "threads": torch.get_num_threads()}
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    for r in rows:
        r.update(meta)
    if args.json:
        from .files import append_jsonl_atomic

        append_jsonl_atomic(args.json, rows)
    sys.stdout.write(markdown(rows))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
