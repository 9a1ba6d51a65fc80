"""``build_world``: the whole world folder, written atomically, with ``world.json``; the
world shipped with the package and its sha256 manifest (:func:`write_manifest`,
:func:`verify_manifest`, :func:`compare_with_shipped`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..files import atomic_dir, read_json, sha256_file, write_json_atomic, write_text_atomic
from .facts import _make_world, _World, _write_lama, corpus
from .pretrain import _best, _masked, _models, _pack, _pretrain, _probe, _tokenizers
from .spec import _SPECIALS, RELATIONS, WorldConfig


logger = logging.getLogger("ptune.world")


def _default_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))  # more threads oversubscribe a shared 2-core machine


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("ptune", "torch", "transformers", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def build_world(output_dir: str | os.PathLike[str], config: WorldConfig | None = None, *, progress: bool = False,
                overwrite: bool = False) -> dict[str, Any]:
    """Generate a world, write its LAMA files, pretrain its LMs and check what they memorized.

    The folder is written atomically (:func:`ptune.files.atomic_dir`).

    Args:
        output_dir: the world folder to create.
        config: the world; default :meth:`WorldConfig.tiny`.
        progress: show tqdm bars during pretraining.
        overwrite: replace an existing ``output_dir``.

    Returns:
        The metadata also written to ``world.json``: config, counts, timings (s), memorization
        (P@1 on test with the best training wording and with the manual template) and versions.

    Raises:
        FileExistsError: ``output_dir`` exists, is not empty and ``overwrite`` is false.
    """
    import torch

    cfg = config or WorldConfig.tiny()
    out = Path(output_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")
    old_threads = torch.get_num_threads()
    threads = cfg.threads or _default_threads()
    torch.set_num_threads(threads)
    try:
        with atomic_dir(out) as tmp:
            return _build(tmp, cfg, threads, progress)
    finally:
        torch.set_num_threads(old_threads)


def _build(tmp: Path, cfg: WorldConfig, threads: int, progress: bool) -> dict[str, Any]:
    """Write the world into the empty folder ``tmp``; return its metadata."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    world = _make_world(cfg)
    lines = list(corpus(cfg))
    facts = _write_lama(tmp / "lama", cfg, world)
    timings["world"] = time.perf_counter() - t
    t = time.perf_counter()
    toks = dict(zip(("gpt", "bert"), _tokenizers(cfg, lines, world.objects)))
    timings["tokenizer"] = time.perf_counter() - t
    special = {s: toks["gpt"].convert_tokens_to_ids(s) for s in _SPECIALS}
    vocab = len(toks["gpt"])
    sentences = toks["gpt"](lines, add_special_tokens=False)["input_ids"]
    obj_ids = set(toks["gpt"].convert_tokens_to_ids(world.objects))
    period = toks["gpt"].convert_tokens_to_ids(".")
    models = _models(cfg, vocab, special)
    meta: dict[str, Any] = {"config": cfg.to_dict(), "seed": cfg.seed, "threads": threads, "counts": {
        "facts": facts, "objects": len(world.objects), "vocab_size": vocab,
        "entities": {k: len(v) for k, v in world.entities.items()},
        "corpus": {"sentences": len(lines), "tokens": sum(map(len, sentences))}}, "pretraining": {}}
    logger.info("world: %d facts, %d sentences, %d tokens, vocabulary %d", sum(c["all"] for c in facts.values()),
                len(lines), meta["counts"]["corpus"]["tokens"], vocab)
    for name, model in models.items():
        t = time.perf_counter()
        start, end = (special["[CLS]"], special["[SEP]"]) if _masked(model) else (special["<eos>"], None)
        blocks, slots = _pack(sentences, cfg.block, start, end, special["[PAD]"], obj_ids, period)
        meta["pretraining"][name] = _pretrain(model, blocks, slots, cfg, name, special, vocab, progress)
        meta["pretraining"][name]["parameters"] = sum(p.numel() for p in model.parameters())
        model.save_pretrained(tmp / name)
        toks[name].save_pretrained(tmp / name)
        timings[name] = time.perf_counter() - t
        logger.info("%s pretrained in %.1f s", name, timings[name])
    t = time.perf_counter()
    meta["memorized"] = {name: _summary(tmp, name, world, cfg) for name in models}
    timings["memorization"] = time.perf_counter() - t
    meta["timings"] = {k: round(v, 2) for k, v in timings.items()}
    meta["versions"] = _versions()
    (tmp / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return meta


def _summary(world_dir: Path, which: str, world: _World, cfg: WorldConfig) -> dict[str, Any]:
    """Oracle (best training wording on dev), manual and majority P@1 on test, per relation and mean."""
    scores = _probe(world_dir, which, ("dev", "test"))
    res: dict[str, Any] = {"oracle": {}, "manual": {}, "majority": {}, "best_wording": {}}
    for rel, s in scores.items():
        best = _best(s)
        train = [world.facts[rel][i][1] for i in world.splits[rel]["train"]]
        top = max(set(train), key=lambda o: (train.count(o), o)) if train else None
        test = [world.facts[rel][i][1] for i in world.splits[rel]["test"]]
        res["oracle"][rel], res["manual"][rel] = round(s["test"][best], 4), round(s["test"][-1], 4)
        res["majority"][rel] = round(sum(o == top for o in test) / max(1, len(test)), 4)
        res["best_wording"][rel] = RELATIONS[rel].train_templates[best]
    for key in ("oracle", "manual", "majority"):
        res[f"{key}_mean"] = round(sum(res[key].values()) / len(res[key]), 4)
    logger.info("%s memorized: oracle %.3f, manual %.3f, majority %.3f", which, res["oracle_mean"],
                res["manual_mean"], res["majority_mean"])
    return res


# ----------------------------------------------------------------------------- the shipped world
MANIFEST = "MANIFEST.json"
SHIPPED_SEED = 0  # the shipped world is WorldConfig.tiny() with this seed
ENVIRONMENT_KEYS = ("timings", "versions", "threads")  # world.json's record of the machine, not of the world
REBUILD_HINT = "ptune world build --output DIR --check, then pass --world DIR"


def shipped_world_dir() -> Path:
    """The folder of the world shipped with the package (``WorldConfig.tiny()``, seed 0)."""
    return Path(__file__).resolve().parent / "data" / f"tiny-seed{SHIPPED_SEED}"


def _world_files(world_dir: Path) -> list[str]:
    """The world's files as sorted POSIX paths relative to ``world_dir`` (the manifest excluded)."""
    return sorted(p.relative_to(world_dir).as_posix() for p in world_dir.rglob("*")
                  if p.is_file() and p.name != MANIFEST)


def write_manifest(world_dir: str | os.PathLike[str]) -> Path:
    """Write ``MANIFEST.json`` into ``world_dir``: the sha256 and size of every file."""
    root = Path(world_dir)
    files = {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size} for rel in _world_files(root)}
    return write_json_atomic(root / MANIFEST, {"files": files})


def read_manifest(world_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` from ``world_dir/MANIFEST.json``.

    Raises:
        DataError: the manifest is missing or not a manifest.
    """
    path = Path(world_dir) / MANIFEST
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        raise DataError(str(path), f"no such file (the world's manifest); rebuild the world: {REBUILD_HINT}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(str(path), f"not a world manifest ({e}); reinstall ptune or rebuild: {REBUILD_HINT}") from None
    if not isinstance(files, dict) or not all(isinstance(v, dict) and {"sha256", "size"} <= set(v)
                                              for v in files.values()):
        raise DataError(str(path), f"not a world manifest; reinstall ptune or rebuild: {REBUILD_HINT}")
    return files


def verify_manifest(world_dir: str | os.PathLike[str]) -> Path:
    """Check every file of ``world_dir`` against its ``MANIFEST.json`` (size and sha256).

    Returns:
        ``world_dir`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: naming the first file that is missing or differs, and how to rebuild the world.
    """
    root = Path(world_dir)
    for rel, want in read_manifest(root).items():
        path = root / rel
        if not path.is_file():
            raise DataError(str(path), f"missing from the world (listed in {MANIFEST}); reinstall ptune or "
                                       f"rebuild the world: {REBUILD_HINT}")
        if path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
            raise DataError(str(path), f"differs from the sha256 in {MANIFEST} (damaged or edited); reinstall "
                                       f"ptune or rebuild the world: {REBUILD_HINT}")
    return root


def _world_record(path: Path) -> dict[str, Any]:
    """``world.json`` without the keys that record the build machine (timings, versions, threads)."""
    meta = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in meta.items() if k not in ENVIRONMENT_KEYS}


def compare_with_shipped(world_dir: str | os.PathLike[str], shipped: str | os.PathLike[str] | None = None) -> list[str]:
    """The files of ``world_dir`` that differ from the shipped world's manifest.

    Every file is compared by sha256, except ``world.json``, whose timings, versions and
    thread count describe the build machine: the rest of it must be equal.

    Returns:
        ``"<path> (why)"`` per difference: empty when the world is byte-identical.
    """
    root, ref = Path(world_dir), Path(shipped) if shipped is not None else shipped_world_dir()
    want = read_manifest(ref)
    diffs = [f"{rel} (not in the shipped world)" for rel in _world_files(root) if rel not in want]
    for rel, entry in want.items():
        path = root / rel
        if not path.is_file():
            diffs.append(f"{rel} (missing)")
        elif rel == "world.json":
            if _world_record(path) != _world_record(ref / rel):
                diffs.append(f"{rel} (config, counts or memorization differ)")
        elif sha256_file(path) != entry["sha256"]:
            diffs.append(f"{rel} (sha256 differs)")
    return sorted(diffs)


# ----------------------------------------------------------------------------- the corpus as a file
def corpus_key(world_dir: str | os.PathLike[str]) -> str:
    """A short name for the corpus of the world in ``world_dir``: the sha256 of its config."""
    config = read_json(Path(world_dir) / "world.json")["config"]
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def write_corpus(world_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write the pretraining corpus of the world in ``world_dir`` to ``path``, one sentence a
    line (what ``ptune probe --methods mined --corpus`` reads).

    A world folder holds its LMs, not its corpus: the corpus is generated again from the
    config and seed that ``world.json`` records, and checked against the number of sentences
    and of tokens (with the world's own tokenizer) that ``world.json`` counted at the build.

    Raises:
        DataError: ``world.json`` is missing or not a world's, or the corpus generated here
            differs from the one the LMs were pretrained on.
    """
    from transformers import AutoTokenizer

    root = Path(world_dir)
    meta = read_json(root / "world.json")
    try:
        config, counted = WorldConfig.from_dict(meta["config"]), meta["counts"]["corpus"]
    except (KeyError, TypeError) as e:
        raise DataError(str(root / "world.json"), f"not a world's record (no {e})") from None
    lines = list(corpus(config))
    tokenizer = AutoTokenizer.from_pretrained(str(root / config.models[0]))
    # the world's tokenizer splits at whitespace first: a line's tokens are its words' tokens
    words = Counter(w for line in lines for w in line.split())
    lengths = map(len, tokenizer(list(words), add_special_tokens=False)["input_ids"])
    tokens = sum(n * k for n, k in zip(words.values(), lengths))
    if (len(lines), tokens) != (counted["sentences"], counted["tokens"]):
        raise DataError(str(root / "world.json"), f"the corpus generated here has {len(lines)} sentences and "
                        f"{tokens} tokens, the world's LMs were pretrained on {counted['sentences']} and "
                        f"{counted['tokens']}; this ptune generates another corpus for that config")
    return write_text_atomic(path, "\n".join(lines) + "\n")
