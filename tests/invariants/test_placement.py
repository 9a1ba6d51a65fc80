"""A prompt trained through an LM spread over devices by Accelerate (``--device-map auto``)
equals the one trained on the plain LM. On a CPU-only machine the spread is CPU + disk:
``max_memory`` leaves room on the CPU for the embeddings and the head only, and Accelerate's
hooks load the other layers' weights from disk for each forward and backward."""

from __future__ import annotations

import pytest
import torch

from conftest import pair, sentiment
from ptune import PromptConfig, PTunedModel, TrainConfig
from ptune.errors import ConfigError
from ptune.lm import load_base
from ptune.placement import device_map_for, is_dispatched, load_dispatched, parse_max_memory
from ptune.trainer import train

TEMPLATES = {"gpt2": "[P*2] {text} [P*2] [MASK]", "bert": "[P*2] {text} [P*2] [MASK] ."}


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_prompt_trained_through_an_offloaded_lm_equals_the_plain_run(tmp_path, family):
    lm, tok = pair(family, hidden=64, init_range=0.2)
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    size = sum(p.numel() * p.element_size() for p in lm.parameters())
    for share in (0.5, 0.6, 0.7, 0.8):  # the least room on the CPU that holds the embeddings and the head
        budget = {"cpu": int(share * size)}
        try:
            placed = device_map_for(str(tmp_path / "lm"), budget)
            break
        except ConfigError:
            continue
    assert "disk" in placed.values() and "cpu" in placed.values(), placed
    runs = {}
    for name, (model_lm, tokenizer, _) in {"plain": load_base(str(tmp_path / "lm")),
                                           "dispatched": load_dispatched(str(tmp_path / "lm"), budget,
                                                                         offload_folder=str(tmp_path / "off"))}.items():
        model = PTunedModel(model_lm, tokenizer, PromptConfig(template=TEMPLATES[family],
                                                              verbalizer={"pos": "yes", "neg": "no"}), seed=0)
        initial = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        train(model, sentiment(16), None, TrainConfig(steps=4, batch_size=8, lr=3e-2), progress=False)
        runs[name] = (model, torch.cat([o.scores for _, _, o in _outputs(model, sentiment(8, seed=3))]))
    (plain, scores), (dispatched, moved) = runs["plain"], runs["dispatched"]
    assert is_dispatched(dispatched.lm) and any(p.device.type == "meta" for p in dispatched.lm.parameters())
    assert any(not torch.equal(v, initial[k]) for k, v in dispatched.encoder.state_dict().items())  # it trained
    for (name, a), b in zip(plain.encoder.state_dict().items(), dispatched.encoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(scores, moved, rtol=1e-5, atol=1e-5)


def _outputs(model, examples):
    from ptune.inference import iter_outputs

    return iter_outputs(model, model.prepare(examples, require_labels=True), 4)


def test_max_memory_syntax_and_a_budget_with_no_room():
    assert parse_max_memory("0=20GiB, 1=20GiB,cpu=60GiB") == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}
    with pytest.raises(ConfigError, match="DEVICE=SIZE"):
        parse_max_memory("cpu")


def test_cli_trains_through_a_dispatched_lm(tmp_path, capsys):
    import json

    from ptune.cli import main

    lm, tok = pair("gpt2", hidden=64, init_range=0.2)
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(ex) + "\n" for ex in sentiment(16)))
    size = sum(p.numel() * p.element_size() for p in lm.parameters())
    common = ["train", "--model", str(tmp_path / "lm"), "--train", str(data), "--template", TEMPLATES["gpt2"],
              "--verbalizer", '{"pos": "yes", "neg": "no"}', "--steps", "2", "--batch-size", "8"]
    assert main([*common, "--output", str(tmp_path / "a"), "--max-memory", "cpu=1GiB"]) == 2
    assert "--device-map auto only" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "b"), "--device-map", "auto", "--max-memory",
                 f"cpu={int(0.6 * size)}", "--offload-folder", str(tmp_path / "off")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
