"""How often each recipe cuts each text field of the SuperGLUE val sets, and how many val
examples the paper's COPA and RTE text changes touch (docs/superglue.md).

Usage: python scripts/recipe_truncation.py FEWGLUE_DIR [TASK ...]

Without network access no ALBERT tokenizer can be loaded, so the counts come from a
stand-in: an ALBERT-style tokenizer (BPE with SentencePiece's word-start marker, 30,000
tokens) trained on every FewGLUE file except the val file being measured. Its pieces are
close to, not the same as, ALBERT-xxlarge-v2's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ptune.tasks import superglue as sg
from ptune.tasks.recipe import paper_examples as recipe_examples
from ptune.tasks.superglue_data import read_task, split_path
from ptune.tiny import tiny_model, train_tokenizer

TASKS = ("BoolQ", "CB", "MultiRC", "RTE", "WiC", "WSC")


def main(data_dir: Path, tasks: tuple[str, ...]) -> None:
    print("| task | recipe | max_length | val examples | cut: field (examples, %) |")
    print("|---|---|---|---|---|")
    for task in tasks:
        measured = split_path(data_dir, task, "val")
        corpus = [line[:20000] for path in sorted(data_dir.glob("*/*.jsonl")) if path != measured
                  for line in path.read_text(encoding="utf-8").splitlines()]
        tok = train_tokenizer("albert", corpus, vocab_size=30000, extra_tokens=["Yes", "No", "Maybe"])
        examples = read_task(task, measured).examples
        for recipe in ("ptune", "paper"):
            cfg = sg.SuperGlueConfig(tasks=(task,), recipe=recipe)
            lm = tiny_model("albert", tok, positions=8)  # never run: the prompt needs an LM to attach to
            model = sg.build_model(sg.SPECS[task], cfg, lm, tok, "masked", 0, "stand-in")
            items = model.prepare([{**ex, "target": 0} for ex in examples])
            cut: dict[str, int] = {}
            for it in items:
                answer = len(it.candidates[0]) + (1 if recipe == "paper" and task == "WSC" else 0) if it.candidates else 1
                kept = model.compiled.kept_lengths(it.fields, answer_len=answer, answer_ids=[0] * answer)
                for name, n in kept.items():
                    cut[name] = cut.get(name, 0) + (n < len(it.fields[name]))
            cells = ", ".join(f"{k} ({v}, {100 * v / len(items):.1f}%)" for k, v in cut.items() if v) or "none"
            print(f"| {task} | {recipe} | {model.compiled.max_length} | {len(items)} | {cells} |")
    paper = sg.SuperGlueConfig(recipe="paper")
    for task, fields in (("COPA", ("choice1_stem", "choice2_stem", "premise_stem")), ("RTE", ("hypothesis_stem",))):
        examples = read_task(task, split_path(data_dir, task, "val")).examples
        changed = [ex for ex, new in zip(examples, recipe_examples(task, paper, examples))
                   if any(ex[f] != new[f] for f in fields)]
        print(f"{task} val: the paper's text differs on {len(changed)} of {len(examples)} examples")


if __name__ == "__main__":
    main(Path(sys.argv[1]), tuple(sys.argv[2:]) or TASKS)
