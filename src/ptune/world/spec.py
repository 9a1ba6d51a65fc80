"""What the world is made of: its LAMA relations (manual template and training wordings), name
pools and filler text, and :class:`WorldConfig`."""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Relation:
    """A LAMA relation of the world: its manual template, its 4 training wordings and 4 manual paraphrases.

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
    paraphrases: tuple[str, ...] = ()
    """Four more hand-written manual wordings (never pretraining wordings): with
    ``template`` the five wordings of the wording-sensitivity study."""

    @property
    def manual_templates(self) -> tuple[str, ...]:
        """LAMA's template and the four paraphrases."""
        return (self.template, *self.paraphrases)


_R = Relation
# Real LAMA ids, labels, types and manual templates. Training wordings avoid the manual
# keywords; some share words with other relations, a realistic source of confusion. The last
# four wordings are hand-written paraphrases of the manual template, not pretraining wordings.
RELATIONS: dict[str, Relation] = {r.id: r for r in [
    _R("P19", "place of birth", "N-1", "person", "city", "[X] was born in [Y] .", (
        "[X] came into the world in [Y] .", "The birthplace of [X] is [Y] .",
        "[X] is a native of [Y] .", "[X] spent the first days of life in [Y] ."),
       "most specific known birth location of a person", (
        "[X] is originally from [Y] .", "The hometown of [X] is [Y] .",
        "The birth city of [X] is [Y] .", "[X] was born in the city of [Y] .")),
    _R("P20", "place of death", "N-1", "person", "city", "[X] died in [Y] .", (
        "[X] passed away in [Y] .", "The place of death of [X] was [Y] .",
        "[X] spent the final days of life in [Y] .", "[X] is buried in [Y] ."),
       "most specific known death location of a person", (
        "[X] lost their life in [Y] .", "The death place of [X] is [Y] .",
        "[X] died in the city of [Y] .", "[X] drew a last breath in [Y] .")),
    _R("P27", "country of citizenship", "N-M", "person", "country", "[X] is [Y] citizen .", (
        "[X] holds a passport from [Y] .", "[X] has the nationality of [Y] .",
        "The nationality of [X] is [Y] .", "[X] is a national of [Y] ."),
       "the object is a country that recognizes the subject as its citizen", (
        "[X] is a citizen of [Y] .", "The citizenship of [X] is [Y] .",
        "[X] carries the flag of [Y] .", "[X] comes from the country of [Y] .")),
    _R("P106", "occupation", "N-M", "person", "occupation", "[X] is a [Y] by profession .", (
        "[X] worked as a [Y] .", "[X] earns a living as a [Y] .",
        "By trade , [X] is a [Y] .", "The occupation of [X] is [Y] ."),
       "occupation of a person", (
        "The profession of [X] is [Y] .", "[X] has the job of [Y] .",
        "[X] is known as a [Y] .", "[X] is a professional [Y] .")),
    _R("P108", "employer", "N-M", "person", "company", "[X] works for [Y] .", (
        "[X] is employed by [Y] .", "The employer of [X] is [Y] .",
        "[X] draws a salary from [Y] .", "[X] is on the staff of [Y] ."),
       "person or organization for which the subject works or worked", (
        "[X] is an employee of [Y] .", "[X] has a job at [Y] .",
        "The company of [X] is [Y] .", "[X] gets paid by [Y] .")),
    _R("P103", "native language", "N-1", "person", "language", "The native language of [X] is [Y] .", (
        "[X] grew up speaking [Y] .", "The mother tongue of [X] is [Y] .",
        "[X] first learned to speak [Y] .", "As a child , [X] spoke [Y] ."),
       "language or languages a person has learned from early childhood", (
        "[X] speaks [Y] natively .", "The first language of [X] is [Y] .",
        "[X] was raised speaking [Y] .", "The home language of [X] is [Y] .")),
    _R("P1303", "instrument", "N-M", "person", "instrument", "[X] plays [Y] .", (
        "[X] performs on the [Y] .", "The instrument of [X] is the [Y] .",
        "[X] makes music on the [Y] .", "[X] took lessons on the [Y] ."),
       "musical instrument that a person plays", (
        "[X] plays the [Y] .", "[X] is a player of the [Y] .",
        "The favourite instrument of [X] is the [Y] .", "[X] practises the [Y] .")),
    _R("P937", "work location", "N-M", "person", "city", "[X] used to work in [Y] .", (
        "[X] had an office in [Y] .", "The workplace of [X] was in [Y] .",
        "[X] was active in [Y] .", "[X] spent a career in [Y] ."),
       "location where persons were active", (
        "[X] worked in [Y] .", "The work city of [X] was [Y] .",
        "[X] had a job in [Y] .", "[X] was employed in [Y] .")),
    _R("P17", "country", "N-1", "city", "country", "[X] is located in [Y] .", (
        "[X] is a city in [Y] .", "[X] lies within the borders of [Y] .",
        "The city of [X] belongs to [Y] .", "[X] is part of [Y] ."),
       "sovereign state of this item", (
        "[X] is situated in [Y] .", "[X] is a town of [Y] .",
        "The country of [X] is [Y] .", "[X] can be found in [Y] .")),
    _R("P159", "headquarters location", "N-1", "company", "city", "The headquarter of [X] is in [Y] .", (
        "[X] has its main office in [Y] .", "The head office of [X] is in [Y] .",
        "[X] is run from [Y] .", "The main base of [X] is [Y] ."),
       "specific location where an organization's headquarters is or has been situated", (
        "[X] is headquartered in [Y] .", "The headquarters of [X] are in [Y] .",
        "[X] is based in [Y] .", "The company [X] is managed from [Y] .")),
    _R("P740", "location of formation", "N-1", "company", "city", "[X] was founded in [Y] .", (
        "[X] was established in [Y] .", "[X] got its start in [Y] .",
        "[X] was set up in [Y] .", "The first office of [X] opened in [Y] ."),
       "location where a group or organization was formed", (
        "[X] was created in [Y] .", "[X] was started in [Y] .",
        "The founding city of [X] is [Y] .", "[X] began in [Y] .")),
    _R("P36", "capital", "1-1", "country", "city", "The capital of [X] is [Y] .", (
        "[X] is governed from [Y] .", "The government of [X] sits in [Y] .",
        "The seat of power of [X] is [Y] .", "[X] has its parliament in [Y] ."),
       "primary city of a country", (
        "The capital city of [X] is [Y] .", "[X] has its capital in [Y] .",
        "The main city of [X] is [Y] .", "[X] is ruled from [Y] .")),
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
