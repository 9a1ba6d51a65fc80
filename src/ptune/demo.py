"""``ptune demo``: P-tuning recovers knowledge that manual prompts miss, offline.

The demo probes the two language models of ptune's synthetic world (a GPT-2-style causal
LM and a BERT-style masked LM pretrained on this machine on a corpus that states every
fact, never in LAMA's manual wording) with LAMA's harness, and compares:

* ``majority`` — the most frequent training object (no model);
* ``manual`` — LAMA's hand-written template, zero-shot;
* ``oracle`` — the best pretraining wording (chosen on dev): what the LM knows;
* ``ptuning`` and ``hybrid`` — prompts learned with the LM frozen;
* ``random LM`` — P-tuning on a randomly initialised LM of the same shape, a control
  that shows P-tuning extracts knowledge rather than learning the facts.

The seed-0 world ships with the package and is checked against its sha256 manifest before
use; other seeds are built once (``ptune world build``, minutes) and cached in
``$PTUNE_CACHE`` (default ``.cache/ptune``); ``world_dir`` probes any world folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .files import save_figure, write_json_atomic, write_text_atomic
from .lm import load_base
from .lock import locks_folder
from .tasks.lama import ProbeConfig, probe

__all__ = ["run_demo", "default_world_dir", "demo_world", "DEMO_METHODS", "WORLD_SOURCES"]

DEMO_METHODS = ("majority", "manual", "oracle", "ptuning", "hybrid")
MODELS = (("gpt", "causal LM (GPT-2 style)"), ("bert", "masked LM (BERT style)"))
WORLD_SOURCES = ("given", "shipped", "cached", "building")  # where demo_world found the world


def default_world_dir(seed: int = 0) -> Path:
    """Where the demo world is cached: ``$PTUNE_CACHE/world-tiny-seed<S>``."""
    return Path(os.environ.get("PTUNE_CACHE", ".cache/ptune")) / f"world-tiny-seed{seed}"


def demo_probe_config(methods: tuple[str, ...] = DEMO_METHODS, seed: int = 0) -> ProbeConfig:
    """The P-tuning settings of the demo (the feasibility study's, with early stopping)."""
    return ProbeConfig(methods=methods, vocab="common", train={"epochs": 30, "patience": 6, "seed": seed})


def _macro(results: dict[str, Any], method: str) -> float | None:
    s = results.get("summary", {}).get(method, {}).get("test")
    return None if s is None else s["macro"]["p@1"]


def _checks(row: dict[str, float | None], which: str) -> list[tuple[str, bool]]:
    def v(k: str) -> float:
        x = row.get(k)
        return float("nan") if x is None else x

    checks = [
        ("P-tuning >= 0.9 x oracle", v("ptuning") >= 0.9 * v("oracle")),
        ("random-LM control <= majority + 0.1", v("random LM") <= v("majority") + 0.1),
    ]
    if which == "gpt":
        checks = [("oracle >= 0.9", v("oracle") >= 0.9), ("manual <= 0.5", v("manual") <= 0.5),
                  ("P-tuning >= manual + 0.3", v("ptuning") >= v("manual") + 0.3)] + checks
    else:
        checks = [("P-tuning >= manual + 0.2", v("ptuning") >= v("manual") + 0.2)] + checks
    return checks


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


@locks_folder("output")
def run_demo(output: str | Path = "runs/demo", *, world_dir: str | Path | None = None, seed: int = 0,
             progress: bool = False, on_world: Callable[[Path, str], None] | None = None) -> dict[str, Any]:
    """Probe the world (:func:`demo_world`; built first if needed); write ``summary.json`` and
    ``summary.md`` under ``output``.

    Args:
        on_world: called with the world folder and its source before any work.

    Returns:
        ``{"world": ..., "world_source": ..., "rows": {model: {method: macro test P@1}}, "checks": ...,
        "seconds": ...}``.
    """
    from .world import WorldConfig, build_world

    out = Path(output)
    world, source = demo_world(world_dir, seed)
    if on_world is not None:
        on_world(world, source)
    t0 = time.perf_counter()
    built = source == "building"
    if built:
        build_world(world, dataclasses.replace(WorldConfig.tiny(), seed=seed), progress=progress)
    t_probe = time.perf_counter()
    rows: dict[str, dict[str, float | None]] = {}
    checks: dict[str, list[tuple[str, bool]]] = {}
    for which, _ in MODELS:
        lm, tok, _ = load_base(str(world / which))
        res = probe(lm, tok, world / "lama", out / which, demo_probe_config(seed=seed),
                    model_name=f"world/{which}", base_model=str((world / which).resolve()), progress=progress)
        torch.manual_seed(seed)
        random_lm = type(lm)(lm.config)  # same shape, random weights
        control = probe(random_lm, tok, world / "lama", out / f"{which}-random-lm",
                        demo_probe_config(("ptuning",), seed=seed), model_name=f"world/{which}-random", progress=progress)
        rows[which] = {m: _macro(res, m) for m in DEMO_METHODS}
        rows[which]["random LM"] = _macro(control, "ptuning")
        checks[which] = _checks(rows[which], which)
    summary = {
        "world": str(world), "world_source": "built" if built else source, "world_built_now": built, "seed": seed,
        "rows": rows, "checks": {k: [{"check": c, "pass": ok} for c, ok in v] for k, v in checks.items()},
        "seconds": {"total": round(time.perf_counter() - t0, 1), "probe": round(time.perf_counter() - t_probe, 1)},
    }
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", summary_markdown(summary))
    _plot(rows, out / "p_at_1.png")
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """The demo's table: macro test P@1 per model and method, then the checks."""
    cols = list(DEMO_METHODS) + ["random LM"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for which, label in MODELS:
        row = summary["rows"].get(which, {})
        cells = ["–" if row.get(c) is None else f"{row[c]:.3f}" for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Macro-averaged test P@1 over the world's relations; `random LM` is P-tuning on a "
                 "randomly initialised LM of the same shape.")
    lines.append("")
    for which, label in MODELS:
        for c in summary["checks"].get(which, []):
            lines.append(f"- {label}: {c['check']}: {'pass' if c['pass'] else 'FAIL'}")
    return "\n".join(lines) + "\n"


def _plot(rows: dict[str, dict[str, float | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(DEMO_METHODS) + ["random LM"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.38
    for k, (which, label) in enumerate(MODELS):
        vals = [rows.get(which, {}).get(c) or 0.0 for c in cols]
        ax.bar([i + k * width for i in range(len(cols))], vals, width, label=label)
    ax.set_xticks([i + width / 2 for i in range(len(cols))], cols)
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro test P@1")
    ax.set_title("Knowledge probing in ptune's offline world")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def format_summary(summary: dict[str, Any]) -> str:
    """The table plus where the files are, for the terminal."""
    return summary_markdown(summary) + f"\n({json.dumps(summary['seconds'])} seconds)\n"
