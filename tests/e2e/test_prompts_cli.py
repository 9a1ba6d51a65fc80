"""ptune generate / export / import in-process: outputs equal the library's, bad input is one line."""

from __future__ import annotations

import json

import pytest

from conftest import pair
from ptune import PromptConfig, PTunedModel, load_checkpoint, save_checkpoint
from ptune.cli import main

VERB = {"pos": "yes", "neg": "no"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Checkpoints on a saved tiny GPT-2 and BERT: a generation template and a PEFT-able one."""
    root = tmp_path_factory.mktemp("prompts")
    for family in ("gpt2", "bert"):
        lm, tok = pair(family, init_range=0.2, dropout=0.0)
        lm.save_pretrained(root / family)
        tok.save_pretrained(root / family)
    for name, family, template in (("gen", "gpt2", "[P*2] {text} [P] Answer:[MASK]"),
                                   ("two", "gpt2", "{premise} [P] {hypothesis} [MASK]"),
                                   ("front", "gpt2", "[P*3] {text} ? [MASK]"),
                                   ("mlm", "bert", "[P*2] {text} [MASK] .")):
        model = PTunedModel.from_base(str(root / family), template=template, verbalizer=VERB, seed=0)
        save_checkpoint(model, root / name)
    (root / "in.jsonl").write_text(json.dumps({"text": "the movie was great .", "idx": 7}) + "\n"
                                   + json.dumps({"text": "cat"}) + "\n")
    return root


def test_generate(ckpts, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(ckpts / "gen"), "--data", str(ckpts / "in.jsonl"),
                 "--max-new-tokens", "5", "--batch-size", "2", "--output", str(tmp_path / "o.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    model = load_checkpoint(ckpts / "gen")
    want = model.generate_text([{"text": "the movie was great ."}, {"text": "cat"}], max_new_tokens=5)
    assert [r["text"] for r in rows] == [w["text"] for w in want]
    assert rows[0]["idx"] == 7 and rows[0]["source"].endswith("in.jsonl:1") and "idx" not in rows[1]
    assert main(["generate", "--checkpoint", str(ckpts / "gen"), "--text", "cat", "--max-new-tokens", "5",
                 "--do-sample", "--seed", "0", "--temperature", "0.7"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["source"] == "--text" and row["finish_reason"] in ("length", "eos")


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "two", "--text", "cat"], "--text: fills the template's only field, but it reads premise, "
                                               "hypothesis"),
    (["--checkpoint", "gen"], "--data: give --data FILE or --text TEXT"),
    (["--checkpoint", "mlm", "--text", "cat"], "model: open-ended generation needs a causal LM"),
    (["--checkpoint", "gen", "--text", "cat", "--top-p", "0.5"], "top_p: applies to sampling only"),
])
def test_generate_errors(ckpts, capsys, args, message):
    args = [str(ckpts / a) if a in ("two", "gen", "mlm") else a for a in args]
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptune: error: ") and message in err and "\n" not in err


def test_export_and_import(ckpts, tmp_path, capsys):
    pytest.importorskip("peft")
    assert main(["export", "--checkpoint", str(ckpts / "front"), "--format", "peft",
                 "--output", str(tmp_path / "peft")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "peft" and "' {text} ?'" in out["notes"][0]
    assert {p.name for p in (tmp_path / "peft").iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                               "README.md"}
    assert main(["export", "--checkpoint", str(ckpts / "gen"), "--format", "embeddings",
                 "--output", str(tmp_path / "emb")]) == 0
    capsys.readouterr()
    assert {p.name for p in (tmp_path / "emb").iterdir()} == {"pseudo_embeddings.safetensors", "template.json",
                                                              "verbalizer.json", "README.md"}
    assert main(["import", "--peft", str(tmp_path / "peft"), "--template", " {text} ? [MASK]",
                 "--verbalizer", json.dumps(VERB), "--output", str(tmp_path / "back")]) == 0
    assert json.loads(capsys.readouterr().out)["template"] == "[P*3] {text} ? [MASK]"
    assert (tmp_path / "back" / "README.md").read_text().count("Imported from the PEFT PROMPT_TUNING adapter") == 1
    examples = [{"text": "the movie was great ."}, {"text": "cat"}]
    back, front = (load_checkpoint(tmp_path / c).predict(examples) for c in ("back", ckpts / "front"))
    assert [b["label"] for b in back] == [f["label"] for f in front]
    assert all(b["scores"] == pytest.approx(f["scores"], abs=1e-6) for b, f in zip(back, front))


@pytest.mark.parametrize("args,message", [
    (["export", "--checkpoint", "gen", "--format", "peft", "--output", "x"],
     "column 14: pseudo tokens P3 after {text}: a PEFT prompt-learning adapter puts all its pseudo tokens before"),
    (["export", "--checkpoint", "mlm", "--format", "peft", "--output", "x"],
     "format: PEFT has no prompt-learning task type for masked LMs"),
    (["export", "--checkpoint", "gen", "--format", "onnx", "--output", "x"], "invalid choice: 'onnx'"),
    (["import", "--peft", "gen", "--template", "{text}[MASK]", "--verbalizer", json.dumps(VERB), "--output", "x"],
     "not a PEFT adapter (no adapter_config.json)"),
])
def test_export_import_errors(ckpts, tmp_path, capsys, args, message):
    args = [str(ckpts / a) if a in ("gen", "mlm") else str(tmp_path / a) if a == "x" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptune: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()
