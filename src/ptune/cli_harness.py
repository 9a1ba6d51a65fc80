"""The harness commands of ``ptune``: ``probe`` (LAMA), ``superglue``, ``demo`` and ``world
build``.

:mod:`ptune.cli` adds them to the ``ptune`` command (:func:`add_commands`); like the other
commands, their options come from the config dataclasses, and under ``accelerate launch`` /
``torchrun`` the harnesses split their units over the processes (:mod:`ptune.distributed`)
while rank 0 alone prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from .cli_prompts import subcommand
from .config import PromptConfig, TrainConfig
from .demo import DemoConfig
from .distributed import UnitsConfig, is_main, world_size
from .errors import ConfigError
from .files import dumps_json
from .lm import model_reference
from .options import CommandOptions, Resolved
from .placement import add_arguments as placement_arguments
from .placement import load_placed
from .tasks.autoprompt import AutoPromptConfig
from .tasks.lama import LAMA_TRAIN, ProbeConfig
from .tasks.lama import TRAIN_FIXED as LAMA_TRAIN_FIXED
from .tasks.mining import MiningConfig
from .tasks.superglue import SUPERGLUE_TRAIN, SuperGlueConfig
from .tasks.superglue import TRAIN_FIXED as SUPERGLUE_TRAIN_FIXED
from .world.spec import WorldConfig

__all__ = ["add_commands", "ENCODER_FLAG", "STEPS_OR_EPOCHS"]

ENCODER_FLAG = {"encoder.type": ("--encoder",)}
STEPS_OR_EPOCHS = ("train.steps", "train.epochs")
UNITS_TITLE = "under accelerate launch / torchrun (not recorded: a folder resumes under any setting)"

TEXTS: dict[str, tuple[str, str, str | None]] = {  # command: (help, description, epilog)
    "probe": ("LAMA knowledge probing of a frozen LM",
              "Probe a frozen LM on LAMA relations with manual prompts, P-tuning and more; writes results.json, "
              "results.md, p_at_1.png and one prompt checkpoint per relation. Resumable: finished relations are "
              "skipped.",
              "example:\n  ptune probe --model bert-base-cased --data-dir data/LAMA --relations P19,P36 "
              "--methods manual,ptuning --vocab common --output runs/lama"),
    "superglue": ("SuperGLUE / FewGLUE: P-tuning, manual prompts or fine-tuning on the eight tasks",
                  "Train and evaluate on SuperGLUE tasks (BoolQ CB COPA MultiRC ReCoRD RTE WiC WSC) with the "
                  "paper's patterns; writes results.json, results.md and predictions/<Task>.jsonl. Resumable: "
                  "finished (task, seed) runs are skipped.",
                  "examples:\n  ptune superglue --task RTE --model albert-xxlarge-v2 --data-dir FewGLUE_32dev "
                  "--seeds 1,2,3 --output runs/rte\n  ptune superglue --task all --model bert-base-cased "
                  "--data-dir FewGLUE_32dev --method manual --frozen --output runs/zero-shot"),
    "demo": ("the offline demo: P-tuning vs manual prompts on ptune's world LMs",
             "Probe the causal and masked LMs of ptune's synthetic world with manual prompts, the oracle wording, "
             "P-tuning and a random-LM control; prints the table. Seed 0 probes the world shipped with ptune "
             "(checked against its sha256 manifest); other seeds build a world once (minutes) and cache it in "
             "$PTUNE_CACHE (default .cache/ptune).", None),
    "world build": ("generate the world and pretrain its LMs",
                    "Writes lama/ (LAMA formats), gpt/, bert/ and world.json to --output. With --check, compares "
                    "the result with the world shipped with ptune: exit 0 when byte-identical, 1 when not.", None),
}


def _command(sub: argparse._SubParsersAction, name: str, func: Callable) -> tuple[Any, CommandOptions]:
    return subcommand(sub, name.split()[-1], func, *TEXTS[name])


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``probe``, ``superglue``, ``demo`` and ``world build`` to the ``ptune`` command's subcommands."""
    _add_probe(sub)
    _add_superglue(sub)
    _add_demo_and_world(sub)


def _harness(sub: argparse._SubParsersAction, name: str, func: Callable, data_help: str,
             placement: bool = False) -> CommandOptions:
    """A harness command: --model, --data-dir and --output, then its config's fields."""
    p, opts = _command(sub, name, func)
    p.add_argument("--model", required=True, help="hub name or local folder")
    p.add_argument("--data-dir", required=True, help=data_help)
    p.add_argument("--output", required=True, help="output folder (a rerun with the same settings resumes it)")
    if placement:
        placement_arguments(p)
    opts.adopt()
    return opts


def _add_probe(sub: argparse._SubParsersAction) -> None:
    opts = _harness(sub, "probe", cmd_probe, "LAMA folder: relations.jsonl, fact-retrieval/, vocab files",
                    placement=True)
    opts.fields(ProbeConfig, skip=("prompt", "train", "autoprompt", "mining"), default_text={"relations": "all"},
                title="probe options")
    opts.fields(PromptConfig, "prompt", only=("template", "encoder", "max_length", "truncation"), flags=ENCODER_FLAG,
                default_text={"template": "[P*3] [X] [P*3] [MASK] [P*3], causal LMs without the last [P*3]"},
                title="PromptConfig options of the trained prompts")
    opts.fields(TrainConfig, "train", skip=LAMA_TRAIN_FIXED, defaults=LAMA_TRAIN.to_dict(),
                title="TrainConfig options of each relation's prompt")
    opts.fields(AutoPromptConfig, "autoprompt", title="autoprompt options (its rounds follow the TrainConfig options)")
    opts.fields(MiningConfig, "mining", title="mined options")
    opts.fields(UnitsConfig, "units", title=UNITS_TITLE)
    opts.exclusive.append(STEPS_OR_EPOCHS)


def _add_superglue(sub: argparse._SubParsersAction) -> None:
    opts = _harness(sub, "superglue", cmd_superglue, "folder with <Task>/{train,dev32,val}.jsonl")
    opts.fields(SuperGlueConfig, skip=("prompt", "train"), required=("tasks",), flags={"tasks": ("--task",)},
                title="superglue options")
    opts.fields(PromptConfig, "prompt", only=("encoder", "max_length", "length_norm", "multi_token", "truncation",
                                              "token_types"),
                flags=ENCODER_FLAG, default_text={"max_length": "the paper's per task"},
                title="PromptConfig options of every task's prompt")
    opts.fields(TrainConfig, "train", skip=SUPERGLUE_TRAIN_FIXED, defaults=SUPERGLUE_TRAIN.to_dict(),
                flags={"steps": ("--max-steps",)},
                default_text={"steps": "the paper's per task", "lr": "the paper's per task; 1e-3 with a frozen LM",
                              "warmup_steps": "0; with --recipe paper 150 for RTE"},
                title="TrainConfig options of every run")
    opts.fields(UnitsConfig, "units", title=UNITS_TITLE)
    opts.negated_flag("--frozen", "train.finetune_lm", "keep the LM frozen (same as --no-finetune-lm): only the "
                      "prompt, or the classification head, is trained")


def _add_demo_and_world(sub: argparse._SubParsersAction) -> None:
    p, opts = _command(sub, "demo", cmd_demo)
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--world", help="world folder (default: seed 0 the shipped one, other seeds the cached one, "
                                   "built if missing); one seed only")
    opts.adopt()
    opts.fields(DemoConfig, flags={"seeds": ("--seed",)}, title="demo options")
    world = sub.add_parser("world", help="build ptune's synthetic knowledge world",
                           description="Build a synthetic knowledge base, its corpus and tokenizer, and pretrain "
                                       "a small causal and a small masked LM on it (CPU, seeded).")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="COMMAND")
    b, opts = _command(wsub, "world build", cmd_world_build)
    b.add_argument("--output", required=True, help="folder to create")
    b.add_argument("--preset", choices=["tiny", "mini"], default="tiny", help="tiny (default, the demo's) or mini (seconds)")
    b.add_argument("--check", action="store_true", help="compare the built world with the one shipped with ptune "
                                                        "(tiny, seed 0): exit 0 when byte-identical, 1 when not")
    opts.adopt()
    opts.fields(WorldConfig, only=("seed",), title="world options")



# ----------------------------------------------------------------------------- commands
def _probe_config(o: Resolved) -> ProbeConfig:
    with o.blame():
        return ProbeConfig(**o.section(only=ProbeConfig), prompt=o.section("prompt"), train=o.section("train"),
                           autoprompt=o.section("autoprompt"), mining=o.section("mining"))


def _superglue_config(o: Resolved) -> SuperGlueConfig:
    with o.blame():
        return SuperGlueConfig(**o.section(only=SuperGlueConfig), prompt=o.section("prompt"),
                               train=o.section("train"))


def _units(o: Resolved) -> UnitsConfig:
    with o.blame():
        return UnitsConfig(**o.section("units"))


def cmd_probe(o: Resolved) -> int:
    from .tasks.lama import markdown_table, probe
    from .template import Template

    config = _probe_config(o)
    if config.prompt.get("template"):  # a bad template is the user's error, not a relation to skip
        Template.parse(config.prompt["template"])
    if not (Path(o["data_dir"]) / "relations.jsonl").is_file():
        from .errors import DataError

        raise DataError(str(Path(o["data_dir"]) / "relations.jsonl"), "no such file (is --data-dir a LAMA folder?)")
    lm, tokenizer, _ = load_placed(o, processes=world_size())
    results = probe(lm, tokenizer, o["data_dir"], o["output"], config, model_name=o["model"],
                    base_model=model_reference(o["model"]), progress=True, units=_units(o))
    if is_main():  # once, also under torchrun / accelerate launch
        sys.stdout.write(markdown_table(results, config.methods))
    return 0


def cmd_superglue(o: Resolved) -> int:
    from .tasks.superglue import markdown_table, run_superglue

    config = _superglue_config(o)
    if not Path(o["data_dir"]).is_dir():
        raise ConfigError("--data-dir", f"{o['data_dir']}: no such folder")
    results = run_superglue(model_reference(o["model"]), o["data_dir"], o["output"], config, progress=True,
                            units=_units(o))
    if is_main():
        sys.stdout.write(markdown_table(results))
    return 0


def cmd_demo(o: Resolved) -> int:
    from .demo import format_summary, run_demo

    out = o["output"]
    with o.blame():
        config = DemoConfig(**o.section(only=DemoConfig))
    summary = run_demo(out, config, world_dir=o.get("world"), on_world=_say_world if is_main() else None)
    if is_main():  # once, also under torchrun / accelerate launch
        sys.stdout.write(format_summary(summary))
        where = "<model>" if len(config.seeds) == 1 else "seed<S>/<model>"
        sys.stdout.write(f"results: {out}/summary.md, {out}/summary.json, {out}/summary.png, "
                         f"{out}/{where}/results.json\n")
    return 0


def _say_world(world: Path, source: str) -> None:
    """The demo's one line (on stderr) saying which world it probes."""
    say = {"given": f"the world in {world} (--world)",
           "shipped": f"the world shipped with ptune (seed 0, sha256 manifest verified): {world}",
           "cached": f"the world cached in {world}, built earlier on this machine",
           "building": f"building the world in {world} first (minutes; later runs reuse it)",
           "refreshed": f"added to {world}/lama/relations.jsonl the hand-written wordings (manual_templates) that "
                        "an older ptune left out, as a fresh build writes them (the LMs are unchanged)"}[source]
    print(f"demo: {say}", file=sys.stderr, flush=True)


def cmd_world_build(o: Resolved) -> int:
    import dataclasses

    from .world import SHIPPED_SEED, build_world, compare_with_shipped

    out = Path(o["output"])
    if out.exists() and any(out.iterdir()):
        raise ConfigError("--output", f"{out} exists and is not empty")
    preset = WorldConfig.tiny() if o["preset"] == "tiny" else WorldConfig.mini()
    seed = o.get("seed", preset.seed)
    if o["check"] and (o["preset"], seed) != ("tiny", SHIPPED_SEED):
        raise ConfigError("--check", f"the shipped world is --preset tiny --seed {SHIPPED_SEED}; "
                                     f"got --preset {o['preset']} --seed {seed}")
    meta = build_world(out, dataclasses.replace(preset, seed=seed), progress=True)
    print(dumps_json({"output": o["output"], **{k: meta[k] for k in ("timings", "memorized") if k in meta}}))
    if not o["check"]:
        return 0
    diffs = compare_with_shipped(out)
    if not diffs:
        print(f"check: {out} is byte-identical to the world shipped with ptune")
        return 0
    print(f"check: {len(diffs)} file(s) differ from the world shipped with ptune: {', '.join(diffs)}. "
          "Pretraining on another CPU or with other torch/transformers versions can give a slightly different "
          "world; the demo's shipped world keeps its table the same everywhere.")
    return 1
