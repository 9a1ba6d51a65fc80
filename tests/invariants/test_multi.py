"""Many prompts on one frozen LM (ptune.multi): rows of several prompts in one forward pass
give each prompt's own scores, as the prompt alone (PTunedModel, default speed paths) does."""

from __future__ import annotations

import pytest
import torch

from conftest import pair, sentiment
from ptune import EncoderConfig, PromptConfig, PTunedModel
from ptune.checkpoint import save_checkpoint
from ptune.config import GenerateConfig
from ptune.errors import CheckpointError, ConfigError
from ptune.multi import PromptBank

TOL = 1e-5
CHOICES = [
    {"text": "the movie was great .", "choices": ["great", "the film was terrible", "music"]},
    {"text": "boring plot and awful dialogue , bad film .", "choices": ["awful dialogue", "yes"]},
    {"text": "Paris is the capital of France", "choices": ["the capital of Italy and France"]},
]


def _prompts(family: str) -> dict[str, PromptConfig]:
    """Prompts of different templates, encoders, padding sides and answer kinds."""
    sent = {"pos": "great", "neg": "terrible"}
    masked = family in ("bert", "roberta")
    tail = " [P*2]" if masked else ""
    return {
        "lstm": PromptConfig(template="[P*3] {text} [P*2] [MASK]" + tail, verbalizer=sent),
        "mlp-left": PromptConfig(template="{text} Answer: [P*4] [MASK]" + tail, verbalizer=sent,
                                 encoder=EncoderConfig(type="mlp"), padding_side="left"),
        "multi-word": PromptConfig(template="Question : {text} [P] [MASK] .",
                                   verbalizer={"pos": ["great", "wonderful dialogue"], "neg": "awful plot"},
                                   encoder=EncoderConfig(type="none"), length_norm="mean"),
        "manual": PromptConfig(template="{text} is it good ? [MASK]", verbalizer={"pos": "yes", "neg": "no"},
                               normalize="vocab"),
        "choices": PromptConfig(template="{text} [P*2] Answer: [MASK] .", candidates_field="choices",
                                encoder=EncoderConfig(type="mlp")),
        **({"iterative": PromptConfig(template="[P*2] {text} [MASK] .", verbalizer={"pos": "wonderful dialogue",
                                                                                     "neg": "awful plot"},
                                      multi_token="iterative")} if masked else {}),
    }


def _bank(family: str):
    lm, tok = pair(family, hidden=64, init_range=0.2)
    bank = PromptBank(lm, tok)
    for seed, (name, cfg) in enumerate(_prompts(family).items()):
        bank.add(name, PTunedModel(lm, tok, cfg, seed=seed))
    return bank


def _rows(bank: PromptBank) -> list[tuple[str, dict]]:
    texts = [ex["text"] for ex in sentiment(6, seed=3)] + ["a wonderful story with brilliant acting and good music ."]
    rows = []
    for i in range(14):  # interleaved prompts, different lengths
        name = list(bank)[i % len(bank)]
        example = CHOICES[i % 3] if name == "choices" else {"text": texts[i % len(texts)]}
        rows.append((name, example))
    return rows


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_mixed_batch_equals_each_prompt_alone(family):
    bank = _bank(family)
    rows = _rows(bank)
    assert any(len(bank[n].answers.candidates[-1]) > 1 for n in bank if bank[n].answers), "multi-token words"
    mixed = bank.predict(rows, batch_size=len(rows))
    items = bank._items(rows)
    raw = bank.score(list(zip([n for n, _ in rows], items)))
    worst = 0.0
    for (name, example), got, scores, item in zip(rows, mixed, raw, items):
        model = bank[name]
        alone = model.predict([example])[0]
        with torch.no_grad():
            ref = model(model.collate([item])).scores[0]
        assert got["label"] == alone["label"]
        a = list(got["scores"].values()) if isinstance(got["scores"], dict) else got["scores"]
        b = list(alone["scores"].values()) if isinstance(alone["scores"], dict) else alone["scores"]
        assert len(a) == len(b)
        n = ref.shape[0]
        finite = torch.isfinite(ref)
        assert torch.equal(torch.isfinite(scores[:n]), finite)
        worst = max(worst, float((scores[:n][finite] - ref[finite]).abs().max()),
                    float((torch.tensor(a) - torch.tensor(b)).abs().max()))
    assert worst <= TOL, worst


def test_one_pass_serves_every_prompt():
    bank = _bank("gpt2")
    calls = []
    handle = bank.lm.register_forward_hook(lambda m, a, k, out: calls.append(True), with_kwargs=True)
    try:
        bank.predict(_rows(bank), batch_size=64)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_batch_size_splits_into_passes_with_the_same_answers():
    bank = _bank("bert")
    rows = _rows(bank)
    whole = bank.predict(rows, batch_size=64)
    split = bank.predict(rows, batch_size=3)
    for a, b in zip(whole, split):
        assert a["label"] == b["label"]
        va = list(a["scores"].values()) if isinstance(a["scores"], dict) else a["scores"]
        vb = list(b["scores"].values()) if isinstance(b["scores"], dict) else b["scores"]
        assert max(abs(x - y) for x, y in zip(va, vb)) <= TOL


def test_checkpoints_load_onto_the_bank_and_other_bases_are_refused(tmp_path):
    lm, tok = pair("gpt2", hidden=64, init_range=0.2)
    cfg = PromptConfig(template="[P*3] {text} [MASK]", verbalizer={"pos": "great", "neg": "terrible"})
    model = PTunedModel(lm, tok, cfg, seed=1)
    save_checkpoint(model, tmp_path / "mine")
    other_lm, _ = pair("gpt2", seed=7, hidden=64, init_range=0.2)
    save_checkpoint(PTunedModel(other_lm, tok, cfg, seed=1), tmp_path / "other")
    bank = PromptBank(lm, tok)
    loaded = bank.add("mine", tmp_path / "mine")
    assert loaded.lm is lm
    example = {"text": "the movie was great ."}
    assert bank.predict([("mine", example)])[0]["label"] == model.predict([example])[0]["label"]
    with pytest.raises(CheckpointError, match="another base model"):
        bank.add("other", tmp_path / "other")
    with pytest.raises(CheckpointError, match="another LM object"):
        bank.add("other", PTunedModel(other_lm, tok, cfg))
    with pytest.raises(ConfigError, match="unknown prompt 'nope'"):
        bank.predict([("nope", example)])
    assert list(bank) == ["mine"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generated_text_of_mixed_prompts_is_each_prompt_s_own(family):
    """Generation rows of several prompts (different templates, lengths, pseudo tokens) in
    one ``generate`` call write what each prompt writes alone, greedy token for token."""
    lm, tok = pair(family, init_range=0.2, dropout=0.0)
    bank = PromptBank(lm, tok)
    templates = {"front": "[P*3] {text} [MASK]", "around": "Q: [P] {text} [P*2] A:[P][MASK]", "manual": "{text} :[MASK]"}
    for seed, (name, template) in enumerate(templates.items()):
        bank.add(name, PTunedModel(lm, tok, PromptConfig(template=template, verbalizer={"a": "yes", "b": "no"}),
                                   seed=seed))
    texts = ["the movie was great .", "cat", "a wonderful story with brilliant acting and good music ."]
    rows = [(name, {"text": t}) for t in texts for name in templates]  # interleaved, every length per prompt
    mixed = bank.generate_text(rows, GenerateConfig(max_new_tokens=6), batch_size=5)  # batches of mixed prompts
    for name in templates:
        alone = bank[name].generate_text([{"text": t} for t in texts], max_new_tokens=6)
        got = [m for (n, _), m in zip(rows, mixed) if n == name]
        assert [g["ids"] for g in got] == [a["ids"] for a in alone], name
        assert [g["finish_reason"] for g in got] == [a["finish_reason"] for a in alone], name
    assert len({tuple(m["ids"]) for m in mixed}) > 1  # the prompts write different texts
    other = PTunedModel(*pair(family, init_range=0.2), PromptConfig(template="{text} [MASK]",
                                                                    verbalizer={"a": "yes", "b": "no"}))
    with pytest.raises(ConfigError, match="share one LM"):
        from ptune.generate import generate_text_rows

        generate_text_rows([(bank["front"], bank["front"].prepare([{"text": "x"}])[0]),
                            (other, other.prepare([{"text": "x"}])[0])])
