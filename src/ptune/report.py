"""The demo's report: the paper's claims checked on each world, the tables of
``summary.md`` and the figure.

:func:`ptune.demo.run_demo` measures; this module only reads its numbers. A world's
measurements are ``{"rows": {model: {column: macro test P@1}}, "wordings": {model: {"manual" |
"hybrid": {"mean", "std", ...}}}, "encoders": {model: {encoder: P@1}}}``; several worlds are
summarised cell by cell as mean and standard deviation (:func:`aggregate`).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import save_figure

__all__ = ["MODELS", "CONTROL", "world_checks", "aggregate", "summary_markdown", "plot_report", "mean_std",
           "wording_spread"]

MODELS = (("gpt", "causal LM (GPT-2 style)"), ("bert", "masked LM (BERT style)"))
CONTROL = "random LM"
"""The control column: P-tuning on a randomly initialised LM of the same shape."""
WORDING_RATIO = 5.0
"""The std of P@1 across manual wordings must shrink at least this much with hybrid prompts."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def wording_spread(per_relation: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Mean P@1 over relations and wordings, and the std across a relation's wordings averaged
    over relations (the paper's measure: how much P@1 depends on the wording of one relation)."""
    rows = {r: list(v) for r, v in per_relation.items() if v}
    if not rows:
        return {"mean": None, "std": None, "relations": 0}
    stds = {r: mean_std(v)[1] for r, v in rows.items()}
    return {"mean": statistics.fmean(x for v in rows.values() for x in v), "std": statistics.fmean(stds.values()),
            "relations": len(rows), "per_relation": rows, "std_per_relation": stds}


def _v(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _check(text: str, ok: bool, numbers: str, *values: float) -> dict[str, Any] | None:
    """A check, or None where one of the compared ``values`` was not measured (NaN)."""
    if any(math.isnan(v) for v in values):
        return None
    return {"check": text, "pass": bool(ok), "numbers": numbers}


def world_checks(world: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The claims on one world, per model (``gpt``, ``bert``) and across them (``both``).

    Every check is ``{"check": words, "pass": bool, "numbers": the values compared}``; a
    check whose values were not measured (a method left out) is left out.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for which, _ in MODELS:
        row = world.get("rows", {}).get(which)
        if row is None:
            continue
        get = {k: _v(row.get(k)) for k in ("majority", "manual", "oracle", "ptuning", "hybrid", CONTROL)}
        pt, orc, man = get["ptuning"], get["oracle"], get["manual"]
        margin = 0.3 if which == "gpt" else 0.2
        hy, ctl, maj = get["hybrid"], get[CONTROL], get["majority"]
        checks = []
        if which == "gpt":
            checks += [_check("oracle >= 0.9 (the causal LM knows the facts)", orc >= 0.9, f"{orc:.3f}", orc),
                       _check("manual <= 0.5", man <= 0.5, f"{man:.3f}", man)]
        checks += [
            _check(f"P-tuning >= manual + {margin}", pt >= man + margin, f"{pt:.3f} vs {man:.3f}", pt, man),
            _check("P-tuning >= 0.95 x oracle", pt >= 0.95 * orc, f"{pt:.3f} vs {0.95 * orc:.3f}", pt, orc),
            _check("hybrid >= 0.9 x oracle", hy >= 0.9 * orc, f"{hy:.3f} vs {0.9 * orc:.3f}", hy, orc),
            _check("random-LM control <= majority + 0.1", ctl <= maj + 0.1, f"{ctl:.3f} vs {maj + 0.1:.3f}", ctl, maj),
        ]
        if "autoprompt" in row:  # the paper: continuous prompts beat the best discrete search
            ap = _v(row["autoprompt"])
            checks.append(_check("P-tuning > AutoPrompt (same LM, training facts and dev selection)", pt > ap,
                                 f"{pt:.3f} vs {ap:.3f}"))
        w = world.get("wordings", {}).get(which)
        if w and {"manual", "hybrid"} <= set(w):
            sm, sh = _v(w["manual"]["std"]), _v(w["hybrid"]["std"])
            text = f"std across manual wordings >= {WORDING_RATIO:g} x with hybrid prompts"
            if not w["manual"]["relations"]:  # a world whose relations.jsonl lists fewer wordings
                checks.append(_check(text, False, "no relation has that many manual_templates"))
            else:
                checks.append(_check(text, sm >= WORDING_RATIO * sh, f"{sm:.3f} vs {sh:.3f}", sm, sh))
        enc = world.get("encoders", {}).get(which, {})
        if "lstm" in enc and "none" in enc:
            lstm, free = _v(enc["lstm"]), _v(enc["none"])
            checks.append(_check("LSTM encoder >= free embeddings (none)", lstm >= free, f"{lstm:.3f} vs {free:.3f}",
                                 lstm, free))
        out[which] = [c for c in checks if c is not None]
    rows = world.get("rows", {})
    if "gpt" in rows and "bert" in rows:
        g, b = _v(rows["gpt"].get("ptuning")), _v(rows["bert"].get("ptuning"))
        both = _check("P-tuned causal LM >= 0.95 x P-tuned masked LM (GPTs competitive once P-tuned)",
                      g >= 0.95 * b, f"{g:.3f} vs {0.95 * b:.3f}", g, b)
        out["both"] = [both] if both else []
    return out


def _cells(worlds: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, list[float]]]:
    cells: dict[str, dict[str, list[float]]] = {}
    for w in worlds:
        for which, row in w.get(key, {}).items():
            for col, v in row.items():
                if v is not None:
                    cells.setdefault(which, {}).setdefault(col, []).append(v)
    return cells


def aggregate(worlds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every cell as ``{"mean", "std", "values"}`` over the worlds (tables, wordings, encoders)."""
    def stat(values: list[float]) -> dict[str, Any]:
        m, s = mean_std(values)
        return {"mean": m, "std": s, "values": values}

    out: dict[str, Any] = {}
    for key in ("rows", "encoders", "method_seconds"):
        out[key] = {w: {c: stat(v) for c, v in cols.items()} for w, cols in _cells(worlds, key).items()}
    flat = [{"wordings": {which: {f"{p}.{s}": w[p][s] for p in ("manual", "hybrid") if p in w
                                  for s in ("mean", "std")}
                          for which, w in world.get("wordings", {}).items()}} for world in worlds]
    out["wordings"] = {w: {c: stat(v) for c, v in cols.items()} for w, cols in _cells(flat, "wordings").items()}
    return out


def _fmt(cell: Mapping[str, Any] | None, n_worlds: int, spec: str = ".3f") -> str:
    if not cell:
        return "–"
    return f"{cell['mean']:{spec}}" if n_worlds == 1 else f"{cell['mean']:{spec}} ± {cell['std']:{spec}}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: the main table, wording sensitivity, encoder ablation, the claims."""
    agg, worlds, cols = summary["aggregate"], summary["worlds"], [*summary["columns"], CONTROL]
    n = len(worlds)
    over = "" if n == 1 else f"; mean ± std over {n} worlds"
    seeds = ", ".join(str(w["seed"]) for w in worlds)
    lines = [f"Macro-averaged test P@1 over the world's relations (world seed{'s' if n > 1 else ''} {seeds}{over}).",
             ""]
    lines += _table(["model", *cols], [[label, *(_fmt(agg["rows"].get(w, {}).get(c), n) for c in cols)]
                                       for w, label in MODELS if w in agg["rows"]])
    if agg["wordings"]:
        lines += ["", f"Wording sensitivity: P@1 over {summary['wordings']} manual wordings per relation; std is "
                      "the std across a relation's wordings, averaged over relations.", ""]
        lines += _table(["model", "manual mean", "manual std", "hybrid mean", "hybrid std"],
                        [[label, *(_fmt(agg["wordings"][w].get(f"{p}.{s}"), n) for p in ("manual", "hybrid")
                                   for s in ("mean", "std"))] for w, label in MODELS if w in agg["wordings"]])
    if agg["encoders"]:
        encs = list(summary["encoders"])
        lines += ["", "Encoder ablation: P-tuning with each prompt encoder, same budget.", ""]
        lines += _table(["model", *encs], [[label, *(_fmt(agg["encoders"][w].get(e), n) for e in encs)]
                                           for w, label in MODELS if w in agg["encoders"]])
    lines += ["", "`random LM` is P-tuning on a randomly initialised LM of the same shape. What each method sees: "
              + "; ".join(f"`{m['name']}`: {m['sees']}" for m in summary["methods"]) + "."]
    lines += _budget_lines(summary, n)
    lines += ["", "Claims:", ""]
    lines += [f"- {c}" for c in claims_in_words(worlds)]
    return "\n".join(lines) + "\n"


def _budget_lines(summary: Mapping[str, Any], n: int) -> list[str]:
    """What each method may spend, and the seconds each took (summed over relations)."""
    b = summary.get("budgets")
    lines = []
    if b:
        lines += ["", f"Budgets: the trained prompts (P-tuning, hybrid, the random-LM control) take up to "
                      f"{b['epochs']} epochs of batches of {b['batch_size']} training facts and stop after "
                      f"{b['patience']} epochs without a dev P@1 gain, keeping the best prompt on dev"
                      + (f"; one whose best dev P@1 stays below {b['restart_below']} (a stall) trains again with "
                         f"the next seed, up to {b['restarts']} times, and the best on dev is kept"
                         if b.get("restarts") and b.get("restart_below") else "") + ". AutoPrompt "
                      f"takes one search round per such step, on the same batches, with the same dev selection and "
                      f"stopping ({b['trigger_candidates']} candidate tokens re-scored per round). `mined` scores "
                      f"the {b['mined_candidates']} templates that the most training facts yield on the training "
                      "facts and keeps the best. `manual` is not trained; `oracle` picks its wording on dev."]
    times = summary["aggregate"].get("method_seconds", {})
    cols = [c for c in summary["columns"] if any(c in times.get(w, {}) for w, _ in MODELS)]
    if cols:
        lines += ["", "Seconds per method, summed over the relations (mined: with its pass over the corpus):", ""]
        lines += _table(["model", *cols], [[label, *(_fmt(times[w].get(c), n, ".1f") for c in cols)]
                                           for w, label in MODELS if w in times])
    return lines


def claims_in_words(worlds: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per check: whether it holds on every world, with the numbers where it does not."""
    labels = dict(MODELS, both="both LMs")
    order: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for w in worlds:
        for which, checks in w["checks"].items():
            for c in checks:
                order.setdefault((which, c["check"]), []).append((w["seed"], c))
    out = []
    for (which, text), runs in order.items():
        failed = [(s, c) for s, c in runs if not c["pass"]]
        where = "the world" if len(runs) == 1 else f"all {len(runs)} worlds"
        if not failed:
            out.append(f"{labels[which]}: {text}: holds on {where} ({'; '.join(c['numbers'] for _, c in runs)})")
        else:
            bad = "; ".join(f"seed {s}: {c['numbers']}" for s, c in failed)
            out.append(f"{labels[which]}: {text}: DOES NOT HOLD on {len(failed)} of {len(runs)} world(s) ({bad})")
    return out


def plot_report(summary: Mapping[str, Any], path: str | Path) -> Path:
    """The figure: main table, wording sensitivity (manual vs hybrid) and encoder ablation,
    each bar the mean over worlds with the std as error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = summary["aggregate"]
    panels = [("P@1 by method", [*summary["columns"], CONTROL], agg["rows"], lambda c: c)]
    if agg["wordings"]:
        panels.append((f"across {summary['wordings']} manual wordings",
                       ["manual.mean", "hybrid.mean", "manual.std", "hybrid.std"], agg["wordings"],
                       lambda c: c.replace(".", " ")))
    if agg["encoders"]:
        panels.append(("P-tuning by encoder", list(summary["encoders"]), agg["encoders"], lambda c: c))
    widths = [max(3, len(cols)) for _, cols, _, _ in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 + 0.75 * sum(widths), 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (title, cols, table, name) in zip(axes[0], panels):
        width = 0.38
        for k, (which, label) in enumerate(MODELS):
            cells = [table.get(which, {}).get(c) for c in cols]
            means = [c["mean"] if c else 0.0 for c in cells]
            errs = [c["std"] if c else 0.0 for c in cells]
            ax.bar([i + k * width for i in range(len(cols))], means, width, yerr=errs, capsize=2, label=label)
        ax.set_xticks([i + width / 2 for i in range(len(cols))], [name(c) for c in cols], rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
    axes[0][0].set_ylabel("macro test P@1")
    axes[0][0].legend(fontsize=8, loc="upper left")
    n = len(summary["worlds"])
    fig.suptitle("Knowledge probing in ptune's offline world" + (f" (mean ± std over {n} worlds)" if n > 1 else ""),
                 fontsize=11)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def nan_free(x: Any) -> Any:
    """``x`` with NaN floats as None (JSON has no NaN)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: nan_free(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_free(v) for v in x]
    return x
