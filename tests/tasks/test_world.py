"""The synthetic knowledge world: LAMA files, corpus, tokenizers, pretrained LMs, determinism."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import mini_world_config, stale_world
from ptune.errors import ConfigError
from ptune.world import RELATIONS, SPLITS, WorldConfig, build_world, corpus, memorized

MINI = mini_world_config()  # the session's mini world (tests/conftest.py)
FACT_KEYS = {"sub_label", "obj_label", "predicate_id", "sub_uri", "obj_uri"}


@pytest.fixture
def world(mini_world: Path) -> Path:
    """The session's mini world (tests/conftest.py)."""
    return mini_world


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _facts(world: Path) -> dict[str, dict[str, list[dict]]]:
    root = world / "lama" / "fact-retrieval"
    return {rel: {s: _jsonl(root / rel / f"{s}.jsonl") for s in SPLITS} for rel in MINI.relations}


def _manual_pattern(template: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in template.split("[X]")]
    text = r"(.+)".join(parts)
    return re.compile(text.replace(re.escape("[Y]"), r"(\S+)"))


def test_files_and_formats(world: Path) -> None:
    rels = _jsonl(world / "lama" / "relations.jsonl")
    assert [r["relation"] for r in rels] == list(MINI.relations)
    for r in rels:
        assert set(r) == {"relation", "template", "label", "type", "description", "train_templates", "manual_templates"}
        assert r["template"] == RELATIONS[r["relation"]].template and len(r["train_templates"]) == 4
        assert r["manual_templates"] == [r["template"], *RELATIONS[r["relation"]].paraphrases]
    vocab = (world / "lama" / "common_vocab_cased.txt").read_text().split()
    for rel, splits in _facts(world).items():
        for split, facts in splits.items():
            assert facts, (rel, split)
            for f in facts:
                assert set(f) == FACT_KEYS | ({"uuid"} if split == "test" else set())
                assert f["predicate_id"] == rel and f["obj_label"] in vocab
    meta = json.loads((world / "world.json").read_text())
    assert WorldConfig.from_dict(meta["config"]) == MINI
    assert set(meta["timings"]) >= {"world", "tokenizer", "gpt", "bert", "memorization"}
    assert meta["counts"]["corpus"]["tokens"] > 0 and set(meta["memorized"]) == {"gpt", "bert"}
    for k in ("gpt", "bert"):
        assert set(meta["memorized"][k]["oracle"]) == set(MINI.relations)


def test_splits_are_disjoint_and_one_object_per_subject(world: Path) -> None:
    for rel, splits in _facts(world).items():
        subs = [{f["sub_label"] for f in splits[s]} for s in SPLITS]
        assert not (subs[0] & subs[1] or subs[0] & subs[2] or subs[1] & subs[2]), rel
        assert sum(map(len, subs)) == sum(len(splits[s]) for s in SPLITS)  # functional: no repeats


def test_every_fact_is_stated_in_the_corpus(world: Path) -> None:
    lines = set(corpus(MINI))
    for rel, splits in _facts(world).items():
        wordings = RELATIONS[rel].train_templates
        for facts in splits.values():
            for f in facts:
                stated = [w.replace("[X]", f["sub_label"]).replace("[Y]", f["obj_label"]) in lines for w in wordings]
                assert any(stated), (rel, f)


@pytest.mark.parametrize("config", [MINI, WorldConfig.tiny()], ids=["mini", "tiny"])
def test_manual_wording_never_appears_in_the_corpus(config: WorldConfig) -> None:
    lines = list(corpus(config))
    for rel in RELATIONS.values():
        for template in rel.manual_templates:  # LAMA's and the four paraphrases
            pattern = _manual_pattern(template)
            assert not [line for line in lines if pattern.fullmatch(line)], (rel.id, template)
    # the manual keywords themselves are trained (they occur in filler)
    words = {w for line in lines for w in line.split()}
    assert {"born", "died", "citizen", "plays", "located", "capital", "founded", "headquarter"} <= words


def test_training_wordings_end_with_the_object() -> None:
    for rel in RELATIONS.values():
        assert len(rel.train_templates) == 4 and rel.template not in rel.train_templates
        assert len(set(rel.manual_templates)) == 5 and not set(rel.manual_templates) & set(rel.train_templates)
        for w in rel.manual_templates:  # a causal LM reads every wording: the subject comes first
            assert w.count("[X]") == 1 and w.index("[X]") < w.index("[Y]"), w
        for w in rel.train_templates:
            assert w.endswith(" [Y] .") and w.count("[X]") == 1 and w.index("[X]") < w.index("[Y]"), w


def test_objects_are_single_tokens(world: Path) -> None:
    from transformers import AutoTokenizer

    vocab = (world / "lama" / "common_vocab_cased.txt").read_text().split()
    gpt = AutoTokenizer.from_pretrained(world / "gpt")
    bert = AutoTokenizer.from_pretrained(world / "bert")
    assert gpt.get_vocab() == bert.get_vocab()
    for tok in (gpt, bert):
        for obj in vocab:
            ids = tok(" " + obj, add_special_tokens=False)["input_ids"]
            assert ids == [tok.convert_tokens_to_ids(obj)] and tok.decode(ids) == obj


def test_models_and_tokenizers_load_with_auto_classes(world: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    gpt_tok = AutoTokenizer.from_pretrained(world / "gpt")
    gpt = AutoModelForCausalLM.from_pretrained(world / "gpt")
    enc = gpt_tok(["Dana plays", "a b c"], return_tensors="pt", padding=True)
    assert enc["input_ids"][0, 0].item() == gpt.config.bos_token_id == gpt_tok.convert_tokens_to_ids("<eos>")
    assert gpt_tok.pad_token == "[PAD]" and gpt.config.pad_token_id == gpt_tok.pad_token_id
    assert gpt(**enc).logits.shape[-1] == len(gpt_tok)
    bert_tok = AutoTokenizer.from_pretrained(world / "bert")
    bert = AutoModelForMaskedLM.from_pretrained(world / "bert")
    enc = bert_tok(["Dana plays [MASK] ."], ["second part"], return_tensors="pt")
    tokens = bert_tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2 and "[MASK]" in tokens
    assert enc["token_type_ids"][0, -1].item() == 1 and bert_tok.mask_token == "[MASK]"
    assert bert(**enc).logits.shape[-1] == len(bert_tok)


def test_memorized_scores_each_relation(world: Path) -> None:
    meta = json.loads((world / "world.json").read_text())["memorized"]
    for which in ("gpt", "bert"):
        for wording, key in (("best", "oracle"), ("manual", "manual")):
            scores = memorized(world, which, "test", wording=wording)
            assert set(scores) == set(MINI.relations) and all(0 <= v <= 1 for v in scores.values())
            assert scores == meta[which][key]  # the build's metadata comes from the same scorer
    with pytest.raises(ConfigError):
        memorized(world, "t5")  # type: ignore[arg-type]


def test_gpt_memorizes_the_facts(tmp_path: Path) -> None:
    """A little longer pretraining: the oracle wording recovers facts far above the majority class."""
    cfg = replace(MINI, models=("gpt",), reps=40, gpt_epochs=3, hidden=64, heads=4, gpt_lr=5e-3)
    meta = build_world(tmp_path / "w", cfg)["memorized"]["gpt"]
    assert meta["oracle_mean"] > meta["majority_mean"] + 0.2
    assert memorized(tmp_path / "w", "gpt") == meta["oracle"]
    assert memorized(tmp_path / "w", "gpt", wording="manual") == meta["manual"]


def test_build_is_deterministic(world: Path, tmp_path: Path) -> None:
    assert list(corpus(MINI)) == list(corpus(replace(MINI, gpt_epochs=1)))
    assert list(corpus(MINI)) != list(corpus(replace(MINI, seed=1)))
    again = tmp_path / "again"
    build_world(again, replace(MINI, models=("gpt",)))
    assert _facts(again) == _facts(world)
    vocab = "lama/common_vocab_cased.txt"
    assert (again / vocab).read_text() == (world / vocab).read_text()
    assert (again / "gpt" / "tokenizer.json").read_text() == (world / "gpt" / "tokenizer.json").read_text()
    from safetensors.torch import load_file

    first, second = (load_file(w / "gpt" / "model.safetensors") for w in (world, again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert not (again / "bert").exists()


def test_existing_folder_is_not_overwritten(world: Path, tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        build_world(world, MINI)
    assert not list(world.parent.glob(".mini.tmp-*"))
    (tmp_path / "empty").mkdir()  # an empty folder is fine; models=() writes only the LAMA files
    meta = build_world(tmp_path / "empty", replace(MINI, models=()))
    assert (tmp_path / "empty" / "lama" / "relations.jsonl").is_file() and not (tmp_path / "empty" / "gpt").exists()
    assert meta["memorized"] == {} and list(tmp_path.iterdir()) == [tmp_path / "empty"]


@pytest.mark.parametrize("change, field", [
    (dict(relations=("P19", "P999")), "relations"),
    (dict(models=("t5",)), "models"),
    (dict(countries=10, city_objects=6), "city_objects"),  # P36 needs a capital per country
    (dict(instruments=0), "instruments"),
    (dict(heads=3), "heads"),
    (dict(split=(8, 4)), "split"),
    (dict(object_mask=1.5), "object_mask"),
])
def test_config_errors_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        replace(MINI, **change)
    assert err.value.field == field


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="did you mean 'reps'"):
        WorldConfig.from_dict({**MINI.to_dict(), "rep": 3})


def test_pack_keeps_sentences_whole_and_marks_object_slots() -> None:
    from ptune.world.pretrain import _pack

    period, obj, pad = 9, 50, 0
    sentences = [[11, 12, obj, period], [13, 14, 15, period], [16, obj, period]]
    ids, slots = _pack(sentences, block=8, start=2, end=3, pad=pad, objects={obj}, period=period)  # BERT
    assert ids.tolist() == [[2, 11, 12, obj, period, 3, pad, pad], [2, 13, 14, 15, period, 3, pad, pad],
                            [2, 16, obj, period, 3, pad, pad, pad]]
    assert slots.nonzero().tolist() == [[0, 3], [2, 2]]
    ids, slots = _pack(sentences, block=16, start=5, end=None, pad=pad, objects={obj}, period=period)  # GPT
    assert ids.tolist() == [[5, 11, 12, obj, period, 5, 13, 14, 15, period, 5, 16, obj, period, pad, pad]]
    assert slots.nonzero().tolist() == [[0, 3], [0, 12]]


# ----------------------------------------------------------------------------- the shipped world
def _copy_shipped(tmp_path: Path) -> Path:
    import shutil

    from ptune.world import shipped_world_dir

    return Path(shutil.copytree(shipped_world_dir(), tmp_path / "shipped"))


def _flip_a_byte(path: Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_shipped_world_matches_its_manifest() -> None:
    from ptune.world import SHIPPED_SEED, read_manifest, shipped_world_dir, verify_manifest

    root = verify_manifest(shipped_world_dir())
    files = read_manifest(root)
    assert {"world.json", "gpt/model.safetensors", "bert/model.safetensors", "lama/relations.jsonl"} <= set(files)
    assert len(files) == 48 and all(len(v["sha256"]) == 64 and v["size"] > 0 for v in files.values())
    meta = json.loads((root / "world.json").read_text())
    assert WorldConfig.from_dict(meta["config"]) == replace(WorldConfig.tiny(), seed=SHIPPED_SEED)
    assert meta["memorized"]["gpt"]["oracle_mean"] >= 0.9


def test_manifest_catches_a_tampered_or_missing_file(tmp_path: Path) -> None:
    from ptune.errors import DataError
    from ptune.world import MANIFEST, verify_manifest, write_manifest

    world = _copy_shipped(tmp_path)
    _flip_a_byte(world / "gpt" / "model.safetensors")
    with pytest.raises(DataError) as err:
        verify_manifest(world)
    msg = str(err.value)
    assert str(world / "gpt" / "model.safetensors") in msg and "sha256" in msg and "ptune world build" in msg
    assert "\n" not in msg
    (world / "lama" / "relations.jsonl").unlink()
    write_manifest(world)  # the manifest now describes the edited folder
    assert verify_manifest(world) == world
    (world / "bert" / "config.json").unlink()
    with pytest.raises(DataError, match=r"bert/config\.json: missing from the world"):
        verify_manifest(world)
    (world / MANIFEST).write_text("{}")
    with pytest.raises(DataError, match="not a world manifest"):
        verify_manifest(world)
    (world / MANIFEST).unlink()
    with pytest.raises(DataError, match="MANIFEST.json: no such file"):
        verify_manifest(world)


def test_compare_with_shipped_ignores_only_the_build_machine_record(tmp_path: Path) -> None:
    from ptune.world import compare_with_shipped

    world = _copy_shipped(tmp_path)
    assert compare_with_shipped(world) == []
    meta = json.loads((world / "world.json").read_text())
    meta["timings"] = {"gpt": 1.0}
    meta["versions"]["torch"] = "0.0"
    (world / "world.json").write_text(json.dumps(meta))
    assert compare_with_shipped(world) == []  # timings and versions describe the machine, not the world
    meta["memorized"]["gpt"]["oracle_mean"] = 0.5
    (world / "world.json").write_text(json.dumps(meta))
    _flip_a_byte(world / "bert" / "model.safetensors")
    (world / "lama" / "common_vocab_cased.txt").unlink()
    (world / "notes.txt").write_text("x")
    assert compare_with_shipped(world) == [
        "bert/model.safetensors (sha256 differs)", "lama/common_vocab_cased.txt (missing)",
        "notes.txt (not in the shipped world)", "world.json (config, counts or memorization differ)"]


def test_compare_with_shipped_on_another_world(world: Path) -> None:
    from ptune.world import compare_with_shipped

    diffs = compare_with_shipped(world)  # the mini world: fewer relations, other models
    assert "gpt/model.safetensors (sha256 differs)" in diffs and "world.json (config, counts or memorization differ)" in diffs
    assert "lama/fact-retrieval/P20/test.jsonl (missing)" in diffs


def test_the_corpus_file_is_the_pretraining_corpus_and_a_different_one_is_refused(mini_world, tmp_path):
    from ptune.errors import DataError
    from ptune.world import WorldConfig, corpus, corpus_key, write_corpus

    meta = json.loads((mini_world / "world.json").read_text())
    path = write_corpus(mini_world, tmp_path / "corpus.txt")
    assert path.read_text().splitlines() == list(corpus(WorldConfig.from_dict(meta["config"])))
    other = tmp_path / "other"
    shutil.copytree(mini_world / "gpt", other / "gpt")
    meta["counts"]["corpus"]["tokens"] += 1  # a world pretrained on another corpus than this ptune generates
    (other / "world.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="the corpus generated here has .* sentences and .* tokens"):
        write_corpus(other, tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists() and corpus_key(other) == corpus_key(mini_world)


# ----------------------------------------------------------------------------- worlds of an older ptune
def test_a_world_without_wordings_gets_exactly_the_fresh_builds_file(world: Path, tmp_path: Path) -> None:
    from ptune.world import MANIFEST, refresh_wordings, verify_manifest, write_manifest

    fresh = (world / "lama" / "relations.jsonl").read_bytes()
    old = stale_world(world, tmp_path / "old", keep=2)
    write_manifest(old)  # a world folder with a manifest keeps it true
    stale = (old / "lama" / "relations.jsonl").read_bytes()
    assert refresh_wordings(old, write=False) and (old / "lama" / "relations.jsonl").read_bytes() == stale
    assert refresh_wordings(old) and (old / "lama" / "relations.jsonl").read_bytes() == fresh
    assert verify_manifest(old) == old and json.loads((old / MANIFEST).read_text())["files"][
        "lama/relations.jsonl"]["size"] == len(fresh)
    assert not refresh_wordings(old) and not refresh_wordings(world)  # nothing missing: nothing written


def test_a_world_that_differs_in_more_than_the_wordings_is_refused(world: Path, tmp_path: Path) -> None:
    from ptune.errors import DataError
    from ptune.world import refresh_wordings

    edited = stale_world(world, tmp_path / "edited", edit=True)
    before = (edited / "lama" / "relations.jsonl").read_bytes()
    with pytest.raises(DataError, match=r"relations.jsonl: has no manual_templates .* for 5 of its 5 relations, and "
                                        r"differs .* cannot be added exactly; rebuild it"):
        refresh_wordings(edited, fix="rebuild it")
    assert (edited / "lama" / "relations.jsonl").read_bytes() == before
    unknown = stale_world(world, tmp_path / "unknown")
    (unknown / "world.json").write_text("{}")
    with pytest.raises(DataError, match=r"records no world config"):
        refresh_wordings(unknown)
