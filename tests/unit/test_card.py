"""Model cards: Hub metadata that reads back, and a body that shows the prompt."""

from __future__ import annotations

import yaml

from ptune.card import Card, RunFacts, read_card, write_card

CONFIG = {"template": "[P*3] {text} | [MASK]", "verbalizer": {"pos": ["good", "great"], "neg": ["bad"]},
          "encoder": {"type": "lstm", "lstm_dropout": 0.0}, "kind": "causal"}


def test_card_round_trip(tmp_path):
    facts = RunFacts(metrics={"step": 40, "accuracy": 0.875, "loss": 0.31234567},
                     training={"steps": 50, "lr": 0.003}, notes=("Exported from a ptune checkpoint.",))
    card = Card(title="A P-tuned prompt for gpt2", base_model="gpt2", config=CONFIG, n_pseudo=3, facts=facts,
                usage="ptune.load_checkpoint(PATH)")
    write_card(tmp_path, card)
    meta = read_card(tmp_path)
    assert meta["base_model"] == "gpt2" and meta["library_name"] == "ptune" and "p-tuning" in meta["tags"]
    assert meta["ptune"] == {"kind": "causal", "template": CONFIG["template"], "verbalizer": CONFIG["verbalizer"],
                             "encoder": CONFIG["encoder"], "n_pseudo": 3, "metrics": dict(facts.metrics),
                             "training": dict(facts.training)}
    text = (tmp_path / "README.md").read_text()
    assert "| template | `[P*3] {text} \\| [MASK]` |" in text  # a | in the template does not split the table
    assert "| accuracy | 0.8750 |" in text and "| step | 40 |" in text
    assert "## Use\n\nptune.load_checkpoint(PATH)\n" in text and "- Exported from a ptune checkpoint.\n" in text


def test_card_without_facts_or_base(tmp_path):
    card = Card(title="A prompt", base_model=None, config={"inputs": ["{text}"], "labels": ["a", "b"],
                                                           "kind": "masked"})
    text = card.render()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert "base_model" not in meta and meta["ptune"] == {"kind": "masked", "inputs": ["{text}"], "labels": ["a", "b"]}
    assert "## Metrics" not in text and "## Notes" not in text and "| base model | not recorded |" in text
    assert read_card(tmp_path) == {}
