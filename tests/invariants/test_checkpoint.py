"""Checkpoints: exact round trips, loading by folder name, refusal of a wrong base, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import pair, sentiment
from ptune import CheckpointError, ClassifierConfig, ClassifierModel, EncoderConfig, PromptConfig, PTunedModel, TrainConfig
from ptune import checkpoint as ckpt
from ptune.checkpoint import load_checkpoint, save_checkpoint
from ptune.trainer import train

VERB = {"pos": ["yes", "great movie"], "neg": "no"}


def _trained(family="gpt2", encoder="lstm", finetune=False, seed=0):
    lm, tok = pair(family, seed=seed, hidden=64, init_range=0.2)
    torch.manual_seed(0)
    model = PTunedModel(lm, tok, PromptConfig(template="[P*2] {text} [P*2] [MASK]", verbalizer=VERB,
                                              encoder=EncoderConfig(type=encoder)))
    train(model, sentiment(32), None, TrainConfig(steps=3, lr=1e-2, batch_size=16, finetune_lm=finetune), progress=False)
    return model, lm, tok


def _scores(model, examples):
    model.eval()
    with torch.no_grad():
        return model(model.collate(model.prepare(examples))).scores


@pytest.mark.parametrize("family,encoder", [("gpt2", "lstm"), ("bert", "mlp"), ("roberta", "none")])
def test_round_trip_gives_identical_predictions(tmp_path, family, encoder):
    model, lm, tok = _trained(family, encoder)
    examples = sentiment(8, seed=5)
    before = _scores(model, examples)
    save_checkpoint(model, tmp_path / "ck")
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["README.md", "prompt.safetensors", "ptune_config.json"]  # no LM, no optimizer in a serving checkpoint
    loaded = load_checkpoint(tmp_path / "ck", base=(lm, tok))
    assert torch.equal(_scores(loaded, examples), before)
    assert [p["label"] for p in loaded.predict(examples)] == [p["label"] for p in model.predict(examples)]
    tensors = load_file(str(tmp_path / "ck" / "prompt.safetensors"))
    model.eval()
    with torch.no_grad():
        assert torch.equal(tensors["pseudo_embeddings"], model.encoder())
    meta = json.loads((tmp_path / "ck" / "ptune_config.json").read_text())
    assert meta["ptune_version"] and meta["prompt"]["template"] == "[P*2] {text} [P*2] [MASK]"
    assert meta["base"]["tokenizer_sha256"] and meta["prompt"]["verbalizer"] == {"pos": ["yes", "great movie"], "neg": ["no"]}


def test_load_by_model_folder_as_for_a_hub_name(tmp_path):
    """The hub path: the base is saved with save_pretrained and found again by name."""
    lm, tok = pair("bert", hidden=64, init_range=0.2)
    lm.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    model = PTunedModel.from_base(str(tmp_path / "base"), template="{text} [P*3] [MASK]", verbalizer=VERB, encoder="mlp")
    assert model.kind == "masked" and model.base_model == str(tmp_path / "base")
    train(model, sentiment(32), None, TrainConfig(steps=2, batch_size=16), progress=False)
    save_checkpoint(model, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")  # base loaded from the recorded folder
    examples = sentiment(6, seed=1)
    assert torch.equal(_scores(loaded, examples), _scores(model, examples))


def test_a_mismatched_base_is_refused(tmp_path):
    model, _, _ = _trained("gpt2")
    save_checkpoint(model, tmp_path / "ck")
    other_weights = pair("gpt2", seed=7, hidden=64, init_range=0.2)
    with pytest.raises(CheckpointError, match="another base model .*different input-embedding weights"):
        load_checkpoint(tmp_path / "ck", base=other_weights)
    other_size = pair("gpt2", hidden=32)
    with pytest.raises(CheckpointError, match="hidden_size 64 vs 32"):
        load_checkpoint(tmp_path / "ck", base=other_size)
    other_family = pair("llama", hidden=64)
    with pytest.raises(CheckpointError, match="model_type gpt2 vs llama"):
        load_checkpoint(tmp_path / "ck", base=other_family)
    with pytest.raises(CheckpointError, match="not a ptune checkpoint"):
        load_checkpoint(tmp_path)


def test_jointly_tuned_lm_travels_with_the_checkpoint(tmp_path):
    model, _, _ = _trained("bert", "lstm", finetune=True)
    save_checkpoint(model, tmp_path / "ck")
    assert (tmp_path / "ck" / "lm" / "config.json").is_file()
    loaded = load_checkpoint(tmp_path / "ck")
    examples = sentiment(6, seed=2)
    torch.testing.assert_close(_scores(loaded, examples), _scores(model, examples), atol=1e-6, rtol=1e-6)
    save_checkpoint(loaded, tmp_path / "again")  # a loaded tuned LM stays with the prompt
    assert (tmp_path / "again" / "lm" / "config.json").is_file()


def test_load_weights_into_a_model_of_the_same_config(tmp_path):
    """What the trainer does to restore best/: the prompt into an existing model; a checkpoint
    of another config or of the other model type is refused."""
    model, lm, tok = _trained("gpt2", "mlp")
    save_checkpoint(model, tmp_path / "ck")
    fresh = PTunedModel(lm, tok, model.config, seed=5)
    examples = sentiment(6, seed=3)
    assert not torch.equal(_scores(fresh, examples), _scores(model, examples))
    ckpt.load_weights(fresh, tmp_path / "ck")
    assert torch.equal(_scores(fresh, examples), _scores(model, examples))
    other = PTunedModel(lm, tok, PromptConfig(template="[P*3] {text} [MASK]", verbalizer=VERB))
    with pytest.raises(CheckpointError, match="another prompt config"):
        ckpt.load_weights(other, tmp_path / "ck")
    classifier = ClassifierModel(lm, tok, ClassifierConfig(inputs=["{text}"], labels=["pos", "neg"]), seed=0)
    with pytest.raises(CheckpointError, match="another classifier config"):
        ckpt.load_weights(classifier, tmp_path / "ck")


def test_writes_are_atomic(tmp_path, monkeypatch):
    model, lm, tok = _trained("gpt2")
    save_checkpoint(model, tmp_path / "ck")
    good = (tmp_path / "ck" / "prompt.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with torch.no_grad():
        for p in model.prompt_parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, tmp_path / "ck")
    assert (tmp_path / "ck" / "prompt.safetensors").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary folder left behind
    monkeypatch.undo()
    save_checkpoint(model, tmp_path / "ck")  # replacing an existing checkpoint works
    assert (tmp_path / "ck" / "prompt.safetensors").read_bytes() != good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_training_checkpoint_holds_optimizer_state(tmp_path):
    lm, tok = pair("gpt2", hidden=64, init_range=0.2)
    model = PTunedModel(lm, tok, PromptConfig(template="{text} [P*2] [MASK]", verbalizer=VERB))
    train(model, sentiment(32), sentiment(8), TrainConfig(steps=4, batch_size=16, eval_every=2), tmp_path / "run", progress=False)
    last = tmp_path / "run" / "last"
    assert {"accelerate", "trainer_state.json", "prompt.safetensors"} <= {p.name for p in last.iterdir()}
    # Accelerate's save_state: optimizer, scheduler and RNG; the weights are the checkpoint's own
    resume = {p.name for p in (last / "accelerate").iterdir()}
    assert {"optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"} <= resume
    assert not [n for n in resume if "model" in n]
    opt = torch.load(last / "accelerate" / "optimizer.bin", weights_only=True)
    assert opt["state"] and all("exp_avg" in s for s in opt["state"].values())
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 4
    loaded = load_checkpoint(tmp_path / "run", base=(lm, tok))  # a run folder resolves to best/
    assert loaded.compiled.n_pseudo == 2
