"""The paper's few-shot recipe (``--recipe paper``): each difference from ptune's own
choices on its own, against a reference computed the way the official code computed it,
and one end-to-end run on a FewGLUE slice."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import SHARED_DATA, pair
from ptune import ConfigError, PromptConfig
from ptune.batch import Item
from ptune.cli import build_parser
from ptune.cli_harness import _superglue_config
from ptune.optimization import make_scheduler
from ptune.options import CommandOptions
from ptune.tasks import recipe
from ptune.tasks import superglue as sg
from ptune.tasks.superglue_data import TASKS, read_task, split_path
from ptune.tasks.superglue_losses import RecipeModel, hinge_loss, token_mean_loss, with_pad_masks
from ptune.tiny import tiny_model, train_tokenizer

FEWGLUE = SHARED_DATA / "fewglue"
needs_data = pytest.mark.skipif(not (FEWGLUE / "RTE" / "train.jsonl").is_file(),
                                reason=f"FewGLUE not found at {FEWGLUE} (the shared data folder is absent)")
PAPER = sg.SuperGlueConfig(recipe="paper")
PTUNE = sg.SuperGlueConfig()


@pytest.fixture(scope="module")
def tok():
    corpus = []
    for task in TASKS:
        path = FEWGLUE / task / "train.jsonl"
        corpus += [line[:3000] for line in path.read_text().splitlines()] if path.is_file() else []
    return train_tokenizer("albert", corpus or ["a b c"], vocab_size=2000, extra_tokens=["Yes", "No", "Maybe"])


def _build(task, tok, config, **prompt):
    cfg = sg.SuperGlueConfig(**{**config.to_dict(), "tasks": (task,), "prompt": prompt})
    return sg.build_model(sg.SPECS[task], cfg, tiny_model("albert", tok, seed=0, positions=512), tok, "masked", 0, "t")


def _val(task, n=1):
    return read_task(task, split_path(FEWGLUE, task, "val")).examples[:n]


# ----------------------------------------------------------------------------- COPA
def test_hinge_loss_on_known_values():
    sums = torch.tensor([[-2.0, -6.0], [-9.0, -3.0]])  # summed token log-probs of choice 1, choice 2
    counts = torch.tensor([[2.0, 3.0], [3.0, 1.0]])
    labels = torch.tensor([0, 1])
    # CE(right) = (2 + 3) / (2 + 1) tokens; CE(wrong) = (6 + 9) / (3 + 3)
    assert hinge_loss(sums, counts, labels).item() == pytest.approx(1 + 5 / 3 - 15 / 6)
    assert hinge_loss(sums, counts, 1 - labels).item() == pytest.approx(1 + 15 / 6 - 5 / 3)
    assert hinge_loss(sums * 10, counts, labels).item() == 0.0  # right far better than wrong: no loss
    assert token_mean_loss(sums, counts, labels).item() == pytest.approx(5 / 3)


def _copa_items(model):
    data = [{"text": "the cat sat", "choices": ["on the big mat", "flew"], "label": 0},
            {"text": "it rained", "choices": ["wet", "the dog barked loudly"], "label": 1},
            {"text": "he ran", "choices": ["fast", "slow"], "label": 0}]
    return model.prepare(data)


def test_copa_hinge_with_longest_masks_matches_the_flattened_reference():
    """The official code: one input per example with the longer choice's masks; CE of each
    choice's tokens over the flattened batch (ignore -100), then the hinge."""
    lm, tok = pair("albert", seed=0)
    cfg = PromptConfig(template="{text} ? [P] because [MASK] .", candidates_field="choices")
    model = RecipeModel(lm, tok, cfg, seed=0, train_loss="hinge", train_masks="longest").train()
    items = _copa_items(model)
    batch = model.collate(items)
    longest = [max(len(c) for c in it.candidates) for it in items]
    rows = {int(b): (v.input_ids[r] == tok.mask_token_id).sum().item()
            for v in batch.views for r, b in enumerate(v.row_example)}
    assert [rows[b] for b in range(3)] == longest and len(set(longest)) > 1
    out = model(batch)
    logits, right, wrong = [], [], []
    for v in batch.views:  # the reference: the LM's logits at every mask, targets padded with -100
        lg = model.answer_logits(v)  # (R, L, V)
        for r, b in enumerate(v.row_example.tolist()):
            y = items[b].label
            logits.append(lg[r])
            right.append(v.targets[r, y])
            wrong.append(v.targets[r, 1 - y])
    flat = torch.cat(logits).float()
    ce_right = F.cross_entropy(flat, torch.cat(right), ignore_index=-100)
    ce_wrong = F.cross_entropy(flat, torch.cat(wrong), ignore_index=-100)
    torch.testing.assert_close(out.loss, torch.clamp(1 + ce_right - ce_wrong, min=0))
    model.eval()  # evaluation gives each choice its own number of masks
    assert {v.targets.shape[-1] for v in model.collate(items).views} == {len(c) for it in items for c in it.candidates}


def test_ce_with_longest_masks_and_errors():
    lm, tok = pair("albert", seed=0)
    cfg = PromptConfig(template="{text} ? [P] because [MASK] .", candidates_field="choices")
    model = RecipeModel(lm, tok, cfg, seed=0, train_masks="longest").train()
    items = _copa_items(model)
    out = model(model.collate(items))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.scores, torch.tensor([it.label for it in items])))
    gpt, gtok = pair("gpt2", seed=0)
    with pytest.raises(ConfigError, match="masked LM"):
        RecipeModel(gpt, gtok, PromptConfig(template="{text} because [MASK]", candidates_field="choices"),
                    train_masks="longest")
    with pytest.raises(ConfigError, match="per-example candidates"):
        RecipeModel(lm, tok, PromptConfig(template="{text} [MASK]", verbalizer={"a": "yes"}), train_loss="hinge")


def test_iterative_filling_fills_the_most_confident_mask_first():
    """PET's COPA evaluation on a crafted LM: pass 1 is surest of the second token, so it
    is written first; pass 2 reads the first token with the second one in place."""
    lm, tok = pair("albert", seed=0)
    cfg = PromptConfig(template="{text} [P] [MASK] .", candidates_field="choices", multi_token="iterative")
    model = RecipeModel(lm, tok, cfg, seed=0).eval()
    (item,) = model.prepare([{"text": "he ran", "choices": ["the movie was"], "label": 0}])
    a, b, c = item.candidates[0]
    seen = []

    def crafted(view, prompt):  # logits (R, L, V) that depend on what is already written
        ids = view.input_ids.gather(1, view.answer_positions)  # (R, L)
        seen.append(ids[0].tolist())
        out = torch.zeros(ids.shape + (model.lm.config.vocab_size,))
        out[:, 0, a] = 3.0 if ids[0, 1] == b else 1.0
        out[:, 1, b] = 5.0  # the surest
        out[:, 2, c] = 2.0 if ids[0, 1] == b and ids[0, 0] != a else 4.0
        return out

    model.answer_hidden = crafted
    model._runner.logits = lambda h: h
    with torch.no_grad():
        score = model(model.collate([item])).scores[0, 0].item()
    m = tok.mask_token_id
    assert seen == [[m, m, m], [m, b, m], [a, b, m]]  # b first, then a (3 > 2), then c
    logp = lambda logits, t: torch.tensor(logits).log_softmax(-1)[t].item()  # noqa: E731
    v = model.lm.config.vocab_size
    row = lambda hot: [hot.get(i, 0.0) for i in range(v)]  # noqa: E731
    want = logp(row({b: 5.0}), b) + logp(row({a: 3.0}), a) + logp(row({c: 4.0}), c)
    assert score == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- WSC
def test_wsc_pad_masks_in_training_and_one_extra_at_evaluation():
    lm, tok = pair("albert", seed=0)
    cfg = PromptConfig(template="{text} [P] refers to [MASK] .", candidates_field="choices", label_field="target",
                       normalize="vocab")
    model = RecipeModel(lm, tok, cfg, seed=0, train_loss="token_mean", eval_extra_masks=1, ban_special=False)
    data = [{"text": f"example {i}", "choices": ["the dog"], "target": 0} for i in range(8)]
    items = model.prepare(data)
    padded = with_pad_masks(items, model.pad_id)
    rng = random.Random(42)  # PET's pattern draws the counts with its own Random(42), in order
    extra = [rng.randint(0, 3) for _ in items]
    assert [len(p.candidates[0]) - len(it.candidates[0]) for p, it in zip(padded, items)] == extra
    assert all(p.candidates[0][len(it.candidates[0]):] == (model.pad_id,) * e
               for p, it, e in zip(padded, items, extra))
    model.train()
    batch = model.collate(padded)
    masks = sorted((v.input_ids == tok.mask_token_id).sum(1).tolist()[r] for v in batch.views
                   for r in range(len(v.row_example)))
    assert masks == sorted(len(p.candidates[0]) for p in padded)
    out = model(batch)  # the LM loss over every target token, padding included
    logits = torch.cat([model.answer_logits(v).flatten(0, 1) for v in batch.views]).float()
    targets = torch.cat([v.targets[:, 0].flatten() for v in batch.views])
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, targets))
    with torch.no_grad():  # padding is by far the likeliest token: it may fill every mask
        lm.get_output_embeddings().bias[model.pad_id] += 1e3
    gen = model.generate(items[:2], [2, 2])
    assert [g["ids"] for g in gen] == [[model.pad_id] * 3] * 2 and [g["text"] for g in gen] == ["", ""]


# ----------------------------------------------------------------------------- the recipe's values
def _factor(config, step):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, config, config.steps, 2)
    for _ in range(step):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]


def test_warmup_and_selection_per_task():
    rte = sg._train_config(sg.SPECS["RTE"], PAPER, seed=1, n_train=32)
    assert (rte.warmup_steps, rte.steps, rte.ties, rte.select_all) == (150, 3500, "later", ())
    assert [round(_factor(rte, s), 4) for s in (0, 75, 150, 1825, 3500)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    cb = sg._train_config(sg.SPECS["CB"], PAPER, seed=1, n_train=32)
    assert (cb.warmup_steps, cb.ties, cb.select_all) == (0, "later", ("accuracy", "f1"))
    assert sg._train_config(sg.SPECS["MultiRC"], PAPER, seed=1, n_train=32).select_all == ("accuracy", "f1a")
    mine = sg._train_config(sg.SPECS["RTE"], PTUNE, seed=1, n_train=32)
    assert (mine.warmup_steps, mine.ties, mine.select_all) == (0, "loss", ())
    given = sg.SuperGlueConfig(recipe="paper", selection="ptune", train={"warmup_steps": 10})
    tc = sg._train_config(sg.SPECS["RTE"], given, seed=1, n_train=32)
    assert (tc.warmup_steps, tc.ties) == (10, "loss")  # explicit options win over the recipe


def test_cli_recipe_flags():
    parser = build_parser()
    args = parser.parse_args(["superglue", "--task", "copa", "--model", "m", "--data-dir", "d", "--output", "o",
                              "--recipe", "paper", "--copa-loss", "ce", "--warmup-steps", "5"])
    opts: CommandOptions = args._options
    cfg = _superglue_config(opts.resolve(args))
    assert (cfg.recipe, recipe.chosen(cfg, "copa_loss"), recipe.chosen(cfg, "copa_masks")) == ("paper", "ce", "longest")
    assert cfg.train == {"warmup_steps": 5}
    with pytest.raises(ConfigError, match="copa_loss"):
        sg.SuperGlueConfig(copa_loss="square")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="recipe"):
        sg.SuperGlueConfig(recipe="pet")  # type: ignore[arg-type]


@needs_data
def test_prompt_token_types_and_encoder_sizes(tok):
    paper, mine = _build("CB", tok, PAPER), _build("CB", tok, PTUNE)
    items = paper.prepare(_val("CB"))
    assert set(paper.collate(items).views[0].token_type_ids.flatten().tolist()) == {0}
    assert set(mine.collate(mine.prepare(_val("CB"))).views[0].token_type_ids.flatten().tolist()) == {0, 1}
    e = paper.lm.get_input_embeddings().embedding_dim  # ALBERT's factorised embedding size
    shapes = {k: tuple(v.shape) for k, v in paper.encoder.state_dict().items()}
    assert shapes["lstm.weight_hh_l0"] == (4 * e, e) and shapes["mlp.0.weight"] == (e, 2 * e)
    assert shapes["mlp.2.weight"] == (e, e)
    assert mine.encoder.lstm.hidden_size == e // 2
    mlp = _build("CB", tok, PAPER, encoder={"type": "mlp"})  # another encoder asked for: kept as asked
    assert mlp.encoder.lstm is None and mlp.config.encoder.lstm_hidden is None
    assert (paper.config.truncation, mine.config.truncation) == ("last_first", "longest_first")
    copa = _build("COPA", tok, PAPER)
    assert isinstance(copa, RecipeModel) and copa.config.multi_token == "iterative"
    assert (copa.train_loss, copa.train_masks) == ("hinge", "longest")
    assert copa.config.max_length == sg.SPECS["COPA"].max_length - 2  # [CLS] and [SEP] taken off again


@needs_data
def test_truncation_order_cuts_the_last_shortenable_field_first(tok):
    ex = dict(_val("BoolQ")[0])
    ex["question"] = " ".join(["is the answer in the passage"] * 3) + " ?"
    lengths = {}
    for name, config in (("paper", PAPER), ("ptune", PTUNE)):
        model = _build("BoolQ", tok, config, max_length=120)
        item = model.prepare([ex])[0]
        enc = model.compiled.encode(item.fields)
        assert len(enc.input_ids) <= 120
        lengths[name] = len(item.fields["question"]), enc.input_ids
    q_len, paper_ids = lengths["paper"]
    question = _build("BoolQ", tok, PTUNE).prepare([ex])[0].fields["question"]
    assert q_len == len(question) > 15
    # paper: the question is cut (to nothing here) before the passage; ptune: the passage
    assert not _contains(paper_ids, question[:5]) and _contains(lengths["ptune"][1], question)
    cb = dict(_val("CB")[0])
    cb["hypothesis"] = " ".join(["the man said that it was so"] * 6)
    model = _build("CB", tok, PAPER, max_length=60)  # CB's hypothesis is never cut: the premise is
    item = model.prepare([cb])[0]
    assert _contains(model.compiled.encode(item.fields).input_ids, item.fields["hypothesis"])


def _contains(ids, part):
    return any(ids[i : i + len(part)] == list(part) for i in range(len(ids) - len(part) + 1))


@needs_data
def test_wic_marking(tok):
    ex = _val("WiC")[0]
    paper, mine = _build("WiC", tok, PAPER), _build("WiC", tok, PTUNE)
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    for model, marking in ((paper, ids(" *") + ids(ex["word"]) + ids(" *?")),
                           (mine, ids(" *") + ids(ex["word"]) + ids("* ?"))):
        enc = model.compiled.encode(model.prepare([ex])[0].fields)
        p = enc.pseudo_index.index(0)
        assert enc.input_ids[p + 1 : enc.answer_positions[0]] == marking
    assert "*{word} *?" in paper.template.text and "*{word}* ?" in mine.template.text


# ----------------------------------------------------------------------------- end to end
@needs_data
def test_paper_recipe_end_to_end(tok, tmp_path):
    """``recipe="paper"`` on a FewGLUE slice (8 train, 4 dev32, 4 val per task)."""
    data = tmp_path / "fewglue"
    for task in ("COPA", "WSC", "CB", "RTE"):
        (data / task).mkdir(parents=True)
        for split, n in (("train", 8), ("dev32", 4), ("val", 4)):
            lines = (FEWGLUE / task / f"{split}.jsonl").read_text().splitlines()[:n]
            (data / task / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    load = lambda: (tiny_model("albert", tok, seed=0, positions=512), tok, "masked")  # noqa: E731
    cfg = sg.SuperGlueConfig(tasks=("COPA", "WSC", "CB", "RTE"), recipe="paper", seeds=(1,),
                             train={"steps": 2, "eval_every": 1, "batch_size": 4})
    res = sg.run_superglue("tiny", data, tmp_path / "out", cfg, loader=load)
    assert res["settings"]["recipe"] == "paper"
    assert "the paper's recipe" in (tmp_path / "out" / "results.md").read_text().splitlines()[0]
    for task, entry in res["tasks"].items():
        run = entry["runs"]["1"]
        assert run["trained"] and run["steps"] == 2 and 0 <= entry["val"]["score"]["mean"] <= 1
        tc = run["train_config"]
        assert tc["ties"] == "later" and tc["warmup_steps"] == (150 if task == "RTE" else 0)
        assert list(tc["select_all"]) == (["accuracy", "f1"] if task == "CB" else [])
    assert run["train_examples"] == 8  # RTE; WSC keeps its True examples
    preds = [json.loads(x) for x in (tmp_path / "out" / "predictions" / "WSC.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and {p["label"] for p in preds} <= {True, False}  # as SuperGLUE's files spell them
    shutil.rmtree(tmp_path / "out")


def test_paper_examples_lowercase_copa_choices_and_cut_all_final_punctuation():
    copa = {"premise": "My friend left.", "choice1": "I waved goodbye.", "choice2": "He cried!",
            "choice1_stem": "I waved goodbye", "choice2_stem": "he cried", "choices": ["I waved goodbye", "he cried"]}
    (got,) = recipe.paper_examples("COPA", PAPER, [copa])
    assert got["choices"] == ["i waved goodbye", "he cried"] and got["premise_stem"] == "My friend left"
    assert recipe.paper_examples("COPA", PTUNE, [copa]) == [copa]
    rte = {"hypothesis": 'He said "no."', "hypothesis_stem": 'He said "no."'}
    assert recipe.paper_examples("RTE", PAPER, [rte])[0]["hypothesis_stem"] == 'He said "no'


def test_causal_lms_keep_their_patterns_and_read_each_choice_as_a_continuation():
    lm, tok = pair("gpt2", seed=0)
    cb = sg.build_model(sg.SPECS["CB"], PAPER, lm, tok, "causal", 0, "t")
    assert cb.template.text == sg.SPECS["CB"].patterns["p2"]  # the paper's CB pattern holds a [SEP]
    copa = sg.build_model(sg.SPECS["COPA"], PAPER, lm, tok, "causal", 0, "t")
    assert isinstance(copa, RecipeModel) and (copa.train_loss, copa.train_masks) == ("hinge", "per_candidate")
    with pytest.raises(ConfigError, match="masked LM"):  # asked for explicitly: refused
        sg.build_model(sg.SPECS["COPA"], sg.SuperGlueConfig(recipe="paper", copa_masks="longest"), lm, tok,
                       "causal", 0, "t")
