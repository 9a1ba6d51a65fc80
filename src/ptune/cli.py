"""The ``ptune`` command line: train, eval, predict and inspect on a user's own data; the
harnesses and the demo (:mod:`ptune.cli_harness`); generate, export and import
(:mod:`ptune.cli_prompts`); serve (:mod:`ptune.serve`).

Options come from the config dataclasses (:mod:`ptune.options`): a field's name, type,
default and docstring make its flag and help. Every command also takes ``--config FILE``
(JSON, YAML or TOML) whose keys are its options; the command line overrides the file.

Bad input exits with code 2 and one line ``ptune: error: ...`` naming the file, line and
field (or the template column, or the config file and key). With :mod:`ptune.cli_prompts`
and :mod:`ptune.cli_harness`, whose commands it adds, these are the only modules that print.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from . import __version__
from .cli_harness import ENCODER_FLAG, STEPS_OR_EPOCHS
from .cli_harness import add_commands as add_harness_commands
from .cli_prompts import add_commands as add_prompt_commands
from .cli_prompts import subcommand, verbalizer_option
from .config import PromptConfig, TrainConfig
from .distributed import exit_with, is_main, world_size
from .placement import add_arguments as placement_arguments
from .placement import load_placed
from .errors import ConfigError
from .files import dumps_json, write_output
from .guard import guarded, parsed
from .lm import model_reference
from .lock import locks_folder
from .options import CommandOptions, Parser, Resolved
from .serve import add_command as add_serve_command
from .progress import set_quiet

__all__ = ["main", "run", "build_parser"]

EXAMPLES_TRAIN = """examples:
  ptune train --model bert-base-cased --train train.jsonl --dev dev.jsonl \\
      --template '{premise} Question: {hypothesis} ? [P*3] Answer: [MASK] .' \\
      --verbalizer '{"entailment": "Yes", "not_entailment": "No"}' --output runs/rte
  ptune train --model ./my-gpt2 --train data.csv --template '[P*3] {text} [P*3] [MASK]' \\
      --verbalizer labels.json --epochs 5 --output runs/x --finetune-lm
  ptune train --config rte.yaml --lr 3e-3     # the options in a file; the command line overrides it
"""


TEXTS: dict[str, tuple[str, str, str | None]] = {  # command: (help, description, epilog)
    "train": ("P-tune a model on your data",
              "Train a prompt (pseudo tokens + prompt encoder) for a frozen or jointly tuned LM.", EXAMPLES_TRAIN),
    "inspect": ("what a prompt learned: the nearest vocabulary tokens of each pseudo token",
                "Prints, for each pseudo token of a checkpoint, the vocabulary tokens whose input embeddings "
                "are nearest by cosine similarity.", None),
    "bench": ("benchmark ptune against PEFT's P-tuning side by side",
              "Times ptune and PEFT P-tuning alternately on the same frozen random-init model and batch; prints "
              "a table with the ptune/PEFT ratios.", None),
    "eval": ("evaluate a checkpoint on labelled data (JSON metrics)", "", None),
    "predict": ("predict labels with a checkpoint (one JSON line per example)", "", None),
}


def _command(sub: argparse._SubParsersAction, name: str, func: Callable) -> tuple[Any, CommandOptions]:
    """A subcommand (its texts from TEXTS) with ``--config``; add its plain options, then
    ``adopt()`` them and add the config fields."""
    return subcommand(sub, name, func, *TEXTS[name])


DATA_SOURCES = (".jsonl, .csv/.tsv, .parquet or .arrow file, a folder written by Dataset.save_to_disk, or a "
                "hub dataset name[:config]")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p, opts = _command(sub, "train", cmd_train)
    p.add_argument("--model", required=True, help="hub name or local folder of a causal or masked LM")
    p.add_argument("--train", required=True, help=f"training data with named fields: {DATA_SOURCES}")
    p.add_argument("--dev", help="dev data for model selection and early stopping (the same kinds)")
    p.add_argument("--train-split", default="train",
                   help="split of --train where it has several (hub dataset, saved DatasetDict; default train)")
    p.add_argument("--dev-split", default="validation",
                   help="split of --dev where it has several (default validation)")
    p.add_argument("--output", required=True, help="run folder (best/, last/, metrics.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    placement_arguments(p)
    opts.adopt()
    opts.fields(PromptConfig, "prompt", required=("template",), flags=ENCODER_FLAG,
                parse={"verbalizer": verbalizer_option}, notes={"verbalizer": "Inline JSON or a JSON file."})
    opts.fields(TrainConfig, "train")
    opts.exclusive.append(STEPS_OR_EPOCHS)


def _add_eval(sub: argparse._SubParsersAction, name: str, func: Callable) -> None:
    p, opts = _command(sub, name, func)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (or run folder: its best/)")
    p.add_argument("--data", required=True, help=DATA_SOURCES)
    p.add_argument("--split", help="split of --data where it has several (hub dataset, saved DatasetDict)")
    p.add_argument("--output", help="file to write (default or -: standard output)")
    p.add_argument("--model", help="base model to load the prompt onto (default: the recorded one)")
    opts.adopt()
    opts.fields(TrainConfig, "train", only=("eval_batch_size",), flags={"eval_batch_size": ("--batch-size",)})


def _add_inspect_and_bench(sub: argparse._SubParsersAction) -> None:
    from .bench import add_arguments

    ins, opts = _command(sub, "inspect", cmd_inspect)
    ins.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    ins.add_argument("--model", help="load the prompt onto this copy of the base model")
    ins.add_argument("--top", type=int, default=5, help="tokens per pseudo token (default 5)")
    opts.adopt()
    bench, opts = _command(sub, "bench", cmd_bench)
    add_arguments(bench)
    opts.adopt()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ptune",
        description="P-tuning for Hugging Face causal and masked language models. Every command also takes "
                    "--config FILE (JSON, YAML or TOML): its keys are the command's options.",
    )
    parser.add_argument("--version", action="version", version=f"ptune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or progress lines (also: PTUNE_QUIET=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_eval(sub, "eval", cmd_eval)
    _add_eval(sub, "predict", cmd_predict)
    add_harness_commands(sub)
    _add_inspect_and_bench(sub)
    add_prompt_commands(sub)
    add_serve_command(sub)
    return parser


# ----------------------------------------------------------------------------- commands
@locks_folder(lambda o: o["output"])
def cmd_train(o: Resolved) -> int:
    from accelerate.utils import set_seed

    from .data import read_examples
    from .model import PTunedModel
    from .runfolder import check_resume
    from .template import Template
    from .trainer import train

    with o.blame():
        train_cfg = TrainConfig(**o.section("train"))
        prompt_cfg = PromptConfig(**o.section("prompt"))
    Template.parse(prompt_cfg.template)  # template errors before loading any model
    if o["resume"]:
        check_resume(Path(o["output"]), prompt_cfg)
    train_data = read_examples(o["train"], split=o["train_split"])
    dev_data = read_examples(o["dev"], split=o["dev_split"]) if o.get("dev") else None
    set_seed(train_cfg.seed)
    lm, tokenizer, kind = load_placed(o, prompt_cfg.kind, processes=world_size())
    model = PTunedModel(lm, tokenizer, PromptConfig(**{**prompt_cfg.to_dict(), "kind": kind}),
                        base_model=model_reference(o["model"]), seed=train_cfg.seed)
    train_items = model.prepare(train_data.examples, train_data.sources, require_labels=True)
    dev_items = model.prepare(dev_data.examples, dev_data.sources, require_labels=True) if dev_data else None
    result = train(model, train_items, dev_items, train_cfg, o["output"], resume=o["resume"])
    summary = {
        "output": str(result.output_dir),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "best_step": result.best_step,
        "best": result.best_metrics,
    }
    if is_main():  # once, also under torchrun / accelerate launch
        print(dumps_json(summary))
    return 0


def cmd_bench(o: Resolved) -> int:
    from .bench import run_from_args

    return run_from_args(argparse.Namespace(**o.values))


def _load(o: Resolved):
    from .checkpoint import load_checkpoint
    from .data import read_examples

    records = read_examples(o["data"], split=o.get("split"))
    model = load_checkpoint(o["checkpoint"], o.get("model"))
    return model, records


def _eval_batch_size(o: Resolved) -> int:
    with o.blame():
        return TrainConfig(**o.section("train")).eval_batch_size


def cmd_inspect(o: Resolved) -> int:
    from .checkpoint import load_checkpoint

    from .tasks.autoprompt import prompt_in_words, trigger_ids

    if o["top"] < 1:
        raise ConfigError("--top", f"must be a positive integer, got {o['top']}")
    model = load_checkpoint(o["checkpoint"], o.get("model"))
    rows = model.nearest_tokens(o["top"])
    sys.stdout.write(f"template: {model.config.template}\n")
    ids = trigger_ids(model)
    if ids is not None:  # every pseudo token is exactly a vocabulary token (an AutoPrompt prompt)
        words = [model.tokenizer.decode([i]).strip() for i in ids]
        sys.stdout.write(f"discrete prompt: {prompt_in_words(model.config.template, words)}\n"
                         f"tokens: {' '.join(model.tokenizer.convert_ids_to_tokens(ids))}\n")
    if not rows:
        sys.stdout.write("no pseudo tokens\n")
    for i, row in enumerate(rows):
        sys.stdout.write(f"P{i + 1}: " + "  ".join(f"{t} ({v:.2f})" for t, v in row) + "\n")
    return 0


def cmd_eval(o: Resolved) -> int:
    from .evaluation import evaluate

    model, records = _load(o)
    items = model.prepare(records.examples, records.sources, require_labels=True)
    metrics = evaluate(model, items, batch_size=_eval_batch_size(o), progress=True)
    metrics = {"data": str(o["data"]), "checkpoint": str(o["checkpoint"]), **metrics}
    line = dumps_json(metrics) + "\n"
    write_output(None, line)
    if o.get("output") not in (None, "-"):
        write_output(o["output"], line)
    return 0


def cmd_predict(o: Resolved) -> int:
    """Predictions streamed: the input is read, predicted and written a chunk at a time."""
    import itertools

    from .checkpoint import load_checkpoint
    from .data import count_rows, iter_examples
    from .errors import DataError
    from .files import write_jsonl_atomic
    from .inference import iter_predictions
    from .model import prediction_record
    from .progress import Progress

    pairs = iter_examples(o["data"], split=o.get("split"))
    first = next(pairs, None)  # a bad source fails before the model loads
    if first is None:
        raise DataError(str(o["data"]), "no examples")
    model = load_checkpoint(o["checkpoint"], o.get("model"))
    preds = iter_predictions(model, itertools.chain([first], pairs), _eval_batch_size(o))
    with Progress(count_rows(o["data"]), "predict", "row") as bar:
        rows = (_prediction_row(ex, src, p, bar, prediction_record) for ex, src, p in preds)
        if o.get("output") not in (None, "-"):
            write_jsonl_atomic(o["output"], rows)
        else:
            for row in rows:
                sys.stdout.write(dumps_json(row) + "\n")
    return 0


def _prediction_row(ex: dict[str, Any], src: str, p: dict[str, Any], bar: Any, record: Callable) -> dict[str, Any]:
    bar.update()
    row = {"source": src, **record(p)}
    return {"idx": ex["idx"], **row} if "idx" in ex else row


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ptune`` command."""
    args = parsed(build_parser(), argv)
    if isinstance(args, int):
        return args  # a usage error, said in one line
    if args.quiet:
        set_quiet(True)
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
    return guarded(lambda: _run(args), verbose=args.verbose)


def run() -> NoReturn:
    """The ``ptune`` executable: :func:`main`, then the process ends with its exit code (under
    ``accelerate launch`` / ``torchrun`` without a teardown that can abort:
    :func:`ptune.distributed.exit_with`)."""
    exit_with(main)


def _run(args: argparse.Namespace) -> int:
    from .lm import remote_code

    options = args._options.resolve(args)
    with remote_code(bool(options.get("trust_remote_code"))):
        return int(args.func(options))


if __name__ == "__main__":  # pragma: no cover
    run()
