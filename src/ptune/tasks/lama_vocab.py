"""LAMA's candidate answers: the words that are one token for the probed LM's tokenizer.

``common`` is LAMA's ``common_vocab_cased.txt``, ``original`` the tokenizer's whole
vocabulary, ``29k`` the paper's ``29k-vocab.json`` (one word list per model family).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence, get_args

from ..errors import ConfigError, DataError
from ..files import read_json, read_text

__all__ = ["Vocab", "VOCABS", "single_token_words", "vocabulary"]

Vocab = Literal["common", "original", "29k"]
VOCABS: tuple[str, ...] = get_args(Vocab)


def single_token_words(words: Sequence[str], tokenizer: Any, space_before: bool) -> list[str]:
    lead = " " if space_before else ""
    words = [w for w in dict.fromkeys(w.strip() for w in words) if w]
    ids = tokenizer([lead + w for w in words], add_special_tokens=False)["input_ids"]
    seen: set[int] = set()
    out = []
    for w, t in zip(words, ids):
        if len(t) == 1 and t[0] not in seen and t[0] not in tokenizer.all_special_ids:
            seen.add(t[0])
            out.append(w)
    return out


def vocabulary(strategy: str, tokenizer: Any, data_dir: str | Path | None = None, *,
               space_before: bool = True, key: str | None = None, model_type: str | None = None) -> list[str]:
    """Candidate answer words that are one token for this tokenizer.

    Args:
        strategy: ``original`` (the tokenizer's whole vocabulary), ``common`` (LAMA's
            ``common_vocab_cased.txt``) or ``29k`` (the paper's ``29k-vocab.json``).
        tokenizer: the model's tokenizer.
        data_dir: folder with the vocabulary files.
        space_before: words are spelled as after a space (BPE ``Ġ``, SentencePiece ``▁``).
        key: the ``29k-vocab.json`` key (default: chosen from ``model_type``).
        model_type: the model's ``config.model_type``.
    """
    if strategy not in VOCABS:
        raise ConfigError("vocab", f"{strategy!r}; accepted: {', '.join(VOCABS)}")
    if strategy == "original":
        tokens = [t for t in tokenizer.get_vocab() if t not in tokenizer.all_special_tokens]
        words = [tokenizer.convert_tokens_to_string([t]).strip() for t in tokens]
        return single_token_words(sorted(w for w in words if w), tokenizer, space_before)
    root = Path(data_dir) if data_dir is not None else None
    if strategy == "common":
        path = root / "common_vocab_cased.txt" if root else None
        if path is None or not path.is_file():
            raise ConfigError("vocab", f"common: no common_vocab_cased.txt in {data_dir}")
        return single_token_words(read_text(path).split("\n"), tokenizer, space_before)
    path = root / "29k-vocab.json" if root else None
    if path is None or not path.is_file():
        raise ConfigError("vocab", f"29k: no 29k-vocab.json in {data_dir}")
    table = read_json(path)
    if not isinstance(table, dict):
        raise DataError(str(path), "expected an object: model name -> list of words")
    if key is None:  # the paper's mapping: GPT models -> gpt2-xl, RoBERTa -> roberta-large
        mt = model_type or ""
        key = "gpt2-xl" if mt.startswith("gpt") else "roberta-large" if "roberta" in mt else "bert-base-cased"
    if key not in table:
        raise ConfigError("vocab", f"29k: no key {key!r} in {path}; keys: {', '.join(table)}")
    words = [tokenizer.convert_tokens_to_string([t]).strip() if t[:1] in ("Ġ", "▁") else t for t in table[key]]
    return single_token_words(words, tokenizer, space_before)
