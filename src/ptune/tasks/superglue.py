"""SuperGLUE and FewGLUE (paper §3): the eight tasks, their patterns, metrics and baselines.

One call trains and evaluates a model on one or all tasks::

    ptune superglue --task RTE --model albert-xxlarge-v2 --data-dir FewGLUE_32dev \\
        --setting fewshot --method ptuning --seeds 1,2,3 --output runs/rte

Methods:

* ``ptuning`` — the task's pattern with pseudo tokens and anchors (§3.3), LM tuned jointly
  by default (LM lr 1e-5, prompt encoder lr 1e-4, as the paper);
* ``manual`` — the same pattern without its pseudo tokens, trained the same way (PET);
  with a frozen LM nothing is trained: the zero-shot manual-prompt baseline;
* ``finetune`` — no pattern: a classification head on the first (masked LM) or last
  (causal LM) token, or a scalar head per candidate for COPA and ReCoRD.

How answers are read:

* classification tasks (BoolQ, CB, MultiRC, RTE, WiC) score each label's verbalizer word
  at the answer slot; the loss is cross-entropy over the labels;
* COPA and ReCoRD score each of an example's candidates (choices, entities) by its
  log-probability at the answer slot — the sum over its tokens (``--length-norm mean``:
  the per-token mean), read from one forward pass with as many masks as the candidate
  has tokens (masked LMs; ``--multi-token iterative`` fills them one at a time at
  evaluation, most probable first, as PET) or as the continuation (causal LMs); the
  loss is cross-entropy over the candidates;
* WSC is generative (PET): training maximises the log-probability of the referent
  (the ``True`` examples only); at evaluation the model writes as many tokens as the
  referent has (iterative mask filling for masked LMs, greedy decoding for causal
  LMs) and the example counts as ``True`` when the words of one contain the other's.

Settings: ``fewshot`` trains on ``train.jsonl`` (the 32 FewGLUE examples), selects the
checkpoint on ``dev32.jsonl`` every ``eval_every`` steps with early stopping and
reports ``val.jsonl``; ``full`` trains on a full ``train.jsonl``, selects on
``dev32.jsonl`` when present (else on a held-out 10% of train, at most 1,000
examples) and reports ``val.jsonl``. Every (task, seed) run is kept in
``runs/<Task>/seed<N>/result.json``; a rerun skips the finished ones.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, get_args

from ..checkpoint import save_checkpoint
from ..config import PromptConfig, TrainConfig
from ..data import Records
from ..distributed import UnitsConfig, device, is_main, run_units, unit_processes, writes_unit_files
from ..errors import ConfigError
from ..files import read_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from ..progress import Progress
from ..syntax import strip_pseudo
from ..finetune import ClassifierConfig, ClassifierModel
from ..inference import iter_outputs
from ..lock import locks_folder
from ..metrics import f1_macro, multirc_metrics, record_metrics
from ..lm import load_base, max_positions
from ..model import PTunedModel
from ..trainer import train
from . import recipe
from .superglue_losses import wsc_match
from .results import RESULTS_FILE, mean_std_cell, resume_results, summarize_seeds
from .results import markdown_table as table
from .submission import EVAL_SETS, prediction_rows, publish, run_file
from .superglue_data import LABELS, TASKS, canonical_task, load_splits, train_examples

__all__ = ["TaskSpec", "SPECS", "SuperGlueConfig", "run_superglue", "strip_pseudo", "evaluate_task", "build_model",
           "load_splits", "markdown_table", "METHODS", "SETTINGS", "SUPERGLUE_TRAIN"]

logger = logging.getLogger(__name__)

Method = Literal["ptuning", "manual", "finetune"]
METHODS: tuple[str, ...] = get_args(Method)
Setting = Literal["fewshot", "full"]
SETTINGS: tuple[str, ...] = get_args(Setting)

SUPERGLUE_TRAIN = TrainConfig(batch_size=16, lm_lr=1e-5, weight_decay=0.0, lm_weight_decay=0.1, schedule="linear",
                              warmup_steps=0, max_grad_norm=1.0, eval_every=20, patience=10, metric="score",
                              finetune_lm=True)
"""The harness's training (the paper's): the LM tuned jointly, dev32 score every 20 steps,
early stopping after 10 evaluations; ``steps`` and ``lr`` come from the task's spec."""
PROMPT_FIXED = ("template", "verbalizer", "candidates_field", "label_field", "x_field", "normalize", "kind")
"""The PromptConfig fields that the task's spec decides (``pattern`` picks the template)."""
TRAIN_FIXED = ("epochs", "seed")
"""TrainConfig fields a run cannot take: it counts steps, and ``seeds`` lists the seeds."""


@dataclass(frozen=True)
class TaskSpec:
    """How ptune runs one SuperGLUE task.

    Attributes:
        name: the task's SuperGLUE name.
        mode: ``classify`` (verbalizer), ``choice`` (per-example candidates) or
            ``generate`` (WSC).
        patterns: pattern name -> template; the paper's pattern is ``p1``.
        default: model kind -> default pattern name.
        verbalizer: label -> word (``classify`` only).
        metrics: the task's SuperGLUE metrics; their mean is the task ``score``.
        finetune_inputs: the text segments of the fine-tuning baseline.
        max_length: input length in tokens (§3.6).
        steps: the paper's ``max_steps`` in the few-shot setting.
        lr: the paper's prompt-encoder learning rate.
    """

    name: str
    mode: str
    patterns: dict[str, str]
    default: dict[str, str]
    verbalizer: dict[str, str] | None
    metrics: tuple[str, ...]
    finetune_inputs: tuple[str, ...]
    max_length: int
    steps: int
    lr: float


_PATTERNS = (  # task, pattern name, template; p1 is the paper's
    ("BoolQ", "p1", "{passage:shorten} . [P] Question: {question:shorten} ? Answer: [MASK] ."),
    ("BoolQ", "p2", "{passage:shorten} [P] Question: {question:shorten} ? [P] Answer: [MASK] ."),
    ("CB", "p1", "{premise:shorten} [SEP] {hypothesis:shorten} ? [P] answer: [MASK]"),
    ("CB", "p2", "{premise:shorten} Question: {hypothesis:shorten} ? [P] Answer: [MASK] ."),
    ("COPA", "p1", "{choice1_stem} or {choice2_stem} ? {premise_stem} {connective} [P] [MASK] ."),
    ("COPA", "p2", "{premise_stem} {connective} [P*2] [MASK] ."),
    ("MultiRC", "p1", "{passage:shorten} . Question: {question:shorten} ? Is it {answer} ? [P] [MASK] ."),
    ("MultiRC", "p2", "{passage:shorten} . Question: {question:shorten} ? [P] Is the correct answer \" {answer} \" ? [MASK] ."),
    ("ReCoRD", "p1", "{passage:shorten} [P] {query_left}[MASK]{query_right}"),
    ("ReCoRD", "p2", "{passage:shorten} [P] {query:shorten} [P] @placeholder is [MASK]"),
    ("RTE", "p1", "{premise:shorten} Question: {hypothesis_stem:shorten} ? [P] Answer: [MASK] ."),
    ("RTE", "p2", "{premise:shorten} [P] Question: {hypothesis_stem:shorten} ? [P] Answer: [MASK] ."),
    ("WiC", "p1", "{sentence1:shorten} [SEP] {sentence2:shorten} [P] *{word}* ? [MASK]"),
    ("WiC", "p2", "{sentence1:shorten} {sentence2:shorten} [P] Does *{word}* mean the same in both ? [MASK]"),
    ("WiC", "p3", "{sentence1:shorten} [SEP] {sentence2:shorten} [P] *{word}* ? [P] [MASK]"),
    ("WSC", "p1", "{text_marked:shorten} [P] pronoun '*{span2}*' refers to [MASK] ."),
    ("WSC", "p2", "[P] {text_marked:shorten} [P] pronoun '*{span2}*' refers to [MASK] ."),
)
_YES_NO = {"False": "No", "True": "Yes"}
_CB = {"entailment": "Yes", "contradiction": "No", "neutral": "Maybe"}
_RTE = {"entailment": "Yes", "not_entailment": "No"}
_TWO = ("{premise}", "{hypothesis}")
_SPECS = (  # task, mode, default pattern (masked, causal), verbalizer, metrics, fine-tuning inputs, max_length,
    # few-shot steps, lr
    ("BoolQ", "classify", ("p1", "p1"), _YES_NO, ("accuracy",), ("{question}", "{passage}"), 256, 250, 1e-4),
    ("CB", "classify", ("p1", "p2"), _CB, ("accuracy", "f1"), _TWO, 256, 250, 1e-5),
    ("COPA", "choice", ("p1", "p1"), None, ("accuracy",), ("{premise} {connective}", "{candidate}"), 96, 3500, 1e-5),
    ("MultiRC", "classify", ("p1", "p1"), {"0": "No", "1": "Yes"}, ("f1a", "em"),
     ("{passage}", "{question} {answer}"), 512, 250, 1e-4),
    ("ReCoRD", "choice", ("p1", "p2"), None, ("f1", "em"), ("{passage}", "{query_left}{candidate}{query_right}"),
     512, 250, 1e-4),
    ("RTE", "classify", ("p1", "p1"), _RTE, ("accuracy",), _TWO, 256, 3500, 1e-4),
    ("WiC", "classify", ("p1", "p2"), _YES_NO, ("accuracy",), ("{word} : {sentence1}", "{sentence2}"), 256, 3500, 1e-5),
    ("WSC", "generate", ("p2", "p2"), None, ("accuracy",), ("{text}", "{span2} : {span1}"), 128, 3500, 1e-4),
)
SPECS: dict[str, TaskSpec] = {
    task: TaskSpec(task, mode, {name: t for of, name, t in _PATTERNS if of == task},
                   {"masked": default[0], "causal": default[1]}, *rest)
    for task, mode, default, *rest in _SPECS
}
assert tuple(sorted(SPECS)) == tuple(sorted(TASKS))

@dataclass(frozen=True, kw_only=True)
class SuperGlueConfig(recipe.RecipeOptions):
    """One ``ptune superglue`` run (every field is recorded in ``results.json``; recipe: :mod:`ptune.tasks.recipe`)."""

    tasks: tuple[str, ...] = TASKS
    """Task names (any case), or ``all``."""
    method: Method = "ptuning"
    """``ptuning`` (the pattern with pseudo tokens), ``manual`` (without them; with a frozen
    LM nothing is trained: zero-shot) or ``finetune`` (a classification head, no pattern)."""
    setting: Setting = "fewshot"
    """``fewshot``: train on the 32 examples, select on dev32; ``full``: train on a full
    train.jsonl, select on dev32 or a held-out 10% of train."""
    seeds: tuple[int, ...] = (42,)
    """One run per seed; results are the mean and std over them."""
    pattern: str | None = None
    """A pattern name of the task (``p1``...) or a template text; default per model kind."""
    limit_eval: int | None = None
    """Evaluate on at most this many val examples (quick runs; recorded in the results)."""
    eval_set: Literal["val", "test"] = "val"
    """The split whose predictions go to predictions/<Task>.jsonl in the leaderboard's format:
    ``val``, or ``test`` (SuperGLUE's unlabelled test.jsonl, for a submission)."""
    skip_invalid: bool = False
    """Skip data lines that do not fit the task (their count is reported) instead of stopping."""
    save_checkpoints: bool = False
    """Keep a serving checkpoint of every (task, seed) run."""
    prompt: Mapping[str, Any] = field(default_factory=dict)
    """PromptConfig fields of every task's prompt (``encoder``, ``max_length``: default the
    paper's per task, ``length_norm``, ``multi_token``...); the task's spec sets the others."""
    train: Mapping[str, Any] = field(default_factory=dict)
    """TrainConfig fields that replace those of ``SUPERGLUE_TRAIN`` and the task's ``steps``
    and ``lr`` (the paper's; 1e-3 with a frozen LM)."""

    def __post_init__(self) -> None:
        self.check_recipe()
        if self.method not in METHODS:
            raise ConfigError("method", f"{self.method!r}; accepted: {', '.join(METHODS)}")
        if self.eval_set not in EVAL_SETS:
            raise ConfigError("eval_set", f"{self.eval_set!r}; accepted: {', '.join(EVAL_SETS)}")
        if self.setting not in SETTINGS:
            raise ConfigError("setting", f"{self.setting!r}; accepted: {', '.join(SETTINGS)}")
        tasks = TASKS if [t.strip().lower() for t in self.tasks] == ["all"] else self.tasks
        object.__setattr__(self, "tasks", tuple(canonical_task(t) for t in tasks))
        if not self.seeds or not all(isinstance(s, int) for s in self.seeds):
            raise ConfigError("seeds", f"give one or more integers, got {self.seeds!r}")
        if self.limit_eval is not None and (not isinstance(self.limit_eval, int) or self.limit_eval < 1):
            raise ConfigError("limit_eval", f"must be a positive integer, got {self.limit_eval!r}")
        object.__setattr__(self, "prompt", PromptConfig.check_fields(self.prompt, PROMPT_FIXED, "the task's spec"))
        for key in TRAIN_FIXED:
            if key in self.train:
                raise ConfigError(f"train.{key}", f"not an option of the SuperGLUE harness ({TRAIN_FIXED[0]}: "
                                  "give steps; seed: give seeds)")
        SUPERGLUE_TRAIN.updated(self.train)  # checks the fields and values
        object.__setattr__(self, "train", dict(self.train))

    @property
    def frozen(self) -> bool:
        """The LM stays frozen: only the prompt (or the classification head) trains."""
        return not self.train.get("finetune_lm", SUPERGLUE_TRAIN.finetune_lm)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tasks"], d["seeds"] = list(self.tasks), list(self.seeds)
        d["prompt"], d["train"] = dict(self.prompt), dict(self.train)
        return d


@dataclass
class Split:
    """Examples of one split, prepared for the task's model (``items``) and as read."""

    examples: list[dict[str, Any]]
    sources: list[str]
    items: list[Any] = field(default_factory=list)


def _with_answer_index(spec: TaskSpec, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """WSC's pattern scores the referent (``choices`` = [span1]): its target index is 0."""
    if spec.mode != "generate":
        return examples
    return [{**ex, "target": 0} for ex in examples]


# ----------------------------------------------------------------------------- models
def _template(spec: TaskSpec, config: SuperGlueConfig, kind: str) -> str:
    name = config.pattern or recipe.paper_template(spec.name, config, spec.default[kind]) or spec.default[kind]
    template = spec.patterns.get(name, name if ("[MASK]" in name or "[Y]" in name) else None)
    if template is None:
        raise ConfigError("pattern", f"{name!r} is neither a pattern of {spec.name} "
                          f"({', '.join(spec.patterns)}) nor a template with [MASK]")
    return strip_pseudo(template) if config.method == "manual" else template


def build_model(spec: TaskSpec, config: SuperGlueConfig, lm: Any, tokenizer: Any, kind: str, seed: int,
                base_model: str) -> PTunedModel | ClassifierModel:
    """The model of one run: a P-tuned model for ptuning/manual, a classifier for finetune."""
    max_length = config.prompt.get("max_length") or min(spec.max_length, max_positions(lm, tokenizer))
    if config.method == "finetune":
        labels = None if spec.mode == "choice" else LABELS[spec.name]
        cfg = ClassifierConfig(inputs=list(spec.finetune_inputs), labels=labels,
                               candidates_field="choices" if spec.mode == "choice" else None,
                               max_length=max_length, kind=kind)
        return ClassifierModel(lm, tokenizer, cfg, base_model=base_model, seed=seed)
    prompt = PromptConfig(**{
        **recipe.prompt_defaults(spec.name, config, config.prompt, max_length=max_length, tokenizer=tokenizer,
                                 hidden_size=lm.get_input_embeddings().embedding_dim),
        "template": _template(spec, config, kind), "verbalizer": spec.verbalizer or {},
        "candidates_field": None if spec.mode == "classify" else "choices",
        "label_field": "target" if spec.mode == "generate" else "label",
        "normalize": "vocab" if spec.mode == "generate" else "labels", "kind": kind,
    })
    return recipe.build(spec.name, config, lm, tokenizer, prompt, base_model=base_model, seed=seed)


# ----------------------------------------------------------------------------- evaluation
def _predict_indices(model: Any, items: Sequence[Any], batch_size: int) -> list[int]:
    return [i for _, _, out in iter_outputs(model, items, batch_size) for i in out.scores.argmax(-1).tolist()]


def evaluate_task(spec: TaskSpec, model: Any, items: Sequence[Any], examples: Sequence[dict[str, Any]],
                  batch_size: int = 32) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """SuperGLUE metrics of ``model`` on prepared ``items`` (and their raw ``examples``),
    with one prediction per example (:func:`ptune.tasks.submission.prediction_rows`).

    The returned metrics include ``score``: the mean of the task's metrics (SuperGLUE's
    task score), used for model selection.
    """
    labels = predict_task(spec, model, items, examples, batch_size)
    return _metrics(spec, labels, examples), prediction_rows(spec.name, labels, examples)


def predict_task(spec: TaskSpec, model: Any, items: Sequence[Any], examples: Sequence[dict[str, Any]],
                 batch_size: int = 32) -> list[Any]:
    """The predicted label of each example: a label of ``LABELS``, COPA's choice index, ReCoRD's entity."""
    was = model.training
    model.eval()
    try:
        if spec.mode == "generate" and isinstance(model, PTunedModel):
            gen = model.generate(items, [len(it.candidates[0]) for it in items], batch_size=batch_size)
            labels = ["True" if wsc_match(g["text"], ex["span1"]) else "False" for g, ex in zip(gen, examples)]
        else:
            idx = _predict_indices(model, items, batch_size)
            if spec.name == "COPA":
                labels = idx
            elif spec.mode == "choice":
                labels = [ex["choices"][i] for i, ex in zip(idx, examples)]
            else:
                labels = [LABELS[spec.name][i] for i in idx]  # type: ignore[index]
    finally:
        model.train(was)
    return labels


def _metrics(spec: TaskSpec, pred: list[Any], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
    n = len(examples)
    if spec.name == "ReCoRD":
        m = record_metrics(pred, [ex["answers"] for ex in examples])
    elif spec.name == "COPA":
        m = {"accuracy": sum(p == ex["label"] for p, ex in zip(pred, examples)) / max(1, n), "n": n}
    else:
        labels = LABELS[spec.name]
        assert labels is not None
        p_idx = [labels.index(p) for p in pred]
        g_idx = [labels.index(ex["label"]) for ex in examples]
        if spec.name == "MultiRC":
            m = multirc_metrics(p_idx, g_idx, [(ex["passage_idx"], ex["question_idx"]) for ex in examples])
        else:
            m = {"accuracy": sum(p == g for p, g in zip(p_idx, g_idx)) / max(1, n), "n": n}
            if spec.name == "CB":
                m["f1"] = f1_macro(p_idx, g_idx)
    m = {k: (int(v) if k == "n" else float(v)) for k, v in m.items()}
    m["score"] = sum(m[k] for k in spec.metrics) / len(spec.metrics)
    return m


# ----------------------------------------------------------------------------- one run
def _train_config(spec: TaskSpec, config: SuperGlueConfig, seed: int, n_train: int) -> TrainConfig:
    task = {"steps": spec.steps, "lr": 1e-3 if config.frozen else spec.lr}
    tc = SUPERGLUE_TRAIN.updated({**task, **recipe.train_defaults(spec.name, config), **config.train, "seed": seed})
    assert tc.steps is not None
    return dataclasses.replace(tc, batch_size=min(tc.batch_size, n_train),
                               eval_every=min(tc.eval_every or tc.steps, tc.steps))


def run_one(spec: TaskSpec, config: SuperGlueConfig, splits: dict[str, Records], model_name: str, seed: int,
            out: Path, *, loader: Callable[[], tuple[Any, Any, str]], progress: bool = False) -> dict[str, Any]:
    """Train (unless there is nothing to train) and evaluate one (task, seed); write its
    predictions and, if asked, a checkpoint under ``out``."""
    lm, tokenizer, kind = loader()
    model = build_model(spec, config, lm, tokenizer, kind, seed, model_name)
    prepared: dict[str, Split] = {}
    for name, rec in splits.items():
        recs = train_examples(spec.name, rec, config.method != "finetune") if name == "train" else rec
        examples = recipe.paper_examples(spec.name, config, _with_answer_index(spec, list(recs.examples)))
        sources = list(recs.sources)
        if name == "val" and config.limit_eval is not None:
            examples, sources = examples[: config.limit_eval], sources[: config.limit_eval]
        split = Split(examples, sources)
        split.items = model.prepare(examples, sources, require_labels=name != "test")
        if name == "train":
            split.items = recipe.training_items(spec.name, config, model, split.items)
        prepared[name] = split
    dev = prepared["dev"]
    tcfg = _train_config(spec, config, seed, len(prepared["train"].items))
    trained: dict[str, Any] = {"trained": False}
    nothing_to_train = config.method == "manual" and config.frozen
    if not nothing_to_train:
        def eval_fn(m: Any, items: Sequence[Any]) -> dict[str, float]:
            return evaluate_task(spec, m, items, dev.examples, batch_size=tcfg.eval_batch_size)[0]

        processes = unit_processes()  # 1, or all of them for a large training set (ptune.distributed)
        result = train(model, prepared["train"].items, dev.items, tcfg, output_dir=None, eval_fn=eval_fn,
                       alone=processes == 1, progress=progress)
        trained = {"trained": True, "steps": result.steps, "best_step": result.best_step,
                   "stopped_early": result.stopped_early, **({"processes": processes} if processes > 1 else {})}
    else:
        model.to(device())
    record: dict[str, Any] = {"seed": seed, **trained, "train_examples": len(prepared["train"].items),
                              "train_config": tcfg.to_dict()}
    # dev32, or the held-out dev split of the full setting when there is no dev32
    for name in ("dev32" if "dev32" in prepared else "dev", "val"):
        if name in prepared:
            metrics, preds = evaluate_task(spec, model, prepared[name].items, prepared[name].examples,
                                           batch_size=tcfg.eval_batch_size)
            record[name] = metrics
            if name == "val" and writes_unit_files():
                write_jsonl_atomic(out / run_file("val"), preds)
    if "test" in prepared:
        test = prepared["test"]
        labels = predict_task(spec, model, test.items, test.examples, batch_size=tcfg.eval_batch_size)
        if writes_unit_files():
            write_jsonl_atomic(out / run_file("test"), prediction_rows(spec.name, labels, test.examples))
    if config.save_checkpoints and writes_unit_files():
        save_checkpoint(model, out / "checkpoint")
    return record


# ----------------------------------------------------------------------------- the harness
@locks_folder("output_dir")
def run_superglue(model: str, data_dir: str | Path, output_dir: str | Path, config: SuperGlueConfig | None = None,
                  *, progress: bool = False, loader: Callable[[], tuple[Any, Any, str]] | None = None,
                  units: UnitsConfig | None = None) -> dict[str, Any]:
    """Run every (task, seed) of ``config``; resumable.

    Writes ``results.json`` (per task: settings, per-seed metrics on val and dev32, mean
    and std), ``results.md`` (a table), ``predictions/<Task>.jsonl`` (the predictions on
    ``config.eval_set`` of the seed with the best dev32 score, in the leaderboard's format:
    :mod:`ptune.tasks.submission`) and ``runs/<Task>/seed<N>/`` (each run's
    result, predictions and optional checkpoint).

    Args:
        model: hub name or folder of the base LM (reloaded fresh for every run).
        data_dir: a folder with ``<Task>/{train,dev32,val}.jsonl``.
        output_dir: where results go; rerunning with the same settings resumes.
        config: tasks, method, setting, seeds and training options.
        loader: returns a fresh ``(lm, tokenizer, kind)``; default: :func:`ptune.lm.load_base`.
        units: which runs train data-parallel under a launch (:class:`ptune.distributed.UnitsConfig`).
    """
    config = config or SuperGlueConfig()
    units = units or UnitsConfig()
    out = Path(output_dir)
    loader = loader or (lambda: load_base(model))
    settings = {"model": model, "data_dir": str(data_dir), **config.to_dict()}
    # tasks and seeds may grow between calls: each (task, seed) run stands alone
    results = resume_results(out, settings, "tasks", may_grow=("tasks", "seeds"))
    splits: dict[str, dict[str, Records]] = {}
    todo = []
    for task in config.tasks:
        splits[task], notes = load_splits(task, data_dir, setting=config.setting, skip_invalid=config.skip_invalid,
                                          test=config.eval_set == "test")
        entry = results["tasks"].setdefault(task, {"runs": {}})
        entry.update(notes=notes, metrics=list(SPECS[task].metrics))
        for seed in config.seeds:
            done = out / "runs" / task / f"seed{seed}" / "result.json"
            if done.is_file():
                entry["runs"][str(seed)] = read_json(done)
            else:
                todo.append((task, seed))
        entry.update(summarize_seeds(entry["runs"]))
    total = len(config.tasks) * len(config.seeds)
    bar = Progress(total, "superglue", "run", initial=total - len(todo), enabled=progress and is_main())

    def run(unit: tuple[str, int]) -> dict[str, Any]:
        task, seed = unit
        bar.note(f"{task} seed {seed}")
        run_dir = out / "runs" / task / f"seed{seed}"
        record = run_one(SPECS[task], config, splits[task], model, seed, run_dir, loader=loader, progress=progress)
        if writes_unit_files():
            write_json_atomic(run_dir / "result.json", record)  # the unit's own file: marks it finished
        return record

    def together(unit: tuple[str, int]) -> bool:
        task, seed = unit
        n = len(splits[task]["train"].examples)
        tc = _train_config(SPECS[task], config, seed, n)
        return not (config.method == "manual" and config.frozen) and units.data_parallel(n, tc.batch_size, tc.grad_accum)

    def on_round(done: list[tuple[tuple[str, int], dict[str, Any]]]) -> None:
        for (task, seed), record in done:
            entry = results["tasks"][task]
            entry["runs"] = dict(sorted({**entry["runs"], str(seed): record}.items(), key=lambda kv: int(kv[0])))
            entry.update(summarize_seeds(entry["runs"]))
        bar.update(len(done))

    run_units(todo, run, on_round=on_round, save=lambda: write_json_atomic(out / RESULTS_FILE, results),
              together=together)
    bar.close()
    if is_main():
        for task in config.tasks:
            publish(out, task, results["tasks"][task], config.eval_set)
        write_json_atomic(out / RESULTS_FILE, results)
        write_text_atomic(out / "results.md", markdown_table(results))
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """A table of the val and dev32 metrics per task (percent; mean ± std over seeds)."""
    s = results["settings"]
    frozen = s.get("train", {}).get("finetune_lm", SUPERGLUE_TRAIN.finetune_lm) is False
    rows = []
    for task, e in results["tasks"].items():
        keys = {"CB": ["accuracy", "f1"], "MultiRC": ["em", "f1a"]}.get(task, e.get("metrics", ["accuracy"]))
        dev = e.get("dev32", e.get("dev"))
        rows.append([task, "/".join(keys), mean_std_cell(e.get("val"), keys), mean_std_cell(dev, keys), e.get("seeds", 0)])
    recipe_note = ", the paper's recipe" if s.get("recipe") == "paper" else ""
    return (f"# SuperGLUE: {s['model']}, {s['method']}, {s['setting']}{', frozen LM' if frozen else ''}{recipe_note}, "
            f"seeds {', '.join(map(str, s['seeds']))}\n\n"
            + table(["task", "metrics", "val", "dev32 (full setting without it: held-out dev)", "seeds"], rows))
