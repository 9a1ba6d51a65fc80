"""Write the synthetic sentiment task: train.jsonl (96), dev.jsonl (48), new.jsonl (3).

Short reviews such as "the movie was brilliant ." built from four templates of the same
shape, eight subjects and twelve sentiment words; labels "pos" / "neg", balanced in train
and dev, no sentence in two files. new.jsonl holds three more sentences without labels,
for ``ptune predict``.
Deterministic: the same seed always gives the same files.

    python examples/sentiment/make_data.py            # writes next to this script
    python examples/sentiment/make_data.py --out DIR --seed 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

POSITIVE = ["brilliant", "wonderful", "great", "excellent", "delightful", "superb"]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "horrible", "dull"]
SUBJECTS = ["movie", "film", "story", "acting", "music", "ending", "plot", "cast"]
# every sentence has the same shape, the sentiment word fourth: a frozen random-init LM
# (the example has no pretrained one) then reacts to it the same way in every sentence
TEMPLATES = [
    "the {subject} was {word} .",
    "the {subject} is {word} .",
    "this {subject} is {word} .",
    "that {subject} was {word} .",
]
N_TRAIN, N_DEV = 96, 48


def sentences(words: list[str]) -> list[str]:
    return [t.format(subject=s, word=w) for t, s, w in itertools.product(TEMPLATES, SUBJECTS, words)]


def build(seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, dev, new) examples; train and dev half positive; all disjoint."""
    rng = random.Random(seed)
    per_label = (N_TRAIN + N_DEV) // 2
    halves, pools = {}, {}
    for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
        pools[label] = pool = sentences(words)
        rng.shuffle(pool)
        halves[label] = [{"text": t, "label": label} for t in pool[:per_label]]
    train = halves["pos"][: N_TRAIN // 2] + halves["neg"][: N_TRAIN // 2]
    dev = halves["pos"][N_TRAIN // 2 :] + halves["neg"][N_TRAIN // 2 :]
    rng.shuffle(train)
    rng.shuffle(dev)
    new = [{"text": t} for t in (pools["pos"][per_label], pools["neg"][per_label], pools["pos"][per_label + 1])]
    return train, dev, new


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, dev, new = build(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "dev.jsonl", dev)
    write_jsonl(args.out / "new.jsonl", new)
    print(f"wrote {len(train)} train, {len(dev)} dev and {len(new)} unlabelled examples to {args.out}")


if __name__ == "__main__":
    main()
