"""Model selection rules: ptune's (ties broken by dev loss) and the paper's few-shot code's
(ties go to the later checkpoint; CB/MultiRC need accuracy and F1 both at least their best)."""

from __future__ import annotations

import pytest

from conftest import pair, sentiment
from ptune import ConfigError, PromptConfig, PTunedModel, TrainConfig
from ptune.selection import Verdict, judge, remember
from ptune.trainer import train


def _run(metrics_seq, config):
    """Replay ``metrics_seq`` as dev evaluations (one per step); (verdicts, state)."""
    state = {"best": None}
    verdicts = []
    for m in metrics_seq:
        v = judge(m, state, config.ties, config.metric, config.select_all)
        if v.best:
            remember(state, m, config.metric, config.select_all)
        verdicts.append(v)
    return verdicts, state


def test_later_rule_takes_ties_but_counts_them_against_patience():
    accs = [{"accuracy": a} for a in (0.5, 0.5, 0.6, 0.4, 0.6)]
    paper, _ = _run(accs, TrainConfig(ties="later"))
    assert paper == [Verdict(True, True), Verdict(True, False), Verdict(True, True), Verdict(False, False),
                     Verdict(True, False)]
    ptune, _ = _run(accs, TrainConfig())  # no losses: a tie never wins
    assert [v.best for v in ptune] == [True, False, True, False, False]


def test_select_all_needs_every_metric_at_least_its_best():
    seq = [{"accuracy": 0.5, "f1": 0.4}, {"accuracy": 0.6, "f1": 0.3},  # accuracy up, F1 down: not the best
           {"accuracy": 0.5, "f1": 0.5},  # F1 up, accuracy back to its best: wins, not strictly
           {"accuracy": 0.6, "f1": 0.6}, {"accuracy": 0.6, "f1": 0.6}]
    verdicts, state = _run(seq, TrainConfig(ties="later", select_all=("accuracy", "f1")))
    assert verdicts == [Verdict(True, True), Verdict(False, False), Verdict(True, False), Verdict(True, True),
                        Verdict(True, False)]
    assert state["best_all"] == {"accuracy": 0.6, "f1": 0.6}
    alone, _ = _run(seq, TrainConfig(ties="later"))  # accuracy alone: step 2 wins, step 3 does not
    assert [v.best for v in alone] == [True, True, False, True, True]


def test_config_checks():
    assert TrainConfig.from_dict({"select_all": ["accuracy", "f1"]}).select_all == ("accuracy", "f1")
    with pytest.raises(ConfigError, match="ties"):
        TrainConfig(ties="earlier")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="select_all"):
        TrainConfig(select_all="accuracy")  # type: ignore[arg-type]


@pytest.mark.parametrize("ties,best_step,stopped_at", [("later", 4, 4), ("loss", 2, 4)])
def test_trainer_applies_the_rule(ties, best_step, stopped_at):
    """The same scripted dev scores under both rules: both stop when two evaluations
    after step 2 brought no strict improvement; the paper's keeps the last tie, ptune's step 2."""
    lm, tok = pair("gpt2", seed=0)
    model = PTunedModel(lm, tok, PromptConfig(template="[P] {text} [MASK]", verbalizer={"pos": "yes", "neg": "no"}),
                        seed=0)
    scores = iter([0.25, 0.5, 0.5, 0.5, 0.5, 0.5])
    result = train(model, sentiment(8), sentiment(4),
                   TrainConfig(steps=6, batch_size=4, eval_every=1, patience=2, ties=ties, select_all=("accuracy",)),
                   eval_fn=lambda m, items: {"accuracy": next(scores)}, progress=False)
    assert (result.best_step, result.steps, result.stopped_early) == (best_step, stopped_at, True)


def test_trainer_names_a_missing_selection_metric():
    lm, tok = pair("gpt2", seed=0)
    model = PTunedModel(lm, tok, PromptConfig(template="[P] {text} [MASK]", verbalizer={"pos": "yes", "neg": "no"}))
    with pytest.raises(ConfigError, match="select_all.*'f1'"):
        train(model, sentiment(8), sentiment(4), TrainConfig(steps=1, batch_size=4, select_all=("accuracy", "f1")),
              progress=False)
