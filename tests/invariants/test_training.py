"""The training loop: learning with a frozen LM, joint tuning, schedules, early stopping, resume."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import pair, sentiment
from ptune import CheckpointError, ConfigError, EncoderConfig, PromptConfig, PTunedModel, TrainConfig
from ptune.evaluation import evaluate
from ptune.optimization import make_scheduler, param_groups
from ptune.trainer import train

TEMPLATE = "{text} [P*4] [MASK]"
VERB = {"pos": "yes", "neg": "no"}


def _model(family="gpt2", encoder="lstm", seed=0, template=TEMPLATE, prompt_seed=None):
    lm, tok = pair(family, seed=seed, hidden=64, init_range=0.2)
    torch.manual_seed(seed if prompt_seed is None else prompt_seed)
    return PTunedModel(lm, tok, PromptConfig(template=template, verbalizer=VERB, encoder=EncoderConfig(type=encoder)))


@pytest.mark.parametrize("family,encoder", [("gpt2", "lstm"), ("bert", "mlp"), ("llama", "none")])
def test_frozen_training_learns_and_leaves_the_lm_untouched(family, encoder):
    model = _model(family, encoder)
    before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    data = sentiment(64)
    items = model.prepare(data, require_labels=True)
    start = evaluate(model, items)
    result = train(model, items, items, TrainConfig(steps=80, lr=1e-2, batch_size=16, eval_every=40), progress=False)
    end = evaluate(model, items)
    assert end["loss"] < 0.5 * start["loss"], (start, end)
    assert end["accuracy"] >= 0.9
    assert result.steps == 80
    after = model.lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in model.lm.parameters())
    assert not model.lm.training  # no dropout in a frozen LM


def test_finetune_lm_updates_the_lm_with_its_own_learning_rate():
    model = _model("bert", "mlp")
    before = model.lm.get_input_embeddings().weight.detach().clone()
    items = model.prepare(sentiment(32), require_labels=True)
    train(model, items, None, TrainConfig(steps=3, lr=1e-2, lm_lr=1e-3, batch_size=16, finetune_lm=True), progress=False)
    assert not torch.equal(before, model.lm.get_input_embeddings().weight)
    assert model.lm.training is False  # model ends in eval mode


def _factors(config, total, steps_per_epoch, at):
    """The schedule's learning-rate factor before each optimizer step in ``at``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, config, total, steps_per_epoch)
    out = []
    for step in range(max(at) + 1):
        if step in at:
            out.append(round(optimizer.param_groups[0]["lr"], 6))
        optimizer.step()
        scheduler.step()
    return out


def test_schedules():
    linear = TrainConfig(steps=10, warmup_steps=2, schedule="linear")
    assert _factors(linear, 10, 5, (0, 1, 2, 6, 10)) == [0.0, 0.5, 1.0, 0.5, 0.0]  # transformers' warmup from 0
    assert _factors(TrainConfig(steps=10, schedule="linear"), 10, 5, (0, 5, 9)) == [1.0, 0.5, 0.1]
    exponential = TrainConfig(schedule="exponential", gamma=0.5)
    assert _factors(exponential, 100, 5, (0, 4, 5, 10)) == [1.0, 1.0, 0.5, 0.25]  # once per epoch
    warm = TrainConfig(schedule="exponential", gamma=0.5, warmup_steps=2)
    assert _factors(warm, 100, 5, (0, 1, 2, 5)) == [0.0, 0.5, 1.0, 0.5]
    assert _factors(TrainConfig(schedule="constant", warmup_steps=2), 100, 5, (1, 50)) == [0.5, 1.0]


def test_early_stopping_and_metrics_log(tmp_path):
    model = _model()
    items = model.prepare(sentiment(32), require_labels=True)
    # lr so small that dev accuracy cannot improve after the first evaluation
    result = train(model, items, items, TrainConfig(steps=50, lr=1e-9, batch_size=16, eval_every=2, patience=3),
                   tmp_path / "run", progress=False)
    assert result.stopped_early and result.steps == 8 and result.best_step == 2
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "eval" not in r] == list(range(1, 9))
    assert [r["step"] for r in lines if r.get("eval") == "dev"] == [2, 4, 6, 8]
    assert all({"loss", "lr", "epoch"} <= set(r) for r in lines if "eval" not in r)
    for sub in ("best", "last"):
        assert (tmp_path / "run" / sub / "ptune_config.json").is_file()
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["patience"] == 3


def test_gradient_accumulation_matches_one_big_batch():
    weights = []
    for accum in (1, 4):
        model = _model(seed=1)
        items = model.prepare(sentiment(32), require_labels=True)
        train(model, items, None, TrainConfig(steps=3, lr=1e-2, batch_size=16, grad_accum=accum), progress=False)
        weights.append([p.detach().clone() for p in model.prompt_parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(steps=12, lr=1e-2, batch_size=8, eval_every=3, schedule="linear", warmup_steps=2)
    straight = _model(seed=2)
    items = straight.prepare(sentiment(32), require_labels=True)
    train(straight, items, None, cfg, tmp_path / "a", progress=False)

    first = _model(seed=2)
    r1 = train(first, items, None, cfg, tmp_path / "b", stop_at_step=5, progress=False)
    assert r1.steps == 5
    state = json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 5
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_model(seed=2), items, None, cfg, tmp_path / "b", progress=False)
    with pytest.raises(CheckpointError, match="another base model"):
        train(_model(seed=3), items, None, cfg, tmp_path / "b", resume=True, progress=False)
    resumed = _model(seed=2, prompt_seed=99)  # another prompt init: the checkpoint must restore it
    r2 = train(resumed, items, None, cfg, tmp_path / "b", resume=True, progress=False)
    assert r2.steps == 12
    for a, b in zip(straight.prompt_parameters(), resumed.prompt_parameters()):
        assert torch.equal(a, b)  # bit-identical: the same data order, optimizer, schedule and RNG
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_nothing_to_train_and_bad_batch_size():
    model = _model(template="{text} [MASK]")
    items = model.prepare(sentiment(16), require_labels=True)
    with pytest.raises(ConfigError, match="nothing to train"):
        train(model, items, None, TrainConfig(steps=1, batch_size=8), progress=False)
    with pytest.raises(ConfigError, match="larger than the 16 training examples"):
        train(_model(), sentiment(16), None, TrainConfig(steps=1, batch_size=32), progress=False)
    with pytest.raises(ConfigError, match="steps or epochs"):
        TrainConfig(steps=1, epochs=1)
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        TrainConfig.from_dict({"lrr": 1})


def test_manual_template_trains_with_the_lm():
    """The manual-prompt baseline: no pseudo tokens, the LM tuned (PET-style)."""
    model = _model("bert", template="{text} It was [MASK] .")
    assert model.encoder is None
    items = model.prepare(sentiment(32), require_labels=True)
    result = train(model, items, items, TrainConfig(steps=30, lm_lr=3e-3, batch_size=16, finetune_lm=True, lm_dropout=False), progress=False)
    assert result.last_metrics["accuracy"] >= 0.9
    assert [g["name"] for g in param_groups(model, TrainConfig(finetune_lm=True))] == ["lm", "lm_no_decay"]


def test_best_dev_weights_are_restored_in_memory():
    model = _model()
    items = model.prepare(sentiment(32), require_labels=True)
    result = train(model, items, items, TrainConfig(steps=12, lr=5e-2, batch_size=16, eval_every=2), progress=False)
    best = max(h["accuracy"] for h in result.history)
    assert result.best_metrics["accuracy"] == best
    assert evaluate(model, items)["accuracy"] == best


def test_compiled_lm_trains_like_the_eager_one():
    """TrainConfig(compile=True) compiles the LM in place; the numbers stay those of eager mode."""
    results = []
    for compiled in (False, True):
        lm, tok = pair("gpt2", seed=0, dropout=0.0)
        cfg = PromptConfig(template="[P*2] {text} [P] [MASK]", verbalizer={"pos": "yes", "neg": "no"},
                           encoder=EncoderConfig(type="mlp"))
        model = PTunedModel(lm, tok, cfg, seed=0)
        train(model, sentiment(16), None, TrainConfig(steps=3, batch_size=8, lr=1e-2, compile=compiled),
              progress=False)
        results.append({k: v.detach().clone() for k, v in model.encoder.state_dict().items()})
        assert list(model.lm.state_dict()) == list(lm.state_dict())  # in place: same keys
        assert (getattr(model.lm, "_compiled_call_impl", None) is not None) == compiled
    for k in results[0]:
        torch.testing.assert_close(results[1][k], results[0][k], atol=1e-5, rtol=1e-4)


def test_compile_mode_reaches_torch_compile(monkeypatch):
    """A string TrainConfig.compile is torch.compile's mode (reduce-overhead: CUDA graphs);
    True compiles with the default mode; an unknown mode is refused by name."""
    calls = []
    lm, tok = pair("gpt2", seed=0)
    monkeypatch.setattr(lm, "compile", lambda **kw: calls.append(kw), raising=False)
    model = PTunedModel(lm, tok, PromptConfig(template="[P] {text} [MASK]", verbalizer={"pos": "yes", "neg": "no"}),
                        seed=0)
    train(model, sentiment(8), None, TrainConfig(steps=1, batch_size=4, compile="reduce-overhead"), progress=False)
    assert calls == [{"mode": "reduce-overhead"}]
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig(compile="fastest")


@pytest.mark.parametrize("losses,best_step,stopped", [
    ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], 6, False),  # the same accuracy with a falling loss: still improving
    ([0.9, 0.9, 0.9, 0.9, 0.9, 0.9], 1, True),  # a tie without a lower loss is not an improvement
])
def test_an_accuracy_tie_with_a_lower_dev_loss_counts_as_improvement(losses, best_step, stopped):
    lm, tok = pair("gpt2", seed=0)
    model = PTunedModel(lm, tok, PromptConfig(template="[P] {text} [MASK]", verbalizer={"pos": "yes", "neg": "no"}),
                        seed=0)
    seen = iter(losses)
    result = train(model, sentiment(8), sentiment(4),
                   TrainConfig(steps=6, batch_size=4, eval_every=1, patience=2),
                   eval_fn=lambda m, items: {"accuracy": 0.5, "loss": next(seen)}, progress=False)
    assert result.best_step == best_step and result.stopped_early is stopped
