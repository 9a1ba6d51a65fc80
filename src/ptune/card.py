"""Model cards: a README.md in every checkpoint and export, so a shared folder says what it is.

The card starts with YAML metadata in the Hugging Face Hub's format (``base_model``,
``library_name: ptune``, ``tags``) plus a ``ptune`` block with the template, the
verbalizer, the LM kind, the metrics and the training config; the Markdown body shows the
same for people, then how to use the folder and what to know about it.

Example:
    >>> card = Card(title="A P-tuned prompt", base_model="gpt2", config={"template": "[P*3] {text} [MASK]",
    ...             "verbalizer": {"pos": ["good"]}, "kind": "causal"}, n_pseudo=3)
    >>> card.render().splitlines()[:3]
    ['---', 'base_model: gpt2', 'library_name: ptune']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .files import write_text_atomic

__all__ = ["Card", "RunFacts", "write_card", "read_card", "CARD_NAME"]

CARD_NAME = "README.md"


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What a card reports beyond the prompt itself."""

    metrics: Mapping[str, Any] | None = None
    """The metrics to show (e.g. the dev metrics of the selected step, with ``step``)."""
    training: Mapping[str, Any] | None = None
    """The training config (:class:`ptune.config.TrainConfig` as a dict)."""
    notes: tuple[str, ...] = ()
    """Sentences a user must know (how an export differs from ptune, where it came from)."""


@dataclass(frozen=True, kw_only=True)
class Card:
    """A model card: its metadata and body (see the module doc)."""

    title: str
    base_model: str | None
    config: Mapping[str, Any]
    """The prompt config (or a classifier's config) as saved, ``kind`` included."""
    n_pseudo: int = 0
    facts: RunFacts = field(default_factory=RunFacts)
    usage: str = ""
    """Markdown: how to use the folder."""
    tags: tuple[str, ...] = ("ptune", "p-tuning")

    def metadata(self) -> dict[str, Any]:
        """The YAML front matter as a mapping."""
        ptune: dict[str, Any] = {"kind": self.config.get("kind")}
        for key in ("template", "verbalizer", "candidates_field", "inputs", "labels"):
            if self.config.get(key):
                ptune[key] = _plain(self.config[key])
        if "encoder" in self.config:
            ptune["encoder"] = _plain(self.config["encoder"])
            ptune["n_pseudo"] = self.n_pseudo
        if self.facts.metrics:
            ptune["metrics"] = _plain(self.facts.metrics)
        if self.facts.training:
            ptune["training"] = _plain(self.facts.training)
        meta: dict[str, Any] = {"base_model": self.base_model} if self.base_model else {}
        return {**meta, "library_name": "ptune", "tags": list(self.tags), "ptune": ptune}

    def render(self) -> str:
        """The README.md text."""
        front = yaml.safe_dump(self.metadata(), sort_keys=False, allow_unicode=True)
        rows = [("base model", f"`{self.base_model}`" if self.base_model else "not recorded"),
                ("LM kind", str(self.config.get("kind")))]
        if self.config.get("template"):
            rows.append(("template", _code(self.config["template"])))
        if "encoder" in self.config:
            enc = self.config["encoder"]
            rows.append(("pseudo tokens", f"{self.n_pseudo} (prompt encoder `{_plain(enc).get('type')}`)"))
        if self.config.get("verbalizer"):
            rows.append(("verbalizer", "; ".join(f"{k}: {', '.join(map(_code, v))}"
                                                 for k, v in self.config["verbalizer"].items())))
        if self.config.get("candidates_field"):
            rows.append(("answers", f"the candidates in field `{self.config['candidates_field']}`"))
        parts = [f"---\n{front}---\n", f"# {self.title}\n",
                 "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]) + "\n"]
        if self.facts.metrics:
            parts.append("## Metrics\n\n| metric | value |\n|---|---|\n"
                         + "".join(f"| {k} | {_number(v)} |\n" for k, v in self.facts.metrics.items()))
        if self.facts.training:
            parts.append("## Training config\n\n```json\n" + json.dumps(_plain(self.facts.training), indent=2)
                         + "\n```\n")
        if self.usage:
            parts.append("## Use\n\n" + self.usage.strip() + "\n")
        if self.facts.notes:
            parts.append("## Notes\n\n" + "".join(f"- {n}\n" for n in self.facts.notes))
        return "\n".join(parts)


def write_card(folder: str | os.PathLike, card: Card) -> Path:
    """Write ``card`` as ``folder/README.md`` (atomically)."""
    path = Path(folder) / CARD_NAME
    write_text_atomic(path, card.render())
    return path


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The YAML metadata of ``folder/README.md``; empty when there is no card or no metadata."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        return {}
    meta = yaml.safe_load(text[4 : text.index("\n---\n", 3)])
    return meta if isinstance(meta, dict) else {}


def _plain(value: Any) -> Any:
    """JSON-like data (YAML and JSON safe): tuples as lists, mappings as dicts."""
    return json.loads(json.dumps(value, default=str))


def _code(text: str) -> str:
    return "`" + str(text).replace("|", "\\|").replace("`", "'") + "`"


def _number(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
