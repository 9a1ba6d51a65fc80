"""The commands that use a trained prompt beyond scoring labels: ``ptune generate`` (open-ended
text from a causal LM), ``ptune export`` (a PEFT adapter, or the pseudo-token embeddings for a
serving engine) and ``ptune import`` (a PEFT prompt-learning adapter as a ptune checkpoint).

:mod:`ptune.cli` adds them to the ``ptune`` command (:func:`add_commands`); like it, they
print their results and turn ptune's errors into one line and exit code 2.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from .config import GenerateConfig, PromptConfig, TrainConfig
from .errors import ConfigError
from .files import dumps_json, write_output
from .options import CommandOptions, Resolved

__all__ = ["add_commands", "subcommand", "verbalizer_option"]

EXAMPLES_EXPORT = """examples:
  ptune export --checkpoint runs/sst --format peft --output exports/sst-peft
  ptune export --checkpoint runs/sst --format embeddings --output exports/sst-embeddings
"""
EXAMPLES_IMPORT = """example:
  ptune import --peft adapters/imdb --model gpt2 --template '{text}[MASK]' \\
      --verbalizer '{"pos": " good", "neg": " bad"}' --output runs/imdb-from-peft
"""
EXAMPLES_GENERATE = """examples:
  ptune generate --checkpoint runs/x --text 'the plot was' --max-new-tokens 20
  ptune generate --checkpoint runs/x --data inputs.jsonl --do-sample --temperature 0.8 --top-p 0.9 \\
      --seed 0 --stop . --output texts.jsonl
"""


def subcommand(sub: argparse._SubParsersAction, name: str, func: Callable[[Resolved], int], helptext: str,
               description: str = "", epilog: str | None = None) -> tuple[argparse.ArgumentParser, CommandOptions]:
    """A ``ptune`` subcommand (``--config`` included) that runs ``func``; add its plain
    options, then ``adopt()`` them and add the config fields."""
    p = sub.add_parser(name, help=helptext, description=description or helptext, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p, CommandOptions(p)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``generate``, ``export`` and ``import`` to the ``ptune`` command's subcommands."""
    p, opts = subcommand(sub, "generate", cmd_generate, "open-ended text from a causal LM with a trained prompt "
                      "(one JSON line per input)",
                      "A causal LM continues each input at the template's answer slot, the pseudo tokens spliced in "
                      "wherever the template puts them; greedy or sampled, with stop strings.", EXAMPLES_GENERATE)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (or run folder: its best/)")
    p.add_argument("--data", help="inputs with the template's fields: a file, a saved datasets folder or a hub "
                                  "dataset (see docs/data.md)")
    p.add_argument("--split", help="split of --data where it has several (hub dataset, saved DatasetDict)")
    p.add_argument("--text", help="one input: the value of the template's only field")
    p.add_argument("--output", help="JSON lines file to write (default: standard output)")
    p.add_argument("--model", help="base model to load the prompt onto (default: the recorded one)")
    opts.adopt()
    opts.fields(GenerateConfig, "generate", title="GenerateConfig options")
    opts.fields(TrainConfig, "train", only=("eval_batch_size",), flags={"eval_batch_size": ("--batch-size",)},
                defaults={"eval_batch_size": 16})
    _add_export_and_import(sub)


def _add_export_and_import(sub: argparse._SubParsersAction) -> None:
    from .export import FORMATS

    p, opts = subcommand(sub, "export", cmd_export, "write a prompt as a PEFT adapter or as embeddings for a serving "
                      "engine", "peft: a PEFT PROMPT_TUNING adapter folder (causal LMs; pseudo tokens before the "
                      "input). embeddings: the pseudo-token embeddings (safetensors) with the template and verbalizer "
                      "as JSON, any layout. Both write a model card (README.md).", EXAMPLES_EXPORT)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (or run folder: its best/)")
    p.add_argument("--format", required=True, choices=FORMATS, help="peft or embeddings")
    p.add_argument("--output", required=True, help="folder to write (replaced if it exists)")
    p.add_argument("--model", help="base model to load the prompt onto (default: the recorded one)")
    opts.adopt()
    p, opts = subcommand(sub, "import", cmd_import, "make a ptune checkpoint of a PEFT prompt-tuning or P-tuning "
                      "adapter", "A PEFT PROMPT_TUNING or P_TUNING adapter of a causal LM becomes a checkpoint whose "
                      "pseudo tokens (encoder none) precede --template; it evaluates, predicts and trains on.",
                      EXAMPLES_IMPORT)
    p.add_argument("--peft", required=True, help="the PEFT adapter folder")
    p.add_argument("--output", required=True, help="checkpoint folder to write")
    p.add_argument("--model", help="base model (default: the adapter's base_model_name_or_path)")
    opts.adopt()
    opts.fields(PromptConfig, "prompt", skip=("encoder", "kind", "padding_side"), required=("template",),
                parse={"verbalizer": verbalizer_option, "template": str}, notes={
                    "template": "The input after the adapter's pseudo tokens, without pseudo tokens, e.g. "
                                "'{text}[MASK]'; a leading space is kept (the first word is then spelled after a "
                                "space, as after a word).",
                    "verbalizer": "Inline JSON or a JSON file."}, title="PromptConfig options of the imported prompt")


def verbalizer_option(text: str) -> dict[str, list[str]]:
    """A ``--verbalizer`` value: inline JSON or a JSON file."""
    from .verbalizer import Verbalizer

    return Verbalizer.from_json(text).to_dict()


def _inputs(o: Resolved, model: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The examples of ``--data`` or the one of ``--text``, with their sources."""
    from .data import read_examples

    if (o.get("data") is None) == (o.get("text") is None):
        raise ConfigError("--data", "give --data FILE or --text TEXT (one of them)")
    if o.get("data") is not None:
        records = read_examples(o["data"], split=o.get("split"))
        return records.examples, records.sources
    fields = model.template.fields
    if len(fields) != 1:
        raise ConfigError("--text", f"fills the template's only field, but it reads {', '.join(fields) or 'none'}; "
                                    "give the fields in a --data file")
    return [{fields[0]: o["text"]}], ["--text"]


def cmd_generate(o: Resolved) -> int:
    from .checkpoint import load_checkpoint

    with o.blame():
        config = GenerateConfig(**o.section("generate"))
        batch_size = TrainConfig(**o.section("train")).eval_batch_size
    model = load_checkpoint(o["checkpoint"], o.get("model"))
    examples, sources = _inputs(o, model)
    items = model.prepare(examples, sources)
    rows = model.generate_text(items, config, batch_size=batch_size, progress=True)
    lines = []
    for src, ex, row in zip(sources, examples, rows):
        line = {"source": src, "text": row["text"], "finish_reason": row["finish_reason"]}
        lines.append(dumps_json({"idx": ex["idx"], **line} if "idx" in ex else line))
    write_output(o.get("output"), "\n".join(lines) + "\n")
    return 0

def cmd_export(o: Resolved) -> int:
    from .export import export_checkpoint

    notes = export_checkpoint(o["checkpoint"], o["format"], o["output"], o.get("model"))
    print(dumps_json({"output": o["output"], "format": o["format"], "notes": notes}))
    return 0


def cmd_import(o: Resolved) -> int:
    from .card import RunFacts
    from .checkpoint import save_checkpoint
    from .export import import_peft

    section = o.section("prompt")
    with o.blame():
        PromptConfig(**section)  # bad values fail before any model is loaded
    model, notes = import_peft(o["peft"], base=o.get("model"), **section)
    save_checkpoint(model, o["output"], facts=RunFacts(notes=tuple(notes)))
    print(dumps_json({"output": o["output"], "template": model.config.template, "notes": notes}))
    return 0
