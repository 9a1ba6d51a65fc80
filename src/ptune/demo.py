"""``ptune demo``: the paper's LAMA claims, measured offline in ptune's world.

The demo probes the two language models of ptune's synthetic world (a GPT-2-style causal
LM and a BERT-style masked LM pretrained on a corpus that states every fact, never in
LAMA's manual wording) with LAMA's harness. Its columns are the methods of
:data:`DEMO_METHODS`, in order:

* ``majority`` — the most frequent training object (no model);
* ``manual`` — LAMA's hand-written template, zero-shot;
* ``oracle`` — the best pretraining wording (chosen on dev): what the LM knows;
* ``ptuning`` and ``hybrid`` — prompts learned with the LM frozen;

then ``random LM``, P-tuning on a randomly initialised LM of the same shape: a control that
shows P-tuning extracts knowledge rather than learning the facts. Two studies follow: the
wording sensitivity (``manual`` and ``hybrid`` with each of a relation's hand-written
wordings) and the encoder ablation (P-tuning with each prompt encoder). :mod:`ptune.report`
checks the claims and writes the report.

The seed-0 world ships with the package and is checked against its sha256 manifest before
use; other seeds are built once (``ptune world build``, minutes) and cached in
``$PTUNE_CACHE`` (default ``.cache/ptune``); ``world_dir`` probes any world folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .distributed import barrier, is_main
from .errors import ConfigError
from .files import write_json_atomic, write_text_atomic
from .lm import load_base
from .lock import locks_folder
from .progress import Progress
from .restarts import RestartConfig
from .report import CONTROL, MODELS, aggregate, nan_free, plot_report, summary_markdown, wording_spread, world_checks
from .config import TrainConfig
from .tasks.autoprompt import AutoPromptConfig
from .tasks.lama import ProbeConfig, load_relations, probe
from .tasks.mining import MiningConfig

__all__ = ["DemoMethod", "DEMO_METHODS", "DemoConfig", "run_demo", "default_world_dir", "demo_world",
           "WORLD_SOURCES", "format_summary"]

WORLD_SOURCES = ("given", "shipped", "cached", "building")  # where demo_world found the world


@dataclass(frozen=True)
class DemoMethod:
    """A column of the demo's table: a ``ptune probe`` method and what it sees."""

    name: str
    """The probe method (``ptune probe --methods NAME``)."""
    sees: str
    """What the method sees besides each test subject, said in the report."""
    options: Callable[[Path], Mapping[str, Any]] | None = None
    """The :class:`~ptune.tasks.lama.ProbeConfig` fields the method needs, from the world
    folder (e.g. a corpus file); ``None``: none."""


def cache_dir() -> Path:
    """Where the demo caches what it builds: ``$PTUNE_CACHE`` (default ``.cache/ptune``)."""
    return Path(os.environ.get("PTUNE_CACHE", ".cache/ptune"))


def _world_corpus(world: Path) -> Mapping[str, Any]:
    """The ``mined`` method's corpus: the world's pretraining corpus, written once into the cache."""
    from .world import corpus_key, write_corpus

    path = cache_dir() / "corpus" / f"world-{corpus_key(world)}.txt"
    if not path.is_file():
        write_corpus(world, path)
    return {"mining": {"corpus": str(path)}}


DEMO_METHODS: tuple[DemoMethod, ...] = (
    DemoMethod("majority", "the training facts' objects, no LM"),
    DemoMethod("manual", "the LM and LAMA's hand-written template"),
    DemoMethod("autoprompt", "the LM and the training facts, like P-tuning (its prompt is real tokens)"),
    DemoMethod("mined", "the LM, the training facts and the pretraining corpus, which holds the oracle's "
                        "wordings (an upper reference, not a peer)", options=_world_corpus),
    DemoMethod("oracle", "the LM and the corpus's own wordings of the relation (an upper reference)"),
    DemoMethod("ptuning", "the LM and the training facts"),
    DemoMethod("hybrid", "the LM, the training facts and the manual template's words"),
)
"""The demo's methods in column order; a new probe method joins the demo by a line here."""


def _method(name: str) -> DemoMethod:
    for m in DEMO_METHODS:
        if m.name == name:
            return m
    raise ConfigError("methods", f"{name!r} is not a demo method; accepted: {', '.join(m.name for m in DEMO_METHODS)}")


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """What ``ptune demo`` measures."""

    seeds: tuple[int, ...] = (0,)
    """World seeds; several give every cell as mean and std over the worlds. Seed 0 ships with
    ptune, others are built once (minutes each) and cached in $PTUNE_CACHE."""
    methods: tuple[str, ...] = tuple(m.name for m in DEMO_METHODS)
    """The table's methods (columns), from ptune.demo.DEMO_METHODS."""
    wordings: int = 1
    """Manual wordings per relation for the wording-sensitivity study (manual and hybrid with
    each; the world has 5, ``5`` runs the study); 1 or 0: no study (the default, which keeps
    the main job within a few minutes)."""
    encoders: tuple[str, ...] = ("lstm",)
    """Prompt encoders of P-tuning; the first is the table's; several (``lstm,mlp,none``) add
    the encoder ablation to the report."""
    epochs: int = 30
    """Training epochs per relation and prompt (early stopping on dev P@1)."""
    patience: int = 6
    """Epochs without a dev P@1 gain before a prompt stops training."""
    batch_size: int = 16
    """Training facts per step (a world relation has 60)."""
    restarts: int = 2
    """A ptuning or hybrid prompt whose best dev P@1 stays below ``restart_below`` (a stall)
    trains again with the next seed, at most this many times; the best on dev is kept."""
    restart_below: float = 0.5
    """The dev P@1 below which a trained prompt counts as stalled; 0 turns the demo's
    restarts off (``ptune probe`` has them off unless asked)."""

    def __post_init__(self) -> None:
        for name in ("seeds", "methods", "encoders"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError("seeds", f"{self.seeds!r}: need at least one seed, each once, none negative")
        for m in self.methods:
            _method(m)
        if not self.encoders:
            raise ConfigError("encoders", "need at least one encoder")
        for name in ("epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.wordings < 0:
            raise ConfigError("wordings", f"must be 0 or more, got {self.wordings}")
        RestartConfig(restarts=self.restarts, restart_below=self.restart_below)  # validates both

    def probe_config(self, methods: tuple[str, ...], seed: int, world: Path, *, encoder: str | None = None,
                     wording: int = 0) -> ProbeConfig:
        """The probe of ``methods`` on one world (trained prompts seeded with the world's seed)."""
        options: dict[str, Any] = {}
        for m in methods:
            spec = _method(m)
            if spec.options is not None:
                options.update(spec.options(world))
        return ProbeConfig(methods=methods, vocab="common", wording=wording,  # type: ignore[arg-type]
                           prompt={"encoder": encoder or self.encoders[0]},
                           train={"epochs": self.epochs, "patience": self.patience, "batch_size": self.batch_size,
                                  "seed": seed},
                           restarts=self.restarts, restart_below=self.restart_below, **options)


def default_world_dir(seed: int = 0) -> Path:
    """Where the demo world is cached: ``$PTUNE_CACHE/world-tiny-seed<S>``."""
    return cache_dir() / f"world-tiny-seed{seed}"


def demo_world(world_dir: str | Path | None = None, seed: int = 0) -> tuple[Path, str]:
    """Which world the demo probes, and where it comes from (one of :data:`WORLD_SOURCES`).

    For seed 0 without ``world_dir``, the world shipped with the package, after checking its
    manifest. Otherwise ``world_dir`` (``"given"``) or the cached ``default_world_dir(seed)``
    (``"cached"``); either is ``"building"`` while it holds no ``world.json`` yet.

    Raises:
        DataError: a shipped file is missing or differs from the manifest (names the file).
    """
    from .world import SHIPPED_SEED, shipped_world_dir, verify_manifest

    if world_dir is None and seed == SHIPPED_SEED:
        return verify_manifest(shipped_world_dir()), "shipped"
    world = Path(world_dir) if world_dir is not None else default_world_dir(seed)
    if not (world / "world.json").is_file():
        return world, "building"
    return world, "given" if world_dir is not None else "cached"


def _ready_wordings(world: Path, source: str, seed: int, config: DemoConfig) -> list[str]:
    """Check that the world has the manual wordings that the wording study asks for.

    A world that an older ptune built without them gets them (:func:`ptune.world.refresh_wordings`:
    exact, or refused); a world still to build is checked against what a build writes.

    Returns:
        The files refreshed (relative to the world folder; empty when none).

    Raises:
        DataError: the wordings are missing and cannot be added exactly; says how to rebuild.
        ConfigError: a relation has fewer wordings than ``config.wordings``.
    """
    from .world import WorldConfig, refresh_wordings
    from .world.facts import relation_records
    from .world.refresh import WORDINGS_FILE

    if config.wordings <= 1 or not {"manual", "hybrid"} & set(config.methods):
        return []
    refreshed = False
    if source == "building":
        found = {r["relation"]: len(r["manual_templates"])
                 for r in relation_records(dataclasses.replace(WorldConfig.tiny(), seed=seed))}
    else:
        fix = (f"remove {world} and run ptune demo again, which builds it anew (minutes)" if source == "cached" else
               "build the world again with this ptune (ptune world build --output NEW_DIR, with its preset and "
               "--seed) and pass --world NEW_DIR")
        refreshed = refresh_wordings(world, write=is_main(), fix=fix) and is_main()
        found = {r.id: len(r.manual_templates) for r in load_relations(world / "lama").values()}
    for rel, n in found.items():
        if n < config.wordings:
            raise ConfigError("wordings", f"{config.wordings} wordings asked, but relation {rel} of "
                                          f"{world / WORDINGS_FILE} has {n} (manual_templates)")
    return [WORDINGS_FILE] if refreshed else []


def _runs(config: DemoConfig) -> int:
    """Probe calls per world (for the progress bar)."""
    return 2 * (2 + max(0, config.wordings - 1) * ("manual" in config.methods or "hybrid" in config.methods)
                + max(0, len(config.encoders) - 1))


def _macro(results: dict[str, Any], method: str) -> float | None:
    s = results.get("summary", {}).get(method, {}).get("test")
    return None if s is None else s["macro"]["p@1"]


def _test_p1(results: dict[str, Any], method: str) -> dict[str, float]:
    return {r: e["methods"][method]["test"]["p@1"] for r, e in results["relations"].items()
            if "test" in e["methods"].get(method, {})}


def _method_seconds(results: dict[str, Any], methods: tuple[str, ...]) -> dict[str, float]:
    """Seconds each method took, summed over the relations (mined: with its pass over the corpus)."""
    out = {m: sum(e.get("seconds", {}).get(m, 0.0) for e in results["relations"].values()) for m in methods}
    if "mined" in out:
        out["mined"] += results.get("mining", {}).get("seconds", 0.0)
    return {m: round(v, 1) for m, v in out.items()}


def _budgets(config: DemoConfig) -> dict[str, Any]:
    """What each method may spend, as the report states it."""
    probe_config = config.probe_config(("manual",), 0, Path("."))
    train = probe_config.train
    assert isinstance(train, TrainConfig)
    return {"epochs": config.epochs, "patience": config.patience, "batch_size": train.batch_size,
            "trigger_candidates": AutoPromptConfig.of(probe_config.autoprompt).trigger_candidates,
            "mined_candidates": MiningConfig.of(probe_config.mining).mined_candidates,
            "restarts": probe_config.restarts, "restart_below": probe_config.restart_below}


def _probe_world(world: Path, out: Path, config: DemoConfig, seed: int, bar: Progress) -> dict[str, Any]:
    """Every measurement on one world: the table, the wording study and the encoder ablation."""
    rows: dict[str, dict[str, float | None]] = {}
    wordings: dict[str, dict[str, Any]] = {}
    encoders: dict[str, dict[str, float | None]] = {}
    seconds: dict[str, float] = {}
    times: dict[str, dict[str, float]] = {}

    def run(lm: Any, tok: Any, which: str, sub: str, methods: tuple[str, ...], **kw: Any) -> dict[str, Any]:
        bar.note(f"seed {seed} {which} {sub or 'table'}")
        res = probe(lm, tok, world / "lama", out / which / sub if sub else out / which,
                    config.probe_config(methods, seed, world, **kw), model_name=f"world/{which}",
                    base_model=str((world / which).resolve()), progress=bar.mode != "off")
        bar.update()
        return res

    for which, _ in MODELS:
        t = time.perf_counter()
        lm, tok, _ = load_base(str(world / which))
        res = run(lm, tok, which, "", config.methods)
        rows[which] = {m: _macro(res, m) for m in config.methods}
        times[which] = _method_seconds(res, config.methods)
        torch.manual_seed(seed)
        random_lm = type(lm)(lm.config)  # same shape, random weights
        bar.note(f"seed {seed} {which} random-LM control")
        control = probe(random_lm, tok, world / "lama", out / f"{which}-random-lm",
                        config.probe_config(("ptuning",), seed, world), model_name=f"world/{which}-random",
                        progress=bar.mode != "off")
        bar.update()
        rows[which][CONTROL] = _macro(control, "ptuning")
        seconds[f"{which}.table"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        study = [m for m in ("manual", "hybrid") if m in config.methods]
        if config.wordings > 1 and study:
            per = {m: {r: [v] for r, v in _test_p1(res, m).items()} for m in study}
            for k in range(1, config.wordings):
                alt = run(lm, tok, which, f"wording-{k}", tuple(study), wording=k)
                for m in study:
                    for r, v in _test_p1(alt, m).items():
                        per[m].setdefault(r, []).append(v)
            full = {m: {r: v for r, v in p.items() if len(v) == config.wordings} for m, p in per.items()}
            wordings[which] = {m: wording_spread(full[m]) for m in study}
            seconds[f"{which}.wordings"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        if len(config.encoders) > 1:
            encoders[which] = {config.encoders[0]: rows[which].get("ptuning")}
            for enc in config.encoders[1:]:
                encoders[which][enc] = _macro(run(lm, tok, which, f"encoder-{enc}", ("ptuning",), encoder=enc),
                                              "ptuning")
            seconds[f"{which}.encoders"] = round(time.perf_counter() - t, 1)
    return {"rows": rows, "wordings": wordings, "encoders": encoders, "seconds": seconds, "method_seconds": times}


@locks_folder("output")
def run_demo(output: str | Path = "runs/demo", config: DemoConfig | None = None, *,
             world_dir: str | Path | None = None, progress: bool = True,
             on_world: Callable[[Path, str], None] | None = None) -> dict[str, Any]:
    """Probe each world of ``config.seeds`` (:func:`demo_world`; built first if needed); write
    ``summary.json``, ``summary.md`` and ``summary.png`` under ``output``.

    With one seed the world's runs are under ``output/<model>/``, with several under
    ``output/seed<S>/<model>/``.

    Args:
        world_dir: probe this world folder (one seed only).
        progress: report progress (:mod:`ptune.progress`).
        on_world: called with each world folder and its source before any work on it, then
            with ``"refreshed"`` where the demo added to a world that an older ptune built the
            manual wordings that ``config.wordings`` needs (exact, or refused with a
            :class:`~ptune.errors.DataError` that says how to rebuild the world).

    Returns:
        ``{"worlds": [per world: seed, world, world_source, rows, wordings, encoders, checks,
        seconds], "aggregate": mean and std of every cell, "rows": {model: {column: mean}}, ...}``.
    """
    from .world import WorldConfig, build_world

    config = config or DemoConfig()
    if world_dir is not None and len(config.seeds) > 1:
        raise ConfigError("world", "a world folder is one world: give one seed with it")
    out = Path(output)
    t0 = time.perf_counter()
    worlds = []
    refreshed = {seed: _ready_wordings(*demo_world(world_dir, seed), seed, config) for seed in config.seeds}
    barrier()  # one process refreshed, the others checked
    with Progress(total=_runs(config) * len(config.seeds), desc="demo", unit="probe",
                  enabled=progress and is_main()) as bar:
        for seed in config.seeds:
            world, source = demo_world(world_dir, seed)
            if on_world is not None:
                on_world(world, source)
                if refreshed[seed]:
                    on_world(world, "refreshed")
            t = time.perf_counter()
            if source == "building" and is_main():  # under several processes, one builds, the others wait
                build_world(world, dataclasses.replace(WorldConfig.tiny(), seed=seed), progress=progress)
            barrier()
            built = round(time.perf_counter() - t, 1)
            sub = out if len(config.seeds) == 1 else out / f"seed{seed}"
            measured = _probe_world(world, sub, config, seed, bar)
            measured["seconds"]["build"] = built
            w = {"seed": seed, "world": str(world), "world_source": "built" if source == "building" else source,
                 **({"refreshed": refreshed[seed]} if refreshed[seed] else {}), **measured}
            w["checks"] = world_checks(w)
            worlds.append(w)
    agg = aggregate(worlds)
    summary = {
        "worlds": worlds, "aggregate": agg, "columns": list(config.methods), "wordings": config.wordings,
        "encoders": list(config.encoders) if len(config.encoders) > 1 else [],
        "methods": [{"name": m, "sees": _method(m).sees} for m in config.methods], "budgets": _budgets(config),
        "rows": {w: {c: cell["mean"] for c, cell in cols.items()} for w, cols in agg["rows"].items()},
        "config": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)},
        "seconds": {"total": round(time.perf_counter() - t0, 1)},
    }
    if len(worlds) == 1:  # one world: where it came from, at the top
        summary.update(world=worlds[0]["world"], world_source=worlds[0]["world_source"],
                       world_built_now=worlds[0]["world_source"] == "built", seed=worlds[0]["seed"])
    if is_main():
        write_json_atomic(out / "summary.json", nan_free(summary))
        write_text_atomic(out / "summary.md", summary_markdown(summary))
        plot_report(summary, out / "summary.png")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The report plus the time it took, for the terminal."""
    return summary_markdown(summary) + f"\n({json.dumps(summary['seconds'])} seconds)\n"
