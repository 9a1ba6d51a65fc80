"""Prompts exported to PEFT score as in ptune, and PEFT adapters imported into ptune score as in PEFT."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import pair
from ptune import CheckpointError, ConfigError, PromptConfig, PTunedModel, TemplateError, TrainConfig, train
from ptune.checkpoint import load_checkpoint, save_checkpoint
from ptune.export import export_embeddings, export_peft, import_peft

peft = pytest.importorskip("peft")

VERB = {"pos": "yes", "neg": "no"}
TEXTS = ["the movie was great .", "cat", "a wonderful story with brilliant acting and good music ."]
TOL = 1e-5


def _base(tmp_path, family):
    """A tiny LM saved to a folder (ptune loads it by path) and a separate copy for PEFT."""
    lm, tok = pair(family, init_range=0.2, dropout=0.0)
    lm.save_pretrained(tmp_path / family)
    tok.save_pretrained(tmp_path / family)
    return str(tmp_path / family), pair(family, init_range=0.2, dropout=0.0)[0].eval()


@torch.no_grad()
def _peft_probs(peft_model, tok, model: PTunedModel, example: dict, skip: int) -> torch.Tensor:
    """PEFT's label probabilities: the ids ptune feeds after its first ``skip`` tokens
    (special tokens and pseudo tokens), the next-token distribution over the words."""
    item = model.prepare([example])[0]
    ids = model.collator.compiled.encode(item.fields, answer_len=1).input_ids[skip:]
    logits = peft_model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    assert all(len(c) == 1 for c in model.answers.candidates)  # single-token words: one next-token read
    words = [c[0] for c in model.answers.candidates]
    return logits.log_softmax(-1)[words].softmax(-1)


def _ptune_probs(model: PTunedModel, example: dict) -> torch.Tensor:
    return torch.tensor(list(model.predict([example])[0]["scores"].values()))


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # llama's tokenizer adds BOS before the input
def test_exported_adapter_scores_as_ptune(tmp_path, family):
    path, peft_lm = _base(tmp_path, family)
    model = PTunedModel.from_base(path, template="[P*3] {text} ?[MASK]", verbalizer=VERB, encoder="lstm", seed=0)
    notes = export_peft(model, tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(peft_lm, str(tmp_path / "adapter")).eval()
    prefix = len(model.compiled.prefix)
    diff = max(float((_peft_probs(loaded, model.tokenizer, model, {"text": t}, prefix + 3)
                      - _ptune_probs(model, {"text": t})).abs().max()) for t in TEXTS)
    assert diff <= TOL
    print(f"\nexport {family}: max |PEFT - ptune| label probability {diff:.1e}")
    # the config is the one PEFT itself writes for this model and prompt length
    own = peft.get_peft_model(pair(family)[0], peft.PromptTuningConfig(task_type="CAUSAL_LM",
                                                                       num_virtual_tokens=3 + prefix))
    own.save_pretrained(str(tmp_path / "own"))
    ours, theirs = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("adapter", "own"))
    assert {k: v for k, v in ours.items() if k != "base_model_name_or_path"} == \
           {k: v for k, v in theirs.items() if k != "base_model_name_or_path"}
    assert ours["base_model_name_or_path"] == path
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "library_name: ptune" in card and "' {text} ?'" in card
    assert ("add_special_tokens=False" in card and any("leading special token" in n for n in notes)) == bool(prefix)
    # the round trip: importing the export gives back ptune's numbers
    back, _ = import_peft(tmp_path / "adapter", template=" {text} ?[MASK]", verbalizer=VERB)
    assert back.config.template == "[P*3] {text} ?[MASK]"
    for t in TEXTS:
        assert torch.allclose(_ptune_probs(back, {"text": t}), _ptune_probs(model, {"text": t}), atol=TOL)


def _peft_adapter(tmp_path, kind: str):
    lm = pair("gpt2", init_range=0.2, dropout=0.0)[0]
    if kind == "PROMPT_TUNING":
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    else:
        config = peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16)
    made = peft.get_peft_model(lm, config)
    with torch.no_grad():  # an adapter that has learned something: away from its initialisation
        for p in made.prompt_encoder["default"].parameters():
            p.normal_(0, 0.5)
    made.save_pretrained(str(tmp_path / "adapter"))
    return tmp_path / "adapter"


@pytest.mark.parametrize("kind", ["PROMPT_TUNING", "P_TUNING"])
def test_imported_adapter_scores_as_peft_and_trains_on(tmp_path, kind):
    path, peft_lm = _base(tmp_path, "gpt2")
    adapter = _peft_adapter(tmp_path, kind)
    model, notes = import_peft(adapter, base=path, template="{text}[MASK]", verbalizer=VERB)
    loaded = peft.PeftModel.from_pretrained(peft_lm, str(adapter)).eval()
    diff = max(float((_peft_probs(loaded, model.tokenizer, model, {"text": t}, 4)
                      - _ptune_probs(model, {"text": t})).abs().max()) for t in TEXTS)
    assert diff <= TOL and model.config.template == "[P*4]{text}[MASK]" and model.config.encoder.type == "none"
    print(f"\nimport {kind}: max |ptune - PEFT| label probability {diff:.1e}")
    save_checkpoint(model, tmp_path / "ck")
    again = load_checkpoint(tmp_path / "ck")
    assert all(torch.equal(_ptune_probs(again, {"text": t}), _ptune_probs(model, {"text": t})) for t in TEXTS)
    before = again.pseudo_embeddings().detach().clone()
    data = [{"text": t, "label": lab} for t, lab in zip(TEXTS, ["pos", "neg", "pos"])]
    train(again, data, None, TrainConfig(steps=2, batch_size=3, lr=1e-2), progress=False)
    assert not torch.equal(again.pseudo_embeddings().detach(), before)


def test_export_refusals(tmp_path):
    path, _ = _base(tmp_path, "gpt2")
    model = PTunedModel.from_base(path, template="[P*2] {text} [P] Answer:[P*2][MASK]", verbalizer=VERB, seed=0)
    with pytest.raises(TemplateError, match=r"column 14: pseudo tokens P3 after \{text\}, P4-P5 after 'Answer:': "
                                            "a PEFT prompt-learning adapter puts all its pseudo tokens before"):
        export_peft(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    lm, tok = pair("bert")
    masked = PTunedModel(lm, tok, PromptConfig(template="[P*2] {text} [MASK]", verbalizer=VERB))
    with pytest.raises(ConfigError, match="no prompt-learning task type for masked LMs"):
        export_peft(masked, tmp_path / "x")
    model = PTunedModel.from_base(path, template="[P*2] {text}[MASK]", verbalizer=VERB, seed=0)
    model.set_lm_trainable(True)
    for export in (export_peft, export_embeddings):
        with pytest.raises(ConfigError, match="the LM was tuned with the prompt; an export holds the prompt only"):
            export(model, tmp_path / "x")


def test_embeddings_export_any_layout(tmp_path):
    path, _ = _base(tmp_path, "llama")
    model = PTunedModel.from_base(path, template="[P*2] {text} [P] Answer:[MASK]", verbalizer=VERB, seed=0)
    export_embeddings(model, tmp_path / "emb")
    from safetensors.torch import load_file

    rows = load_file(str(tmp_path / "emb" / "pseudo_embeddings.safetensors"))["pseudo_embeddings"]
    model.eval()
    with torch.no_grad():
        assert torch.equal(rows, model.pseudo_embeddings())
    template = json.loads((tmp_path / "emb" / "template.json").read_text())
    assert template["parts"] == [{"pseudo": [0, 1]}, {"field": "text", "space_before": True}, {"pseudo": [2]},
                                 {"text": " Answer:"}, {"answer": "continuation"}]
    assert template["leading_special_tokens"] == [model.tokenizer.bos_token]
    verb = json.loads((tmp_path / "emb" / "verbalizer.json").read_text())
    assert verb["verbalizer"] == {"pos": ["yes"], "neg": ["no"]}
    assert verb["token_ids"] == {"pos": [list(model.answers.candidates[0])], "neg": [list(model.answers.candidates[1])]}
    assert "prompt_embeds" in (tmp_path / "emb" / "README.md").read_text()


def _rewrite(adapter, **changes):
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("changes,message", [
    ({"task_type": "SEQ_2_SEQ_LM", "num_transformer_submodules": 2}, "a seq2seq adapter \\(2 groups of virtual tokens"),
    ({"task_type": "SEQ_CLS"}, "task type SEQ_CLS; only CAUSAL_LM adapters"),
    ({"num_virtual_tokens": 5}, "expected one tensor 'prompt_embeddings' of shape \\(5, 32\\), found"),
    ({"base_model_name_or_path": None}, "the adapter names no base model"),
])
def test_import_refusals(tmp_path, changes, message):
    adapter = _peft_adapter(tmp_path, "PROMPT_TUNING")
    _rewrite(adapter, **changes)
    with pytest.raises((CheckpointError, ConfigError), match=message):
        import_peft(adapter, template="{text}[MASK]", verbalizer=VERB)


def test_import_refuses_other_adapters(tmp_path):
    lora = peft.get_peft_model(pair("gpt2")[0], peft.LoraConfig(task_type="CAUSAL_LM", target_modules=["c_attn"]))
    lora.save_pretrained(str(tmp_path / "lora"))
    with pytest.raises(CheckpointError, match="a LORA adapter; only PROMPT_TUNING and P_TUNING"):
        import_peft(tmp_path / "lora", base="unused", template="{text}[MASK]", verbalizer=VERB)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: not a PEFT adapter \(no adapter_config.json\)$"):
        import_peft(tmp_path / "empty", base="unused", template="{text}[MASK]", verbalizer=VERB)
    with pytest.raises(CheckpointError, match="not a PEFT adapter .* it holds the adapters lora: import one of them"):
        import_peft(tmp_path, base="unused", template="{text}[MASK]", verbalizer=VERB)
    adapter = _peft_adapter(tmp_path, "PROMPT_TUNING")
    with pytest.raises(ConfigError, match="holds pseudo tokens"):
        import_peft(adapter, base="unused", template="[P] {text}[MASK]", verbalizer=VERB)


def test_import_says_where_peft_and_ptune_differ(tmp_path):
    """A PEFT adapter on a tokenizer that adds BOS: PEFT reads BOS after the pseudo tokens,
    ptune before them; the import says so instead of claiming PEFT's numbers."""
    path, _ = _base(tmp_path, "llama")
    made = peft.get_peft_model(pair("llama")[0], peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    made.save_pretrained(str(tmp_path / "adapter"))
    model, notes = import_peft(tmp_path / "adapter", base=path, template="{text}[MASK]", verbalizer=VERB)
    assert model.compiled.n_pseudo == 2
    assert any("PEFT puts the virtual tokens before the tokenizer's leading" in n and "scores differ" in n
               for n in notes)
