"""The world's entities and facts, its pretraining corpus and the facts in LAMA's formats."""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .spec import (INSTRUMENTS, OCCUPATIONS, RELATIONS, SPLITS, WorldConfig, _CODAS, _DISTRACTORS, _FILL, _FILLER,
                   _NUCLEI, _ONSETS, _SUFFIX, _pool_size)



# ---------------------------------------------------------------- the world: entities and facts
@dataclass(frozen=True)
class _World:
    entities: dict[str, list[str]]  # kind -> names; object pools are prefixes
    facts: dict[str, list[tuple[str, str]]]  # relation -> (subject, object), one per subject
    splits: dict[str, dict[str, list[int]]]  # relation -> split -> fact indices
    objects: list[str]  # every object name: the candidate vocabulary


def _names(rng: random.Random, kind: str, n: int, used: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS) for _ in range(2))
        word = (word + rng.choice(_SUFFIX[kind])).capitalize()
        if word.lower() not in used and 4 <= len(word) <= 12:
            used.add(word.lower())
            out.append(word)
    return out


def _zipf_choices(rng: random.Random, pool: list[str], n: int, a: float) -> list[str]:
    ranked = rng.sample(pool, len(pool))  # each relation has its own most frequent objects
    return rng.choices(ranked, weights=[(r + 1) ** -a for r in range(len(ranked))], k=n)


@lru_cache(maxsize=4)
def _make_world(cfg: WorldConfig) -> _World:
    rng = random.Random(f"ptune-world-{cfg.seed}")
    used = {w.lower() for text in [*_FILLER, *sum(_FILL.values(), []), *_DISTRACTORS.values()] for w in text.split()}
    used |= {w.lower() for r in RELATIONS.values() for t in (r.template, *r.train_templates) for w in t.split()}
    used |= set(OCCUPATIONS) | set(INSTRUMENTS)
    # first names are shared, family names are not: a 2-layer BERT struggles to memorize
    # facts keyed on a conjunction of two shared tokens
    first = _names(rng, "first", max(1, math.ceil(cfg.persons / 4)), used)
    pairs = [f"{rng.choice(first)} {last}" for last in _names(rng, "last", cfg.persons, used)]
    ent = {"person": pairs, "city": _names(rng, "city", cfg.cities, used),
           "company": _names(rng, "company", cfg.companies, used),
           "country": _names(rng, "country", cfg.countries, used),
           "language": _names(rng, "language", cfg.languages, used),
           "occupation": list(OCCUPATIONS[:cfg.occupations]), "instrument": list(INSTRUMENTS[:cfg.instruments])}
    pool = {k: ent[k][:_pool_size(cfg, k, objects=True)] for k in ent}
    capital = dict(zip(pool["country"], rng.sample(pool["city"], len(pool["country"]))))
    facts: dict[str, list[tuple[str, str]]] = {}
    splits: dict[str, dict[str, list[int]]] = {}
    for rel in cfg.relations:
        r = RELATIONS[rel]
        subjects = ent[r.subject]
        if rel == "P36":  # 1-1: a distinct capital per country
            objs = [capital[s] for s in subjects]
        else:
            objs = _zipf_choices(rng, pool[r.object], len(subjects), cfg.zipf)
            if rel == "P17":  # a capital lies in its own country
                where = {c: k for k, c in capital.items()}
                objs = [where.get(s, o) for s, o in zip(subjects, objs)]
        facts[rel] = list(zip(subjects, objs))
        order = rng.sample(range(len(subjects)), len(subjects))
        scale = min(1.0, len(subjects) / sum(cfg.split))
        n_train, n_dev = int(cfg.split[0] * scale), max(1, int(cfg.split[1] * scale))
        n_test = min(cfg.split[2], len(subjects) - n_train - n_dev)
        splits[rel] = {"train": order[:n_train], "dev": order[n_train:n_train + n_dev],
                       "test": order[n_train + n_dev:n_train + n_dev + n_test]}
    kinds = {RELATIONS[rel].object for rel in cfg.relations}
    objects = [o for k in ent if k in kinds for o in pool[k]]
    return _World(ent, facts, splits, objects)


def corpus(config: WorldConfig) -> Iterator[str]:
    """The pretraining corpus of ``config``'s world, one sentence per item, in training order.

    Each fact is stated ``reps`` times with a random training wording; filler sentences and
    distractor co-occurrences are mixed in. The manual templates never appear.

    Args:
        config: the world; the same config (seed included) always gives the same corpus.

    Returns:
        An iterator over sentences such as ``"Mira Tolvik passed away in Kelburg ."``.
    """
    world = _make_world(config)
    rng = random.Random(f"ptune-corpus-{config.seed}")
    lines = []
    for rel, pairs in world.facts.items():
        wordings = RELATIONS[rel].train_templates
        for sub, obj in pairs:
            for _ in range(config.reps):
                lines.append(rng.choice(wordings).replace("[X]", sub).replace("[Y]", obj))
    n_facts = len(lines)
    for _ in range(round(config.filler * n_facts)):
        text = rng.choice(_FILLER)
        lines.append(re.sub(r"\{(\w)\}", lambda m: rng.choice(_FILL[m.group(1)]), text))
    kinds = [(s, o) for (s, o) in _DISTRACTORS if world.entities[s] and _pool_size(config, o, objects=True)]
    for _ in range(round(config.distractors * n_facts) if kinds else 0):
        s, o = rng.choice(kinds)
        obj = rng.choice(world.entities[o][:_pool_size(config, o, objects=True)])
        lines.append(_DISTRACTORS[s, o].format(s=rng.choice(world.entities[s]), o=obj))
    rng.shuffle(lines)
    yield from lines




def relation_records(cfg: WorldConfig) -> list[dict[str, Any]]:
    """The lines of the world's ``lama/relations.jsonl``: a pure function of ``cfg.relations``."""
    return [{"relation": r.id, "template": r.template, "label": r.label, "type": r.type, "description": r.description,
             "train_templates": list(r.train_templates), "manual_templates": list(r.manual_templates)}
            for r in (RELATIONS[rel] for rel in cfg.relations)]


def relations_jsonl(cfg: WorldConfig) -> str:
    """The text of the world's ``lama/relations.jsonl``, as :func:`build_world` writes it."""
    return "".join(json.dumps(r) + "\n" for r in relation_records(cfg))


def _write_lama(root: Path, cfg: WorldConfig, world: _World) -> dict[str, dict[str, int]]:
    rng = random.Random(f"ptune-uuid-{cfg.seed}")
    uri = {name: f"W{i}" for i, name in enumerate(n for names in world.entities.values() for n in names)}
    (root / "fact-retrieval").mkdir(parents=True)
    with open(root / "relations.jsonl", "w", encoding="utf-8") as f:
        f.write(relations_jsonl(cfg))
    counts = {}
    for rel in cfg.relations:
        (root / "fact-retrieval" / rel).mkdir()
        counts[rel] = {"all": len(world.facts[rel])}
        for split in SPLITS:
            with open(root / "fact-retrieval" / rel / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for i in world.splits[rel][split]:
                    sub, obj = world.facts[rel][i]
                    rec = {"sub_label": sub, "obj_label": obj, "predicate_id": rel, "sub_uri": uri[sub],
                           "obj_uri": uri[obj]}
                    if split == "test":
                        rec["uuid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                    f.write(json.dumps(rec) + "\n")
            counts[rel][split] = len(world.splits[rel][split])
    (root / "common_vocab_cased.txt").write_text("\n".join(world.objects) + "\n", encoding="utf-8")
    return counts
