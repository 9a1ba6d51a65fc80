"""Restarts selected on dev (ptune.restarts): a stalled prompt trains again with the next
seed, at most ``restarts`` times, and the attempt with the best dev score is kept."""

from __future__ import annotations

import pytest
import torch

from conftest import pair, sentiment
from ptune import ConfigError, PromptConfig, PTunedModel, TrainConfig
from ptune.restarts import RestartConfig, stalled, train_restarts

LM, TOK = pair("gpt2", seed=0)
PROMPT = PromptConfig(template="[P*2] {text} [MASK]", verbalizer={"pos": "yes", "neg": "no"})
CONFIG = TrainConfig(steps=2, batch_size=4, eval_every=1, seed=7)


def _make(dev_scores=None, built=None):
    """``make`` for train_restarts; with ``dev_scores``, attempt k's dev score is scripted."""
    def make(attempt, config):
        model = PTunedModel(LM, TOK, PROMPT, seed=config.seed)
        if built is not None:
            built.append((attempt, config.seed))
        return model, sentiment(8), sentiment(4), {"tag": f"a{attempt}"}
    return make


def _scripted(scores):
    """An eval_fn giving attempt k (counted by calls: two evaluations per attempt) scores[k]."""
    calls = iter(range(100))
    return lambda model, items: {"accuracy": scores[next(calls) // 2]}


@pytest.mark.parametrize("scores,restarts,kept,tried", [
    ([0.2, 0.4, 0.3], 2, 1, 3),   # all stall: the best dev of the three
    ([0.2, 0.6, 0.9], 2, 1, 2),   # the second does not stall: no third attempt
    ([0.7, 0.1, 0.1], 2, 0, 1),   # no stall, no restart
    ([0.3, 0.3, 0.3], 2, 0, 3),   # ties: the earliest
    ([0.2, 0.4, 0.3], 0, 0, 1),   # restarts off
])
def test_restarts_train_again_while_stalled_and_keep_the_best_on_dev(scores, restarts, kept, tried):
    built = []
    out = train_restarts(_make(built=built), CONFIG, RestartConfig(restarts=restarts, restart_below=0.5),
                         eval_fn=_scripted(scores), progress=False)
    assert built == [(k, 7 + k) for k in range(tried)]  # attempt k trains with seed + k
    assert [a["dev"] for a in out.attempts] == scores[:tried]
    assert [a["seed"] for a in out.attempts] == [7 + k for k in range(tried)]
    assert [a["tag"] for a in out.attempts] == [f"a{k}" for k in range(tried)]
    assert out.attempt == kept and [a["kept"] for a in out.attempts].count(True) == 1
    assert out.result.best_metrics["accuracy"] == scores[kept]


def test_the_kept_model_is_its_attempt_and_the_choice_is_deterministic():
    """Real dev evaluations; every attempt stalls (threshold above any score): the kept
    model is the kept attempt's trained prompt, and a rerun keeps the same one."""
    policy = RestartConfig(restarts=2, restart_below=1.1)
    runs = [train_restarts(_make(), CONFIG, policy, progress=False) for _ in range(2)]
    assert len(runs[0].attempts) == 3
    assert [a["dev"] for a in runs[0].attempts] == [a["dev"] for a in runs[1].attempts]
    assert runs[0].attempt == runs[1].attempt
    assert runs[0].attempts[runs[0].attempt]["dev"] == max(a["dev"] for a in runs[0].attempts)
    a, b = (r.model.pseudo_embeddings().detach() for r in runs)
    assert torch.equal(a, b)
    fresh = PTunedModel(LM, TOK, PROMPT, seed=7 + runs[0].attempt)  # the kept attempt's start ...
    assert not torch.equal(fresh.pseudo_embeddings().detach(), a)  # ... trained


def test_no_dev_set_means_one_attempt_and_checks():
    def make(attempt, config):
        return PTunedModel(LM, TOK, PROMPT, seed=config.seed), sentiment(8), None, {}
    out = train_restarts(make, CONFIG, RestartConfig(restart_below=1.1), progress=False)
    assert len(out.attempts) == 1 and out.attempts[0]["dev"] is None and out.attempt == 0
    assert stalled(0.2, RestartConfig()) and not stalled(0.5, RestartConfig()) and not stalled(None, RestartConfig())
    for bad in ({"restarts": -1}, {"restarts": 1.5}, {"restart_below": float("nan")}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            RestartConfig(**bad)
