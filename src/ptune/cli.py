"""The ``ptune`` command line: train, eval and predict on a user's own data.

Bad input exits with code 2 and one line ``ptune: error: ...`` naming the file, line and
field (or the template column); this is the only module that prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .config import COMPILE_MODES
from .errors import PtuneError

__all__ = ["main", "build_parser"]

EXAMPLES_TRAIN = """examples:
  ptune train --model bert-base-cased --train train.jsonl --dev dev.jsonl \\
      --template '{premise} Question: {hypothesis} ? [P*3] Answer: [MASK] .' \\
      --verbalizer '{"entailment": "Yes", "not_entailment": "No"}' --output runs/rte
  ptune train --model ./my-gpt2 --train data.csv --template '[P*3] {text} [P*3] [MASK]' \\
      --verbalizer labels.json --epochs 5 --output runs/x --finetune-lm
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="P-tune a model on your data", epilog=EXAMPLES_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a prompt (pseudo tokens + prompt encoder) for a frozen or jointly tuned LM.",
    )
    p.add_argument("--model", required=True, help="hub name or local folder of a causal or masked LM")
    p.add_argument("--train", required=True, help="training data: .jsonl or .csv with named fields")
    p.add_argument("--dev", help="dev data for model selection and early stopping")
    p.add_argument("--template", required=True, help="template text, e.g. '[P*3] {text} [P*3] [MASK]'")
    p.add_argument("--verbalizer", required=True, help='inline JSON {"label": "word"} or a JSON file')
    p.add_argument("--output", required=True, help="run folder (best/, last/, metrics.jsonl)")
    p.add_argument("--encoder", choices=["lstm", "mlp", "none"], default="lstm", help="prompt encoder (default: lstm, the paper's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="optimizer steps")
    g.add_argument("--epochs", type=int, help="passes over the training data (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="prompt-encoder learning rate (default 1e-3)")
    p.add_argument("--lm-lr", type=float, default=1e-5, help="LM learning rate with --finetune-lm (default 1e-5)")
    p.add_argument("--batch-size", type=int, default=8, help="global batch size (default 8)")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--finetune-lm", action="store_true", help="tune the LM jointly with the prompt")
    p.add_argument("--schedule", choices=["linear", "exponential", "constant"], default="linear")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--eval-every", type=int, help="evaluate on dev every N steps (default: each epoch)")
    p.add_argument("--patience", type=int, help="early stopping: evaluations without improvement (a metric tie with a lower dev loss counts as one)")
    p.add_argument("--label-field", default="label", help="field holding the label (default: label)")
    p.add_argument("--max-length", type=int, help="longest input in tokens")
    p.add_argument("--kind", choices=["masked", "causal"], help="override the model kind")
    p.add_argument("--normalize", choices=["labels", "vocab"], default="labels",
                   help="loss over the labels (default) or LM cross-entropy over the vocabulary")
    p.add_argument("--length-norm", choices=["sum", "mean"], default="sum",
                   help="multi-token words: sum (default) or mean of token log-probabilities")
    p.add_argument("--multi-token", choices=["parallel", "iterative"], default="parallel",
                   help="masked LMs, multi-token words at evaluation: all masks in one pass (default) or PET's "
                        "one-at-a-time filling")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no", help="autocast on GPU")
    p.add_argument("--compile", nargs="?", const=True, default=False, choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the LM (fewer kernel launches on a GPU); MODE reduce-overhead adds CUDA "
                        "graphs, also: " + ", ".join(m for m in COMPILE_MODES if m != "reduce-overhead"))
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.set_defaults(func=cmd_train)


def _add_eval(sub: argparse._SubParsersAction, name: str, func: Callable, helptext: str) -> None:
    p = sub.add_parser(name, help=helptext, description=helptext)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (or run folder: its best/)")
    p.add_argument("--data", required=True, help=".jsonl or .csv file")
    p.add_argument("--output", help="file to write (default: standard output only)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model", help="base model to load the prompt onto (default: the recorded one)")
    p.set_defaults(func=func)


def _add_probe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe", help="LAMA knowledge probing of a frozen LM",
        description="Probe a frozen LM on LAMA relations with manual prompts, P-tuning and more; "
                    "writes results.json, results.md, p_at_1.png and one prompt checkpoint per relation. "
                    "Resumable: finished relations are skipped.",
        epilog="example:\n  ptune probe --model bert-base-cased --data-dir data/LAMA --relations P19,P36 "
               "--methods manual,ptuning --vocab common --output runs/lama",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="hub name or local folder")
    p.add_argument("--data-dir", required=True, help="LAMA folder: relations.jsonl, fact-retrieval/, vocab files")
    p.add_argument("--relations", default="all", help="comma-separated relation ids, or all (default)")
    p.add_argument("--methods", default="manual,ptuning", help="comma-separated: manual, ptuning, hybrid, oracle, majority")
    p.add_argument("--vocab", choices=["common", "original", "29k"], default="common", help="candidate vocabulary")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--template", help="P-tuning template (default: [P*3] [X] [P*3] [MASK] [P*3], causal without the last block)")
    p.add_argument("--encoder", choices=["lstm", "mlp", "none"], default="lstm")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patience", type=int, default=8, help="epochs without dev P@1 improvement before stopping (a tie with a lower dev loss counts as one)")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_probe)


def _add_superglue(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "superglue", help="SuperGLUE / FewGLUE: P-tuning, manual prompts or fine-tuning on the eight tasks",
        description="Train and evaluate on SuperGLUE tasks (BoolQ CB COPA MultiRC ReCoRD RTE WiC WSC) with the "
                    "paper's patterns; writes results.json, results.md and predictions/<Task>.jsonl. "
                    "Resumable: finished (task, seed) runs are skipped.",
        epilog="examples:\n  ptune superglue --task RTE --model albert-xxlarge-v2 --data-dir FewGLUE_32dev "
               "--seeds 1,2,3 --output runs/rte\n  ptune superglue --task all --model bert-base-cased --data-dir "
               "FewGLUE_32dev --method manual --frozen --output runs/zero-shot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, help="a task name, a comma-separated list, or all")
    p.add_argument("--model", required=True, help="hub name or local folder")
    p.add_argument("--data-dir", required=True, help="folder with <Task>/{train,dev32,val}.jsonl")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--setting", choices=["fewshot", "full"], default="fewshot")
    p.add_argument("--method", choices=["ptuning", "manual", "finetune"], default="ptuning")
    p.add_argument("--seeds", default="42", help="comma-separated seeds (default 42); mean and std over them")
    p.add_argument("--pattern", help="a pattern name of the task (p1, p2, ...) or a template text")
    p.add_argument("--encoder", choices=["lstm", "mlp", "none"], default="lstm")
    p.add_argument("--frozen", action="store_true", help="keep the LM frozen (default: tuned jointly, as the paper)")
    p.add_argument("--max-steps", type=int, help="training steps (default: the paper's per task)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="prompt encoder / head lr (default: the paper's per task; 1e-3 frozen)")
    p.add_argument("--lm-lr", type=float, default=1e-5)
    p.add_argument("--eval-every", type=int, default=20, help="steps between dev32 evaluations (default 20)")
    p.add_argument("--patience", type=int, default=10, help="evaluations without improvement before stopping")
    p.add_argument("--max-length", type=int, help="input tokens (default: the paper's per task)")
    p.add_argument("--length-norm", choices=["sum", "mean"], default="sum",
                   help="multi-token candidates: sum or mean of token log-probs")
    p.add_argument("--multi-token", choices=["parallel", "iterative"], default="parallel",
                   help="masked LMs, multi-token candidates at evaluation: all masks in one pass, or PET's "
                        "one-at-a-time filling")
    p.add_argument("--limit-eval", type=int, help="evaluate on at most N val examples (quick runs)")
    p.add_argument("--skip-invalid", action="store_true", help="skip bad examples (their count is reported)")
    p.add_argument("--save-checkpoints", action="store_true", help="keep a serving checkpoint per (task, seed)")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no", help="autocast on GPU")
    p.set_defaults(func=cmd_superglue)


def _add_demo_and_world(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the offline demo: P-tuning vs manual prompts on ptune's world LMs",
        description="Probe the causal and masked LMs of ptune's synthetic world with manual prompts, "
                    "the oracle wording, P-tuning and a random-LM control; prints the table. The world is "
                    "built once (a few minutes) and cached in $PTUNE_CACHE (default .cache/ptune).",
    )
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--world", help="world folder (default: the cached one, built if missing)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    world = sub.add_parser("world", help="build ptune's synthetic knowledge world",
                           description="Build a synthetic knowledge base, its corpus and tokenizer, and pretrain "
                                       "a small causal and a small masked LM on it (CPU, seeded).")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="COMMAND")
    b = wsub.add_parser("build", help="generate the world and pretrain its LMs",
                        description="Writes lama/ (LAMA formats), gpt/, bert/ and world.json to --output.")
    b.add_argument("--output", required=True, help="folder to create")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--preset", choices=["tiny", "mini"], default="tiny", help="tiny (default, the demo's) or mini (seconds)")
    b.set_defaults(func=cmd_world_build)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptune",
        description="P-tuning for Hugging Face causal and masked language models.",
    )
    parser.add_argument("--version", action="version", version=f"ptune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_eval(sub, "eval", cmd_eval, "evaluate a checkpoint on labelled data (JSON metrics)")
    _add_eval(sub, "predict", cmd_predict, "predict labels with a checkpoint (one JSON line per example)")
    ins = sub.add_parser("inspect", help="what a prompt learned: the nearest vocabulary tokens of each pseudo token",
                         description="Prints, for each pseudo token of a checkpoint, the vocabulary tokens whose "
                                     "input embeddings are nearest by cosine similarity.")
    ins.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    ins.add_argument("--model", help="load the prompt onto this copy of the base model")
    ins.add_argument("--top", type=int, default=5, help="tokens per pseudo token (default 5)")
    ins.set_defaults(func=cmd_inspect)
    _add_probe(sub)
    _add_superglue(sub)
    _add_demo_and_world(sub)
    from .bench import add_arguments

    bench = sub.add_parser("bench", help="benchmark ptune against PEFT's P-tuning side by side",
                           description="Times ptune and PEFT P-tuning alternately on the same frozen random-init "
                                       "model and batch; prints a table with the ptune/PEFT ratios.")
    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


# ----------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from accelerate.utils import set_seed

    from .config import PromptConfig, TrainConfig
    from .data import read_examples
    from .encoder import EncoderConfig
    from .model import PTunedModel, load_base
    from .trainer import train
    from .verbalizer import Verbalizer

    verbalizer = Verbalizer.from_json(args.verbalizer)
    train_cfg = TrainConfig(
        steps=args.steps, epochs=args.epochs, lr=args.lr, lm_lr=args.lm_lr, batch_size=args.batch_size,
        grad_accum=args.grad_accum, seed=args.seed, finetune_lm=args.finetune_lm, schedule=args.schedule,
        warmup_steps=args.warmup_steps, eval_every=args.eval_every, patience=args.patience,
        mixed_precision=args.mixed_precision, compile=args.compile,
    )
    prompt_cfg = PromptConfig(
        template=args.template, verbalizer=verbalizer.to_dict(), encoder=EncoderConfig(type=args.encoder),
        label_field=args.label_field, max_length=args.max_length, kind=args.kind,
        normalize=args.normalize, length_norm=args.length_norm, multi_token=args.multi_token,
    )
    from .template import Template

    Template.parse(args.template)  # template errors before loading any model
    if args.resume:
        _check_resume(Path(args.output), prompt_cfg)
    train_data = read_examples(args.train)
    dev_data = read_examples(args.dev) if args.dev else None
    set_seed(args.seed)
    lm, tokenizer, kind = load_base(args.model, args.kind)
    model = PTunedModel(lm, tokenizer, PromptConfig(**{**prompt_cfg.to_dict(), "kind": kind}), base_model=args.model,
                        seed=args.seed)
    train_items = model.prepare(train_data.examples, train_data.sources, require_labels=True)
    dev_items = model.prepare(dev_data.examples, dev_data.sources, require_labels=True) if dev_data else None
    result = train(model, train_items, dev_items, train_cfg, args.output, resume=args.resume)
    summary = {
        "output": str(result.output_dir),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "best_step": result.best_step,
        "best": result.best_metrics,
    }
    if int(os.environ.get("RANK", "0")) == 0:  # once, also under torchrun / accelerate launch
        print(json.dumps(summary))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .model import load_base
    from .tasks.lama import ProbeConfig, markdown_table, probe

    relations = None if args.relations == "all" else tuple(r.strip() for r in args.relations.split(",") if r.strip())
    config = ProbeConfig(
        relations=relations, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        vocab=args.vocab, template=args.template, encoder=args.encoder,
        train=TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=5e-4,
                          schedule="exponential", gamma=0.98, patience=args.patience, seed=args.seed),
    )
    if not (Path(args.data_dir) / "relations.jsonl").is_file():
        from .errors import DataError

        raise DataError(str(Path(args.data_dir) / "relations.jsonl"), "no such file (is --data-dir a LAMA folder?)")
    lm, tokenizer, _ = load_base(args.model)
    results = probe(lm, tokenizer, args.data_dir, args.output, config, model_name=args.model, progress=sys.stderr.isatty())
    sys.stdout.write(markdown_table(results, config.methods))
    return 0


def cmd_superglue(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .tasks.superglue import SuperGlueConfig, markdown_table, run_superglue
    from .tasks.superglue_data import TASKS

    tasks = TASKS if args.task.strip().lower() == "all" else tuple(t.strip() for t in args.task.split(",") if t.strip())
    try:
        seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
    except ValueError:
        raise ConfigError("--seeds", f"{args.seeds!r} is not a comma-separated list of integers") from None
    config = SuperGlueConfig(
        tasks=tasks, method=args.method, setting=args.setting, seeds=seeds, pattern=args.pattern,
        encoder=args.encoder, frozen=args.frozen, steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        lm_lr=args.lm_lr, eval_every=args.eval_every, patience=args.patience, max_length=args.max_length,
        length_norm=args.length_norm, multi_token=args.multi_token, limit_eval=args.limit_eval, skip_invalid=args.skip_invalid,
        save_checkpoints=args.save_checkpoints, mixed_precision=args.mixed_precision,
    )
    if not Path(args.data_dir).is_dir():
        raise ConfigError("--data-dir", f"{args.data_dir}: no such folder")
    results = run_superglue(args.model, args.data_dir, args.output, config, progress=sys.stderr.isatty())
    sys.stdout.write(markdown_table(results))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_from_args

    return run_from_args(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import format_summary, run_demo

    summary = run_demo(args.output, world_dir=args.world, seed=args.seed, progress=sys.stderr.isatty())
    sys.stdout.write(format_summary(summary))
    sys.stdout.write(f"results: {args.output}/summary.md, {args.output}/p_at_1.png, {args.output}/<model>/results.json\n")
    return 0


def cmd_world_build(args: argparse.Namespace) -> int:
    import dataclasses

    from .errors import ConfigError
    from .world import WorldConfig, build_world

    if Path(args.output).exists() and any(Path(args.output).iterdir()):
        raise ConfigError("--output", f"{args.output} exists and is not empty")
    preset = WorldConfig.tiny() if args.preset == "tiny" else WorldConfig.mini()
    meta = build_world(args.output, dataclasses.replace(preset, seed=args.seed), progress=sys.stderr.isatty())
    print(json.dumps({"output": args.output, **{k: meta[k] for k in ("timings", "memorized") if k in meta}}))
    return 0


def _check_resume(out: Path, wanted: Any) -> None:
    """A resumed run must be asked for with the prompt it was started with."""
    from .checkpoint import read_meta
    from .errors import ConfigError

    if not (out / "last").is_dir():
        raise ConfigError("--resume", f"{out} holds no run to resume (no last/)")
    saved = read_meta(out / "last")["prompt"]
    now = wanted.to_dict()
    diff = [f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in now if k != "kind" and now[k] != saved.get(k)]
    if diff:
        raise ConfigError("--resume", f"the run in {out} was started with {', '.join(diff)}")


def _load(args: argparse.Namespace):
    from .checkpoint import load_checkpoint
    from .data import read_examples

    records = read_examples(args.data)
    model = load_checkpoint(args.checkpoint, args.model)
    return model, records


def cmd_inspect(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint

    model = load_checkpoint(args.checkpoint, args.model)
    rows = model.nearest_tokens(args.top)
    sys.stdout.write(f"template: {model.config.template}\n")
    if not rows:
        sys.stdout.write("no pseudo tokens\n")
    for i, row in enumerate(rows):
        sys.stdout.write(f"P{i + 1}: " + "  ".join(f"{t} ({v:.2f})" for t, v in row) + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .trainer import evaluate

    model, records = _load(args)
    items = model.prepare(records.examples, records.sources, require_labels=True)
    metrics = evaluate(model, items, batch_size=args.batch_size)
    metrics = {"data": str(args.data), "checkpoint": str(args.checkpoint), **metrics}
    line = json.dumps(metrics)
    print(line)
    if args.output:
        _write_text(args.output, line + "\n")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model, records = _load(args)
    items = model.prepare(records.examples, records.sources)
    preds = model.predict(items, batch_size=args.batch_size)
    lines = []
    for src, ex, p in zip(records.sources, records.examples, preds):
        if isinstance(p["scores"], dict):
            row = {"source": src, "label": p["label"], "scores": _top(p["scores"])}
        else:  # per-example candidates: the best one's text and index, a probability per candidate
            row = {"source": src, "label": p["label"], "index": p["index"],
                   "scores": [round(v, 6) for v in p["scores"]]}
        if "idx" in ex:
            row = {"idx": ex["idx"], **row}
        lines.append(json.dumps(row))
    text = "\n".join(lines) + "\n"
    if args.output:
        _write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _top(scores: dict[str, float], k: int = 20) -> dict[str, float]:
    if len(scores) <= k:
        return {label: round(v, 6) for label, v in scores.items()}
    best = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
    return {label: round(v, 6) for label, v in best}


def _write_text(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ptune`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
    try:
        return int(args.func(args))
    except PtuneError as e:
        print(f"ptune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
