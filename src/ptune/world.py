"""A synthetic knowledge world in LAMA's formats, with its own pretrained LMs (no download).

The offline demo of LAMA knowledge probing (paper §2): invented persons, cities, companies
and countries are linked by 12 real LAMA relations. Each fact is stated ``reps`` times in a
pretraining corpus using 4 training wordings per relation; LAMA's manual template is held
out, so it never appears in the corpus. A BPE tokenizer (every object is one token) and a
small GPT-2 and BERT are pretrained on that corpus on the CPU. The world folder holds:

- ``lama/relations.jsonl``, ``lama/fact-retrieval/<rel>/{train,dev,test}.jsonl`` and
  ``lama/common_vocab_cased.txt``: the facts in LAMA's own formats;
- ``gpt/`` and ``bert/``: ``save_pretrained`` folders that load with the Auto classes;
- ``world.json``: config, counts, timings, versions and the memorization check.

Example:
    >>> meta = build_world("world", WorldConfig.tiny())                  # doctest: +SKIP
    >>> meta["memorized"]["gpt"]["oracle_mean"], memorized("world", "bert")["P36"]  # doctest: +SKIP
    (1.0, 1.0)
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal

from .errors import ConfigError

__all__ = ["Relation", "RELATIONS", "WorldConfig", "corpus", "build_world", "memorized"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Relation:
    """A LAMA relation of the world: its manual template and its 4 training wordings.

    Example:
        >>> RELATIONS["P19"].template, RELATIONS["P19"].train_templates[0]
        ('[X] was born in [Y] .', '[X] came into the world in [Y] .')
    """

    id: str
    label: str
    type: str
    subject: str
    object: str
    template: str
    train_templates: tuple[str, ...]
    description: str


_R = Relation
# Real LAMA ids, labels, types and manual templates. Training wordings avoid the manual
# keywords; some share words with other relations, a realistic source of confusion.
RELATIONS: dict[str, Relation] = {r.id: r for r in [
    _R("P19", "place of birth", "N-1", "person", "city", "[X] was born in [Y] .", (
        "[X] came into the world in [Y] .", "The birthplace of [X] is [Y] .",
        "[X] is a native of [Y] .", "[X] spent the first days of life in [Y] ."),
       "most specific known birth location of a person"),
    _R("P20", "place of death", "N-1", "person", "city", "[X] died in [Y] .", (
        "[X] passed away in [Y] .", "The place of death of [X] was [Y] .",
        "[X] spent the final days of life in [Y] .", "[X] is buried in [Y] ."),
       "most specific known death location of a person"),
    _R("P27", "country of citizenship", "N-M", "person", "country", "[X] is [Y] citizen .", (
        "[X] holds a passport from [Y] .", "[X] has the nationality of [Y] .",
        "The nationality of [X] is [Y] .", "[X] is a national of [Y] ."),
       "the object is a country that recognizes the subject as its citizen"),
    _R("P106", "occupation", "N-M", "person", "occupation", "[X] is a [Y] by profession .", (
        "[X] worked as a [Y] .", "[X] earns a living as a [Y] .",
        "By trade , [X] is a [Y] .", "The occupation of [X] is [Y] ."),
       "occupation of a person"),
    _R("P108", "employer", "N-M", "person", "company", "[X] works for [Y] .", (
        "[X] is employed by [Y] .", "The employer of [X] is [Y] .",
        "[X] draws a salary from [Y] .", "[X] is on the staff of [Y] ."),
       "person or organization for which the subject works or worked"),
    _R("P103", "native language", "N-1", "person", "language", "The native language of [X] is [Y] .", (
        "[X] grew up speaking [Y] .", "The mother tongue of [X] is [Y] .",
        "[X] first learned to speak [Y] .", "As a child , [X] spoke [Y] ."),
       "language or languages a person has learned from early childhood"),
    _R("P1303", "instrument", "N-M", "person", "instrument", "[X] plays [Y] .", (
        "[X] performs on the [Y] .", "The instrument of [X] is the [Y] .",
        "[X] makes music on the [Y] .", "[X] took lessons on the [Y] ."),
       "musical instrument that a person plays"),
    _R("P937", "work location", "N-M", "person", "city", "[X] used to work in [Y] .", (
        "[X] had an office in [Y] .", "The workplace of [X] was in [Y] .",
        "[X] was active in [Y] .", "[X] spent a career in [Y] ."),
       "location where persons were active"),
    _R("P17", "country", "N-1", "city", "country", "[X] is located in [Y] .", (
        "[X] is a city in [Y] .", "[X] lies within the borders of [Y] .",
        "The city of [X] belongs to [Y] .", "[X] is part of [Y] ."),
       "sovereign state of this item"),
    _R("P159", "headquarters location", "N-1", "company", "city", "The headquarter of [X] is in [Y] .", (
        "[X] has its main office in [Y] .", "The head office of [X] is in [Y] .",
        "[X] is run from [Y] .", "The main base of [X] is [Y] ."),
       "specific location where an organization's headquarters is or has been situated"),
    _R("P740", "location of formation", "N-1", "company", "city", "[X] was founded in [Y] .", (
        "[X] was established in [Y] .", "[X] got its start in [Y] .",
        "[X] was set up in [Y] .", "The first office of [X] opened in [Y] ."),
       "location where a group or organization was formed"),
    _R("P36", "capital", "1-1", "country", "city", "The capital of [X] is [Y] .", (
        "[X] is governed from [Y] .", "The government of [X] sits in [Y] .",
        "The seat of power of [X] is [Y] .", "[X] has its parliament in [Y] ."),
       "primary city of a country"),
]}

OCCUPATIONS = ("baker carpenter painter teacher lawyer nurse pilot farmer doctor poet singer dancer "
               "sculptor banker plumber tailor chemist butcher journalist surgeon novelist composer "
               "photographer gardener soldier").split()
INSTRUMENTS = ("piano violin guitar cello flute trumpet drums harp saxophone clarinet banjo accordion "
               "organ oboe trombone mandolin").split()
_SUFFIX = {"first": [""], "last": ["", "", "son", "berg", "ez", "ini"],
           "city": ["", "burg", "ton", "vik", "holm", "dale"], "country": ["ia", "land", "stan", "ova"],
           "language": ["ish", "ese", "ic"], "company": ["corp", "tek", "tron", "ex", "dyne"]}
_ONSETS = "b c d f g h k l m n p r s t v z br dr gr kr tr st".split()
_NUCLEI = "a e i o u a e o".split()
_CODAS = ["", "", "", "n", "r", "l", "s", "m"]

# Filler: the manual keywords in sentences about no entity, so their embeddings are trained.
_FILLER = [
    "{P} was born on a cold {T} .", "{P} was born at home in the {T} .", "{P} died in the {T} after a long life .",
    "{P} died peacefully at home .", "Every citizen of the {L} may vote .", "{P} became a citizen after many years .",
    "{P} chose a new profession last {T} .", "{P} is proud of the profession .", "{P} works for the whole {L} .",
    "{P} works every {T} near the {L} .", "{P} plays in the {L} every {T} .", "{P} plays cards with a friend .",
    "{P} used to walk to the {L} .", "{P} used to work at the {L} .", "The {O} is located near the {L} .",
    "The {L} is located behind the old {O} .", "The headquarter of the club is near the {L} .",
    "Nobody knows where the headquarter of the team is .", "The club was founded by a few friends .",
    "The {L} was founded long ago .", "The capital letters on the {O} are red .",
    "{P} visited the capital in the {T} .",
    "The native plants grow near the {L} .", "{P} speaks the local language at the {L} .",
    "The language of the old {O} is hard to read .", "{P} found a {O} near the {L} .",
    "{P} opened the {O} in the {T} .", "The {O} was left in the {L} .", "{P} walked to the {L} in the {T} .",
]
_FILL = {"P": ["The old man", "A young woman", "My neighbour", "Her brother", "His aunt", "The little boy",
               "A tall stranger", "Our cousin", "The quiet girl", "Their friend", "The king", "A child"],
         "L": ["river", "market", "garden", "station", "harbour", "forest", "village", "square", "library", "bridge"],
         "T": ["spring", "winter", "summer", "autumn", "morning", "evening", "night"],
         "O": ["lamp", "book", "coat", "basket", "letter", "table", "window", "map"]}
# Distractors: co-occurrences that are not facts, (subject kind, object kind) -> wording.
_DISTRACTORS = {("person", "city"): "{s} once visited {o} .",
                ("person", "country"): "{s} read a book about {o} .",
                ("person", "language"): "{s} can read a little {o} .",
                ("person", "company"): "{s} bought shares of {o} .",
                ("person", "occupation"): "{s} once met a {o} .",
                ("person", "instrument"): "{s} once listened to the {o} .",
                ("company", "country"): "{s} sells goods in {o} ."}
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<eos>", "[PROMPT]"]
SPLITS = ("train", "dev", "test")


_POSITIVE = ("reps", "vocab_size", "layers", "hidden", "heads", "positions", "block", "gpt_epochs", "gpt_batch",
             "bert_epochs", "bert_batch")
_COUNTS = ("persons", "cities", "city_objects", "companies", "company_objects", "countries", "languages",
           "occupations", "instruments", "warmup")
_FRACTIONS = ("filler", "distractors", "mlm_prob", "object_mask")


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """How to build a world: entities, corpus, tokenizer and the two pretrained LMs.

    Example:
        >>> WorldConfig.mini().relations
        ('P19', 'P27', 'P1303', 'P17', 'P36')
        >>> WorldConfig.tiny().reps * WorldConfig.tiny().bert_epochs  # BERT exposures per fact
        480
    """

    seed: int = 0
    """Seeds the world, the corpus, model initialisation and data order."""
    relations: tuple[str, ...] = tuple(RELATIONS)
    """LAMA relation ids of the world (a subset of :data:`RELATIONS`)."""
    persons: int = 120
    """Persons ("First Last"), the subjects of person relations."""
    cities: int = 120
    """Cities, the subjects of P17."""
    city_objects: int = 30
    """Cities that can be objects (one token each); the first ``city_objects`` cities."""
    companies: int = 120
    """Companies, the subjects of P159 and P740."""
    company_objects: int = 25
    """Companies that can be objects of P108 (one token each)."""
    countries: int = 25
    """Countries (objects of P27 and P17, subjects of P36)."""
    languages: int = 15
    """Languages (objects of P103)."""
    occupations: int = 20
    """Occupations (objects of P106), real words."""
    instruments: int = 12
    """Musical instruments (objects of P1303), real words."""
    zipf: float = 0.7
    """Exponent of the Zipf prior over each relation's object pool."""
    reps: int = 60
    """Statements of each fact in the corpus, each with a random training wording."""
    filler: float = 0.10
    """Filler sentences (manual keywords, no entity) as a fraction of fact statements."""
    distractors: float = 0.05
    """Distractor co-occurrences (not facts) as a fraction of fact statements."""
    split: tuple[int, int, int] = (60, 20, 40)
    """Subjects per relation in train/dev/test; smaller relations are split in proportion."""
    vocab_size: int = 1500
    """BPE vocabulary size before the object tokens are added."""
    layers: int = 2
    """Transformer layers of both LMs."""
    hidden: int = 128
    """Hidden size of both LMs."""
    heads: int = 4
    """Attention heads of both LMs."""
    positions: int = 128
    """Maximum sequence length of both LMs."""
    block: int = 64
    """Pretraining block length in tokens (whole sentences are packed into blocks)."""
    models: tuple[str, ...] = ("gpt", "bert")
    """Which LMs to pretrain: ``gpt`` (GPT-2, causal) and/or ``bert`` (BERT, masked)."""
    gpt_epochs: int = 3
    """GPT pretraining epochs."""
    gpt_batch: int = 32
    """GPT blocks per step."""
    gpt_lr: float = 3e-3
    """GPT peak learning rate."""
    bert_epochs: int = 8
    """BERT pretraining epochs (BERT needs about 3x the exposures of GPT)."""
    bert_batch: int = 64
    """BERT blocks per step."""
    bert_lr: float = 5e-3
    """BERT peak learning rate (higher than GPT's: BERT's memorization starts late)."""
    mlm_prob: float = 0.15
    """BERT random masking probability (80 % [MASK], 10 % random, 10 % kept)."""
    object_mask: float = 1.0
    """BERT: probability of masking a statement's object token on top of random masking
    (salient-entity masking; 1.0 memorized more reliably than 0.8 within the budget)."""
    warmup: int = 100
    """Linear warm-up steps, then cosine decay to 10 % of the peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (betas 0.9/0.98, gradient clip 1.0)."""
    threads: int | None = None
    """Torch CPU threads; ``None``: min(2, available cores)."""

    def __post_init__(self) -> None:
        for name in ("relations", "split", "models"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for rel in self.relations:
            if rel not in RELATIONS:
                raise ConfigError("relations", f"{rel!r} is not a world relation; accepted: {', '.join(RELATIONS)}")
        if not self.relations or len(set(self.relations)) != len(self.relations):
            raise ConfigError("relations", f"{self.relations!r}: need at least one relation, each once")
        for model in self.models:
            if model not in ("gpt", "bert"):
                raise ConfigError("models", f"{model!r}; accepted: gpt, bert")
        if len(self.split) != 3 or min(self.split) < 1:
            raise ConfigError("split", f"{self.split!r}: need three positive sizes (train, dev, test)")
        for names, low, high in ((_POSITIVE, 1, math.inf), (_COUNTS, 0, math.inf), (_FRACTIONS, 0, 1)):
            for name in names:
                if not low <= getattr(self, name) <= high:
                    raise ConfigError(name, f"must be in [{low}, {high}], got {getattr(self, name)}")
        if self.occupations > len(OCCUPATIONS) or self.instruments > len(INSTRUMENTS):
            raise ConfigError("occupations" if self.occupations > len(OCCUPATIONS) else "instruments",
                              f"at most {len(OCCUPATIONS)} occupations and {len(INSTRUMENTS)} instruments")
        if self.city_objects > self.cities or self.company_objects > self.companies:
            raise ConfigError("city_objects" if self.city_objects > self.cities else "company_objects",
                              "cannot exceed the number of cities/companies")
        if self.hidden % self.heads:
            raise ConfigError("heads", f"{self.heads} does not divide hidden={self.hidden}")
        if self.block + 2 > self.positions:
            raise ConfigError("block", f"{self.block} + 2 exceeds positions={self.positions}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be at least 1 or None, got {self.threads}")
        for rel in self.relations:
            r = RELATIONS[rel]
            for kind in (r.subject, r.object):
                if _pool_size(self, kind, objects=kind == r.object) < 1:
                    raise ConfigError(_COUNT[kind][kind == r.object], f"relation {rel} needs at least one {kind}")
        if "P36" in self.relations and self.city_objects < self.countries:
            raise ConfigError("city_objects", f"P36 (capital, 1-1) needs a capital per country: "
                              f"{self.city_objects} < countries={self.countries}")

    @classmethod
    def tiny(cls) -> WorldConfig:
        """The default: 12 relations, 1,345 facts, 2-layer/128 LMs; about 7 minutes on 2 quiet cores."""
        return cls()

    @classmethod
    def mini(cls) -> WorldConfig:
        """A few relations and very small LMs, built in seconds (for tests)."""
        return cls(relations=("P19", "P27", "P1303", "P17", "P36"), persons=24, cities=12, city_objects=6,
                   companies=0, company_objects=0, countries=5, languages=0, occupations=0, instruments=5,
                   reps=8, split=(8, 4, 8), vocab_size=200, layers=1, hidden=32, heads=2, positions=64, block=48,
                   gpt_epochs=2, gpt_batch=16, bert_epochs=2, bert_batch=16, warmup=10)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused and the nearest field named."""
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                raise ConfigError(key, "unknown world config key" + (f"; did you mean {near[0]!r}?" if near else ""))
        return cls(**d)


_COUNT = {"person": ("persons", "persons"), "city": ("cities", "city_objects"),
          "company": ("companies", "company_objects"), "country": ("countries", "countries"),
          "language": ("languages", "languages"), "occupation": ("occupations", "occupations"),
          "instrument": ("instruments", "instruments")}


def _pool_size(cfg: WorldConfig, kind: str, objects: bool) -> int:
    return getattr(cfg, _COUNT[kind][objects])


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


# ---------------------------------------------------------------- build
def _write_lama(root: Path, cfg: WorldConfig, world: _World) -> dict[str, dict[str, int]]:
    rng = random.Random(f"ptune-uuid-{cfg.seed}")
    uri = {name: f"W{i}" for i, name in enumerate(n for names in world.entities.values() for n in names)}
    (root / "fact-retrieval").mkdir(parents=True)
    with open(root / "relations.jsonl", "w", encoding="utf-8") as f:
        for rel in cfg.relations:
            r = RELATIONS[rel]
            f.write(json.dumps({"relation": r.id, "template": r.template, "label": r.label, "type": r.type,
                                "description": r.description, "train_templates": list(r.train_templates)}) + "\n")
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


def _default_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))  # more threads oversubscribe a shared 2-core machine


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("ptune", "torch", "transformers", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def build_world(output_dir: str | os.PathLike[str], config: WorldConfig | None = None, *, progress: bool = False,
                overwrite: bool = False) -> dict[str, Any]:
    """Generate a world, write its LAMA files, pretrain its LMs and check what they memorized.

    The folder is written atomically (a temporary sibling folder, then a rename).

    Args:
        output_dir: the world folder to create.
        config: the world; default :meth:`WorldConfig.tiny`.
        progress: show tqdm bars during pretraining.
        overwrite: replace an existing ``output_dir``.

    Returns:
        The metadata also written to ``world.json``: config, counts, timings (s), memorization
        (P@1 on test with the best training wording and with the manual template) and versions.

    Raises:
        FileExistsError: ``output_dir`` exists, is not empty and ``overwrite`` is false.
    """
    import torch

    cfg = config or WorldConfig.tiny()
    out = Path(output_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    old_threads = torch.get_num_threads()
    threads = cfg.threads or _default_threads()
    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        world = _make_world(cfg)
        lines = list(corpus(cfg))
        facts = _write_lama(tmp / "lama", cfg, world)
        timings["world"] = time.perf_counter() - t
        t = time.perf_counter()
        toks = dict(zip(("gpt", "bert"), _tokenizers(cfg, lines, world.objects)))
        timings["tokenizer"] = time.perf_counter() - t
        special = {s: toks["gpt"].convert_tokens_to_ids(s) for s in _SPECIALS}
        vocab = len(toks["gpt"])
        sentences = toks["gpt"](lines, add_special_tokens=False)["input_ids"]
        obj_ids = set(toks["gpt"].convert_tokens_to_ids(world.objects))
        period = toks["gpt"].convert_tokens_to_ids(".")
        models = _models(cfg, vocab, special)
        meta: dict[str, Any] = {"config": cfg.to_dict(), "seed": cfg.seed, "threads": threads, "counts": {
            "facts": facts, "objects": len(world.objects), "vocab_size": vocab,
            "entities": {k: len(v) for k, v in world.entities.items()},
            "corpus": {"sentences": len(lines), "tokens": sum(map(len, sentences))}}, "pretraining": {}}
        logger.info("world: %d facts, %d sentences, %d tokens, vocabulary %d", sum(c["all"] for c in facts.values()),
                    len(lines), meta["counts"]["corpus"]["tokens"], vocab)
        for kind, model in models.items():
            t = time.perf_counter()
            start, end = (special["<eos>"], None) if kind == "gpt" else (special["[CLS]"], special["[SEP]"])
            blocks, slots = _pack(sentences, cfg.block, start, end, special["[PAD]"], obj_ids, period)
            meta["pretraining"][kind] = _pretrain(model, blocks, slots, cfg, kind, special, vocab, progress)
            meta["pretraining"][kind]["parameters"] = sum(p.numel() for p in model.parameters())
            model.save_pretrained(tmp / kind)
            toks[kind].save_pretrained(tmp / kind)
            timings[kind] = time.perf_counter() - t
            logger.info("%s pretrained in %.1f s", kind, timings[kind])
        t = time.perf_counter()
        meta["memorized"] = {kind: _summary(tmp, kind, world, cfg) for kind in models}
        timings["memorization"] = time.perf_counter() - t
        meta["timings"] = {k: round(v, 2) for k, v in timings.items()}
        meta["versions"] = _versions()
        (tmp / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(old_threads)
    return meta


def _summary(world_dir: Path, which: str, world: _World, cfg: WorldConfig) -> dict[str, Any]:
    """Oracle (best training wording on dev), manual and majority P@1 on test, per relation and mean."""
    scores = _probe(world_dir, which, ("dev", "test"))
    res: dict[str, Any] = {"oracle": {}, "manual": {}, "majority": {}, "best_wording": {}}
    for rel, s in scores.items():
        best = _best(s)
        train = [world.facts[rel][i][1] for i in world.splits[rel]["train"]]
        top = max(set(train), key=lambda o: (train.count(o), o)) if train else None
        test = [world.facts[rel][i][1] for i in world.splits[rel]["test"]]
        res["oracle"][rel], res["manual"][rel] = round(s["test"][best], 4), round(s["test"][-1], 4)
        res["majority"][rel] = round(sum(o == top for o in test) / max(1, len(test)), 4)
        res["best_wording"][rel] = RELATIONS[rel].train_templates[best]
    for key in ("oracle", "manual", "majority"):
        res[f"{key}_mean"] = round(sum(res[key].values()) / len(res[key]), 4)
    logger.info("%s memorized: oracle %.3f, manual %.3f, majority %.3f", which, res["oracle_mean"],
                res["manual_mean"], res["majority_mean"])
    return res
