"""LAMA knowledge probing (paper §2): how many facts a frozen LM gives up to a prompt.

Reads LAMA's own files from a data folder:

* ``relations.jsonl`` — relation id, manual template with ``[X]``/``[Y]``, label, type
  (and, for ptune's synthetic world, ``train_templates``: the pretraining wordings, and
  ``manual_templates``: hand-written wordings for ``ProbeConfig.wording``);
* ``fact-retrieval/<relation>/{train,dev,test}.jsonl`` (also under ``fact-retrieval/original/``),
  or LAMA's original per-relation ``<relation>.jsonl`` files (used as the test split);
* ``common_vocab_cased.txt`` and ``29k-vocab.json`` for the candidate vocabulary.

Methods, all with the LM frozen and one prompt per relation:

* ``manual`` — the relation's template, zero-shot;
* ``ptuning`` — ``[P*3] [X] [P*3] [MASK] [P*3]`` (masked) or ``[P*3] [X] [P*3] [MASK]``
  (causal): subject before the answer, unlike the original code (spec §4 item 1);
* ``hybrid`` — pseudo tokens around the manual template's words (the paper's v2);
* ``oracle`` — the best pretraining wording on dev (only where ``train_templates`` exist);
* ``autoprompt`` and ``mined`` — discrete prompts (:mod:`ptune.tasks.autoprompt`,
  :mod:`ptune.tasks.mining`);
* ``majority`` — the most frequent training object, no model.

Trained prompts are selected on dev P@1 with early stopping and reported on test with
P@1, P@10 and MRR; aggregates are the macro average over relations (LAMA's convention)
and the micro average over facts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import torch

from ..checkpoint import save_checkpoint
from ..config import PromptConfig, TrainConfig
from ..data import Records, read_examples
from ..distributed import UnitsConfig, grid, in_order, is_main, run_units, unit_processes, writes_unit_files
from ..errors import ConfigError, DataError, PtuneError
from ..files import save_figure, write_json_atomic, write_text_atomic
from ..progress import Progress
from ..inference import iter_outputs
from ..lock import locks_folder
from ..metrics import gold_ranks, macro_micro, rank_metrics
from ..lm import KINDS, detect_kind
from ..model import PTunedModel
from ..restarts import RestartConfig, train_restarts
from ..verbalizer import Verbalizer
from .autoprompt import AutoPromptConfig
from .autoprompt import search as autoprompt_search
from .mining import Mined, MiningConfig, mine_corpus, mined_record
from .lama_vocab import VOCABS, Vocab, vocabulary
from .results import RESULTS_FILE, resume_results
from .results import markdown_table as table

__all__ = [
    "Relation", "ProbeConfig", "load_relations", "load_facts", "vocabulary", "hybrid_template", "rank_eval",
    "probe", "markdown_table", "METHODS", "DEFAULT_TEMPLATES", "LAMA_TRAIN",
]

logger = logging.getLogger(__name__)

Method = Literal["manual", "ptuning", "hybrid", "oracle", "majority", "autoprompt", "mined"]
METHODS: tuple[str, ...] = get_args(Method)
TRAINED: tuple[str, ...] = ("ptuning", "hybrid")
"""The methods whose prompt trains through :func:`ptune.trainer.train` (data-parallel when large)."""
DEFAULT_TEMPLATES = {"masked": "[P*3] [X] [P*3] [MASK] [P*3]", "causal": "[P*3] [X] [P*3] [MASK]"}
SPLITS = ("train", "dev", "test")

LAMA_TRAIN = TrainConfig(epochs=40, lr=3e-3, batch_size=16, weight_decay=5e-4, schedule="exponential", gamma=0.98,
                         patience=8, eval_batch_size=64)
"""How each relation's prompt trains, the LM frozen: up to 40 epochs with early stopping on dev P@1."""
PROMPT_FIXED = ("verbalizer", "candidates_field", "label_field", "x_field", "normalize", "kind")
"""The PromptConfig fields that the harness sets for every relation."""
TRAIN_FIXED = ("finetune_lm", "lm_lr", "lm_weight_decay", "lm_dropout", "metric")
"""TrainConfig fields that do not apply: the LM stays frozen and dev P@1 selects."""


@dataclass(frozen=True)
class Relation:
    """One LAMA relation."""

    id: str
    template: str
    label: str = ""
    type: str = ""
    description: str = ""
    train_templates: tuple[str, ...] = ()
    manual_templates: tuple[str, ...] = ()
    """Hand-written wordings for the wording-sensitivity study, the first being ``template``."""

    def wording(self, index: int) -> str | None:
        """Manual wording ``index``: 0 is ``template``, 1.. the further ``manual_templates``."""
        if index == 0:
            return self.template
        return self.manual_templates[index] if index < len(self.manual_templates) else None


def load_relations(data_dir: str | Path) -> dict[str, Relation]:
    """Relations of ``data_dir/relations.jsonl``, by id, in file order."""
    path = Path(data_dir) / "relations.jsonl"
    records = read_examples(path)
    out: dict[str, Relation] = {}
    for ex, src in zip(records.examples, records.sources):
        for key in ("relation", "template"):
            if not isinstance(ex.get(key), str):
                raise DataError(src, "missing or not a string", field=key)
        if "[X]" not in ex["template"] or "[Y]" not in ex["template"]:
            raise DataError(src, f"{ex['template']!r} needs both [X] and [Y]", field="template")
        manual = tuple(ex.get("manual_templates", ()))
        for t in manual:
            if not isinstance(t, str) or "[X]" not in t or "[Y]" not in t:
                raise DataError(src, f"{t!r} needs both [X] and [Y]", field="manual_templates")
        if manual and manual[0] != ex["template"]:
            raise DataError(src, f"the first manual template {manual[0]!r} is not the relation's template "
                                 f"{ex['template']!r}", field="manual_templates")
        out[ex["relation"]] = Relation(
            ex["relation"], ex["template"], ex.get("label", ""), ex.get("type", ""),
            ex.get("description", ""), tuple(ex.get("train_templates", ())), manual,
        )
    return out


def load_facts(data_dir: str | Path, relation: str, split: str) -> Records | None:
    """Facts of one relation and split as examples ``{"subject", "object"}``; None if absent."""
    root = Path(data_dir)
    candidates = [root / "fact-retrieval" / relation / f"{split}.jsonl",
                  root / "fact-retrieval" / "original" / relation / f"{split}.jsonl"]
    if split == "test":
        candidates.append(root / f"{relation}.jsonl")  # LAMA's original T-REx files
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None
    raw = read_examples(path)
    examples = []
    for ex, src in zip(raw.examples, raw.sources):
        for key in ("sub_label", "obj_label"):
            if not isinstance(ex.get(key), str) or not ex[key].strip():
                raise DataError(src, "missing or empty", field=key)
        examples.append({"subject": ex["sub_label"], "object": ex["obj_label"]})
    return Records(examples, raw.sources)


def hybrid_template(manual: str, kind: str) -> str:
    """Pseudo tokens around the manual template's words: ``[P*3] <manual> [P*3]``.

    A causal LM reads nothing after the answer slot, so its second block stands right before
    ``[Y]`` instead. A masked LM keeps the manual words next to its mask: with a pseudo block
    between them and ``[MASK]``, prompt training stays at the majority guess on the demo
    world's BERT (docs/lama.md measures the placements).
    """
    if KINDS[kind].answer_in_input:
        return f"[P*3] {manual} [P*3]"
    return "[P*3] " + manual.replace("[Y]", "[P*3] [Y]")


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """What ``ptune probe`` runs (every field is recorded in ``results.json``)."""

    relations: tuple[str, ...] | None = None
    """Relation ids, or ``all``: every relation of relations.jsonl."""
    methods: tuple[Method, ...] = ("manual", "ptuning")
    """Any of manual, ptuning, hybrid (pseudo tokens around the manual words), oracle (the
    best pretraining wording, where relations.jsonl has them), autoprompt (tokens searched
    at the P-tuning template's pseudo positions), mined (templates mined from ``corpus``)
    and majority."""
    wording: int = 0
    """Which manual wording ``manual`` and ``hybrid`` use: 0 is the relation's ``template``,
    1.. its further ``manual_templates`` in relations.jsonl (relations without one are skipped)."""
    vocab: Vocab = "common"
    """Candidate answers: LAMA's common_vocab_cased.txt (common), the tokenizer's vocabulary
    (original) or the paper's 29k-vocab.json (29k); always the words that are one token."""
    prompt: Mapping[str, Any] = field(default_factory=dict)
    """PromptConfig fields of the trained prompts: ``template`` (default: ``DEFAULT_TEMPLATES``
    for the model kind), ``encoder``, ``max_length``...; the harness sets the others."""
    train: TrainConfig | Mapping[str, Any] = LAMA_TRAIN
    """How each relation's prompt trains: a TrainConfig, or some of its fields that replace
    those of ``LAMA_TRAIN``."""
    autoprompt: AutoPromptConfig | Mapping[str, Any] = field(default_factory=AutoPromptConfig)
    """AutoPrompt's search (its rounds, batches and dev selection follow ``train``)."""
    mining: MiningConfig | Mapping[str, Any] = field(default_factory=MiningConfig)
    """The corpus of the ``mined`` method and how many mined templates it scores."""
    restarts: int = 2
    """ptuning and hybrid: a prompt whose best dev P@1 is below ``restart_below`` (a stall)
    trains again with the next seed, at most this many times; the best on dev is kept."""
    restart_below: float = 0.0
    """The dev P@1 below which a trained prompt counts as stalled and trains again; 0 (the
    default): never. The demo uses 0.5; on real LAMA, where many relations stay below 0.5
    with any prompt, restarts mostly cost time."""

    def __post_init__(self) -> None:
        if self.relations is not None and [r.strip().lower() for r in self.relations] == ["all"]:
            object.__setattr__(self, "relations", None)
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError("methods", f"{m!r}; accepted: {', '.join(METHODS)}")
        if self.wording < 0:
            raise ConfigError("wording", f"must be 0 or more, got {self.wording}")
        if self.vocab not in VOCABS:
            raise ConfigError("vocab", f"{self.vocab!r}; accepted: {', '.join(VOCABS)}")
        object.__setattr__(self, "prompt", PromptConfig.check_fields(self.prompt, PROMPT_FIXED, "the LAMA harness"))
        if not isinstance(self.train, TrainConfig):
            object.__setattr__(self, "train", LAMA_TRAIN.updated(self.train))
        object.__setattr__(self, "autoprompt", AutoPromptConfig.of(self.autoprompt))
        object.__setattr__(self, "mining", MiningConfig.of(self.mining))
        RestartConfig(restarts=self.restarts, restart_below=self.restart_below)  # validates both
        if "mined" in self.methods and self.mining.corpus is None:
            raise ConfigError("corpus", "the mined method needs a corpus file (one sentence per line)")


def rank_eval(model: PTunedModel | Sequence[PTunedModel], examples: list[dict], sources: list[str],
              batch_size: int = 64) -> dict[str, float]:
    """P@1, P@10, MRR of the gold object among the candidates; for several prompts, of their
    mean scores (LPAQA's ensemble: the mean log-probability of each candidate)."""
    if not examples:
        return rank_metrics([])
    total, gold = None, None
    for m in [model] if isinstance(model, PTunedModel) else model:
        items = m.prepare(examples, sources, require_labels=True)
        outs = [(batch.labels, out.scores.float()) for _, batch, out in iter_outputs(m, items, batch_size)]
        gold, scores = torch.cat([g for g, _ in outs]), torch.cat([s for _, s in outs])
        total = scores if total is None else total + scores
    assert total is not None and gold is not None
    return rank_metrics(gold_ranks(total, gold).cpu())


def _majority(facts: dict[str, Records], evals: list[str]) -> dict[str, Any]:
    """The most frequent training object as the answer to every fact."""
    if not facts.get("train") or not facts["train"].examples:
        return {"skipped": "no training facts"}
    top = Counter(ex["object"] for ex in facts["train"].examples).most_common(1)[0][0]
    out: dict[str, Any] = {"answer": top}
    for s in evals:
        hits = [ex["object"] == top for ex in facts[s].examples]
        out[s] = {"n": len(hits), "p@1": sum(hits) / len(hits)}
    return out


def _probe_relation(lm: Any, tokenizer: Any, kind: str, rel: Relation, method: str, facts: dict[str, Records],
                    words: list[str], config: ProbeConfig, ckpt_dir: Path, model_name: str,
                    mined: Mapping[str, list[Mined]] | None = None) -> dict[str, Any]:
    from accelerate.utils import set_seed

    split = {s: (r.examples, r.sources) for s, r in facts.items()}
    evals = [s for s in ("dev", "test") if split.get(s) and split[s][0]]
    if method == "majority":
        return _majority(facts, evals)
    verbalizer = Verbalizer.from_vocabulary(words).to_dict()

    tc = config.train
    assert isinstance(tc, TrainConfig)

    def wrap(template: str, seed: int = tc.seed, **fixed: Any) -> PTunedModel:
        set_seed(seed)
        cfg = PromptConfig(**{**config.prompt, "template": template, "verbalizer": verbalizer,
                              "label_field": "object", "normalize": "vocab", "kind": kind, **fixed})
        return PTunedModel(lm, tokenizer, cfg, base_model=model_name, seed=seed)

    manual = rel.wording(config.wording)
    if manual is None and method in ("manual", "hybrid"):
        return {"skipped": f"no manual wording {config.wording} (manual_templates) for this relation"}
    if method in ("manual", "oracle", "mined"):
        found = list((mined or {}).get(rel.id, ()))
        templates = {"manual": [manual], "oracle": list(rel.train_templates),
                     "mined": [m.template for m in found]}[method]
        if not templates:
            return {"skipped": "no pretraining wordings (train_templates) for this relation" if method == "oracle"
                    else "no corpus sentence holds a training fact's subject and object"}
        if not KINDS[kind].answer_in_input:  # the LM reads nothing after the answer slot
            usable = [t for t in templates if t.index("[Y]") > t.index("[X]")]
            if not usable:
                return {"skipped": "the answer slot precedes the subject; a causal LM cannot read it"}
            templates = usable
        templates = templates[:config.mining.mined_candidates] if method == "mined" else templates
        # the oracle's wording is chosen on dev; mined templates are ranked on the training facts (LPAQA)
        pick = split.get("train") if method == "mined" else split.get("dev") or split.get("train")
        scored = sorted(((rank_eval(wrap(t), *pick, tc.eval_batch_size)["p@1"], -i, t) for i, t in enumerate(templates)),
                        reverse=True) if len(templates) > 1 and pick else [(None, 0, templates[0])]
        chosen = [wrap(t) for _, _, t in scored[:config.mining.mined_ensemble if method == "mined" else 1]]
        out = {"template": scored[0][2], **{s: rank_eval(chosen, *split[s], tc.eval_batch_size) for s in evals}}
        if len(chosen) > 1:
            out["ensemble"] = [t for _, _, t in scored[:len(chosen)]]
        if method == "mined":
            out.update(mined_record(found, [(t, p) for p, _, t in scored]))
        return out

    template = config.prompt.get("template") or DEFAULT_TEMPLATES[kind]
    if method == "hybrid":
        template = hybrid_template(manual, kind)
    if not split.get("train") or len(split["train"][0]) < 2:
        return {"skipped": "too few training facts"}
    tc = dataclasses.replace(tc, batch_size=min(tc.batch_size, len(split["train"][0])))

    def make(attempt: int, cfg: TrainConfig) -> tuple[PTunedModel, list, list | None, dict[str, Any]]:
        m = wrap(template, cfg.seed, **({"encoder": "none"} if method == "autoprompt" else {}))
        return (m, m.prepare(*split["train"], require_labels=True),
                m.prepare(*split["dev"], require_labels=True) if "dev" in evals else None, {})

    if method == "autoprompt":
        model, train_items, dev_items, _ = make(0, tc)
        dev_score = None if dev_items is None else lambda m: [rank_eval(m, *split["dev"], tc.eval_batch_size)[k]
                                                              for k in ("p@1", "mrr")]  # ties broken by MRR
        found = autoprompt_search(model, train_items, dev_score, tc, config.autoprompt)  # type: ignore[arg-type]
        out = {"template": template, **found.record(template, tokenizer)}
    else:  # best weights are kept in memory; a stalled prompt trains again (ptune.restarts)
        processes = unit_processes()  # 1, or all of them for a large relation (ptune.distributed)
        kept = train_restarts(make, tc, RestartConfig(restarts=config.restarts, restart_below=config.restart_below),
                              progress=False, alone=processes == 1)
        model, result = kept.model, kept.result
        out = {"template": template, "steps": result.steps, "best_step": result.best_step,
               "stopped_early": result.stopped_early,
               **({"attempts": kept.attempts} if len(kept.attempts) > 1 else {}),
               **({"processes": processes} if processes > 1 else {})}
    if writes_unit_files():
        save_checkpoint(model, ckpt_dir)  # one serving checkpoint
    for s in evals:
        out[s] = rank_eval(model, *split[s], tc.eval_batch_size)
    return out


def _kept_facts(data_dir: str | Path, relation: str, vocab: set[str]) -> tuple[dict[str, Records], dict[str, Any]]:
    """The relation's facts per split whose object is a candidate word, and the counts."""
    facts: dict[str, Records] = {}
    counts = {}
    for s in SPLITS:
        rec = load_facts(data_dir, relation, s)
        if rec is None:
            continue
        keep = [i for i, ex in enumerate(rec.examples) if ex["object"] in vocab]
        facts[s] = Records([rec.examples[i] for i in keep], [rec.sources[i] for i in keep])
        counts[s] = {"total": len(rec.examples), "kept": len(keep)}
    return facts, counts


@locks_folder("output_dir")
def probe(lm: Any, tokenizer: Any, data_dir: str | Path, output_dir: str | Path, config: ProbeConfig | None = None,
          *, model_name: str = "model", base_model: str | None = None, progress: bool = False,
          units: UnitsConfig | None = None) -> dict[str, Any]:
    """Probe a frozen LM on LAMA relations; resumable (finished relation/method pairs are kept).

    Writes ``results.json``, ``results.md``, ``p_at_1.png`` and ``checkpoints/<rel>/<method>/``
    under ``output_dir`` and returns the results. ``model_name`` labels the results;
    ``base_model`` (default: ``model_name``) is the name or folder the checkpoints load
    their LM from; ``units``: which relations train data-parallel under a launch.
    """
    config = config or ProbeConfig()
    units = units or UnitsConfig()
    out = Path(output_dir)
    kind = detect_kind(lm)
    relations = load_relations(data_dir)
    wanted = list(config.relations or relations)
    unknown = [r for r in wanted if r not in relations]
    if unknown:
        raise ConfigError("relations", f"{', '.join(unknown)} not in {Path(data_dir) / 'relations.jsonl'}")
    # every LAMA template has a space before the answer slot: words are spelled as new words
    words = vocabulary(config.vocab, tokenizer, data_dir, space_before=True,
                       model_type=getattr(lm.config, "model_type", None))
    assert isinstance(config.train, TrainConfig)
    settings = {"model": model_name, "kind": kind, "data_dir": str(data_dir), "vocab": config.vocab,
                "vocab_size": len(words), "prompt": dict(config.prompt), "train": config.train.to_dict(),
                "restarts": {"restarts": config.restarts, "restart_below": config.restart_below},
                **({"wording": config.wording} if config.wording else {}),
                **{k: dataclasses.asdict(v) for k, v in (("autoprompt", config.autoprompt), ("mining", config.mining))
                   if v != type(v)()}}  # recorded where not the default: earlier runs stay resumable
    results = resume_results(out, settings, "relations")
    vocab_set = set(words)
    mined = None
    if "mined" in config.methods and any("mined" not in results["relations"].get(r, {}).get("methods", {})
                                         for r in wanted):
        train = {r: _kept_facts(data_dir, r, vocab_set)[0].get("train") for r in wanted}
        mined, results["mining"] = mine_corpus(config.mining, {r: f.examples for r, f in train.items() if f})
    lm.eval()
    facts: dict[str, dict[str, Records]] = {}
    for rid in wanted:
        entry = results["relations"].setdefault(rid, {"label": relations[rid].label, "methods": {}})
        facts[rid], entry["facts"] = _kept_facts(data_dir, rid, vocab_set)
    order = grid(wanted, config.methods)
    todo = [(r, m) for r, m in order if m not in results["relations"][r]["methods"]]
    bar = Progress(len(order), f"probe {model_name}", "run", initial=len(order) - len(todo),
                   enabled=progress and is_main())

    def run(unit: tuple[str, str]) -> tuple[dict[str, Any], float]:
        rid, method = unit
        bar.note(f"{rid} {method}")
        start = time.perf_counter()
        try:
            record = _probe_relation(lm, tokenizer, kind, relations[rid], method, facts[rid], words, config,
                                     out / "checkpoints" / rid / method, base_model or model_name, mined)
        except PtuneError as e:
            record = {"skipped": str(e)}
        return record, round(time.perf_counter() - start, 2)

    def on_round(done: list[tuple[tuple[str, str], tuple[dict[str, Any], float]]]) -> None:
        for (rid, method), (record, seconds) in done:
            entry = results["relations"][rid]
            for key, value in (("methods", record), ("seconds", seconds)):
                entry[key] = in_order({**entry.get(key, {}), method: value}, config.methods)
        results["summary"] = summarize(results, config.methods)
        bar.update(len(done))

    def together(unit: tuple[str, str]) -> bool:
        rid, method = unit
        n = len(facts[rid]["train"].examples) if "train" in facts[rid] else 0
        return method in TRAINED and units.data_parallel(n, min(config.train.batch_size, n), config.train.grad_accum)

    run_units(todo, run, on_round=on_round, save=lambda: write_json_atomic(out / RESULTS_FILE, results),
              together=together)
    bar.close()
    results["summary"] = summarize(results, config.methods)
    if is_main():
        write_json_atomic(out / RESULTS_FILE, results)
        write_text_atomic(out / "results.md", markdown_table(results, config.methods))
        plot_p_at_1(results, config.methods, out / "p_at_1.png")
    return results


def summarize(results: dict[str, Any], methods: Sequence[str]) -> dict[str, Any]:
    """Macro and micro averages per method and split."""
    summary: dict[str, Any] = {}
    for m in methods:
        for s in ("dev", "test"):
            per = {r: e["methods"][m][s] for r, e in results["relations"].items()
                   if m in e["methods"] and s in e["methods"][m]}
            if per:
                keys = [k for k in ("p@1", "p@10", "mrr") if all(k in v for v in per.values())]
                summary.setdefault(m, {})[s] = macro_micro(per, keys)
    return summary


def _split_of(results: dict[str, Any]) -> str:
    has_test = any("test" in v for e in results["relations"].values() for v in e["methods"].values())
    return "test" if has_test else "dev"


def markdown_table(results: dict[str, Any], methods: Sequence[str]) -> str:
    """Per-relation P@1 of each method on test (dev where no test), plus averages."""
    split = _split_of(results)
    rows: list[list[Any]] = []
    for rid, e in results["relations"].items():
        runs = [e["methods"].get(m, {}) for m in methods]
        rows.append([rid, e.get("label", ""), e.get("facts", {}).get(split, {}).get("kept", 0),
                     *(f"{r[split]['p@1']:.3f}" if split in r else "–" for r in runs)])
    summary = results.get("summary") or summarize(results, methods)
    for avg in ("macro", "micro"):
        cells = [f"{summary[m][split][avg]['p@1']:.3f}" if split in summary.get(m, {}) else "–" for m in methods]
        rows.append([f"**{avg}**", "", "", *(f"**{c}**" for c in cells)])
    return table(["relation", "label", f"n ({split})", *methods], rows)


def plot_p_at_1(results: dict[str, Any], methods: Sequence[str], path: Path, title: str | None = None) -> None:
    """A grouped bar chart of P@1 per relation and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = _split_of(results)
    rels = list(results["relations"])
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rels) * max(1, len(methods)) / 2 + 2), 4))
    for k, m in enumerate(methods):
        vals = [results["relations"][r]["methods"].get(m, {}).get(split, {}).get("p@1", 0.0) for r in rels]
        ax.bar([i + k * width for i in range(len(rels))], vals, width, label=m)
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(rels))], rels, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"P@1 ({split})")
    ax.set_title(title or f"LAMA P@1 per relation — {results['settings']['model']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
