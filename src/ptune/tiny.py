"""Tiny tokenizers and models, built locally with no download.

Tests, examples, benchmarks and the synthetic world (:mod:`ptune.world`) need real Hugging
Face models without a hub. This module builds a tokenizer of a model family's kind on a
small corpus and a random-init model of that family from its config:

* WordPiece-style families (BERT, DeBERTa-v2) get a BPE vocabulary with ``##`` continuation
  marks from :func:`train_bpe`, a plain-Python trainer with a fixed tie-break, so the
  vocabulary is the same in every process (the ``tokenizers`` trainers assign ``##`` ids
  in hash-map order);
* byte-level families (GPT-2, RoBERTa, OPT, GPT-NeoX) and SentencePiece-style families
  (Llama, ALBERT) use the ``tokenizers`` BPE trainer, deterministic for them.

A tokenizer is built in two steps that can also be used apart: :func:`tokenizer_backend`
(vocabulary, pre-tokenizer, decoder, special and extra tokens) and :func:`wrap_tokenizer`
(post-processing and the special-token roles of a family, or given explicitly).

Example:
    >>> tok = train_tokenizer("gpt2", ["a small corpus", "of a few sentences"], vocab_size=120)
    >>> lm = tiny_model("gpt2", tok, hidden=32, layers=1)
    >>> lm.config.n_embd
    32
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

__all__ = ["FAMILIES", "train_bpe", "tokenizer_backend", "wrap_tokenizer", "train_tokenizer", "tiny_model",
           "tiny_pair"]

FAMILIES = ("gpt2", "llama", "opt", "gpt_neox", "bert", "roberta", "albert", "deberta-v2")
_MASKED = {"bert", "roberta", "albert", "deberta-v2"}
_WORDPIECE = {"bert", "deberta-v2"}  # "##" continuation marks, vocabulary from train_bpe
_BYTE_LEVEL = {"gpt2", "roberta", "opt", "gpt_neox"}

# special tokens per family, in id order (0, 1, ...)
_SPECIALS = {
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "albert": ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"],
    "deberta-v2": ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "gpt2": ["<|endoftext|>"],
    "opt": ["<pad>", "</s>", "<unk>"],
    "gpt_neox": ["<|endoftext|>", "<|padding|>"],
    "llama": ["<unk>", "<s>", "</s>"],
}
_CLS_SEP = ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1")
# post-processing of each family as (single, pair) templates; a family not listed adds nothing
# (RoBERTa has its own processor)
_TEMPLATES = {"bert": _CLS_SEP, "albert": _CLS_SEP, "deberta-v2": _CLS_SEP,
              "opt": ("</s> $A", "</s> $A </s> $B"), "llama": ("<s> $A", "<s> $A <s> $B")}
_CLS_ROLES = dict(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
# the special-token roles of each family's transformers tokenizer
_ROLES: dict[str, dict[str, str]] = {
    "bert": dict(pad_token="[PAD]", unk_token="[UNK]", **_CLS_ROLES),
    "albert": dict(pad_token="<pad>", unk_token="<unk>", **_CLS_ROLES),
    "deberta-v2": dict(pad_token="[PAD]", unk_token="[UNK]", **_CLS_ROLES),
    "roberta": dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                    unk_token="<unk>", mask_token="<mask>"),
    "gpt2": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"),
    "gpt_neox": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|padding|>"),
    "opt": dict(bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"),
    "llama": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>"),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; accepted: {', '.join(FAMILIES)}")


def train_bpe(corpus: Iterable[str], vocab_size: int, specials: Iterable[str], *, skip: Iterable[str] = (),
              pre_tokenizer: Any = None, every_continuation: bool = True) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE merges with ``##`` continuation marks and a deterministic tie-break.

    Words are split into their first character and ``##``-marked continuation characters;
    the most frequent adjacent pair is merged until the vocabulary has ``vocab_size``
    entries, ties going to the greatest pair, so the result depends on the corpus only.

    Args:
        corpus: training sentences.
        vocab_size: target vocabulary size, specials and characters included.
        specials: the first entries of the vocabulary (ids 0, 1, ...).
        skip: words left out of training (e.g. words added later as whole tokens).
        pre_tokenizer: a ``tokenizers`` pre-tokenizer that splits sentences into words
            (default: ``Whitespace``).
        every_continuation: every character of the corpus is also a ``##`` continuation, so
            each word made of known characters has pieces; ``False``: only the
            continuations that occur.

    Returns:
        ``(vocab, merges)`` for ``tokenizers.models.BPE(..., continuing_subword_prefix="##")``.
    """
    from tokenizers import pre_tokenizers

    pre = pre_tokenizer or pre_tokenizers.Whitespace()
    specials, skip = list(specials), set(skip)
    counts: Counter[str] = Counter()
    for line, n in Counter(corpus).items():
        for w, _ in pre.pre_tokenize_str(line):
            if w not in skip:
                counts[w] += n
    words = {w: [w[0], *("##" + c for c in w[1:])] for w in sorted(counts)}
    symbols = {t for syms in words.values() for t in syms}
    if every_continuation:
        symbols |= {"##" + t[-1] for t in symbols}
    vocab = [*specials, *sorted(symbols - set(specials))]
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for w, syms in words.items():
        for p in zip(syms, syms[1:]):
            pairs[p] += counts[w]
            where[p].add(w)
    merges = []
    while len(vocab) < vocab_size and pairs:
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.append(best[0] + best[1][2:])
        for w in sorted(where.pop(best)):
            old = words[w]
            new = _merge(old, best, vocab[-1])
            for p in zip(old, old[1:]):
                pairs[p] -= counts[w]
                if pairs[p] <= 0:
                    del pairs[p]
            for p in zip(new, new[1:]):
                pairs[p] += counts[w]
                where[p].add(w)
            words[w] = new
    return {t: i for i, t in enumerate(vocab)}, merges


def _merge(symbols: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    """``symbols`` with every occurrence of ``pair`` (left to right) replaced by ``merged``."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def tokenizer_backend(family: str, corpus: Iterable[str], vocab_size: int = 300, extra_tokens: Iterable[str] = (),
                      *, specials: Iterable[str] | None = None, pre_tokenizer: Any = None,
                      every_continuation: bool = True) -> Any:
    """A trained ``tokenizers.Tokenizer`` of ``family``'s kind, without post-processing.

    Args:
        family: one of :data:`FAMILIES`.
        corpus: training sentences.
        vocab_size: target vocabulary size before ``extra_tokens`` are added.
        extra_tokens: words added as whole tokens after training (e.g. answer words that
            must be one token); WordPiece-style families leave them out of training.
        specials: the special tokens, in id order (default: the family's).
        pre_tokenizer: replaces the pre-tokenizer of a WordPiece-style family (default:
            ``BertPreTokenizer``).
        every_continuation: WordPiece-style families: see :func:`train_bpe`.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    _check_family(family)
    specials = list(_SPECIALS[family] if specials is None else specials)
    corpus, extra = list(corpus), list(extra_tokens)
    if family in _WORDPIECE:
        pre = pre_tokenizer or pre_tokenizers.BertPreTokenizer()
        vocab, merges = train_bpe(corpus, vocab_size, specials, skip=extra, pre_tokenizer=pre,
                                  every_continuation=every_continuation)
        tok = Tokenizer(models.BPE(vocab, merges, unk_token="[UNK]", continuing_subword_prefix="##"))
        tok.pre_tokenizer = pre
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.add_special_tokens(specials)
    elif family in _BYTE_LEVEL:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
    else:  # llama, albert: SentencePiece-style word-start marker
        # BPE with the ▁ word-start marker (a Unigram trainer is unstable on tiny corpora)
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        tok.decoder = decoders.Metaspace(prepend_scheme="always")
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                            show_progress=False))
    if extra:
        tok.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in extra])
    return tok


def wrap_tokenizer(backend: Any, family: str | None = None, *, template: tuple[str, str] | None = None,
                   token_types: bool | None = None, **kwargs: Any) -> Any:
    """A ``PreTrainedTokenizerFast`` over ``backend`` with a family's post-processing and roles.

    Args:
        backend: a ``tokenizers.Tokenizer`` (e.g. from :func:`tokenizer_backend`); its
            post-processor is set here.
        family: takes the post-processing, the special-token roles and the model inputs
            of this family of :data:`FAMILIES`; ``None``: give them explicitly.
        template: ``(single, pair)`` post-processing in ``TemplateProcessing``'s syntax,
            e.g. ``("<s> $A", "<s> $A <s> $B")``; every other word is a special token.
        token_types: the model takes ``token_type_ids``.
        kwargs: special-token roles (``bos_token=``, ``pad_token=``, ...) and other
            ``PreTrainedTokenizerFast`` arguments; they override the family's.
    """
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    if family is not None:
        _check_family(family)
        template = template or _TEMPLATES.get(family)
        token_types = family in ("bert", "albert", "deberta-v2") if token_types is None else token_types
        kwargs = {**_ROLES[family], **kwargs}
    if family == "roberta":
        backend.post_processor = processors.RobertaProcessing(("</s>", backend.token_to_id("</s>")),
                                                              ("<s>", backend.token_to_id("<s>")))
        kwargs["mask_token"] = AddedToken(kwargs["mask_token"], lstrip=True, normalized=False)
    elif template is not None:
        single, pair = template
        names = dict.fromkeys(w.split(":")[0] for w in f"{single} {pair}".split() if not w.startswith("$"))
        backend.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in names])
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=inputs, **kwargs)


def train_tokenizer(family: str, corpus: Iterable[str], vocab_size: int = 300, extra_tokens: Iterable[str] = ()) -> Any:
    """Train a fast tokenizer that behaves like ``family``'s.

    Args:
        family: one of :data:`FAMILIES`.
        corpus: training sentences.
        vocab_size: target vocabulary size.
        extra_tokens: words added as whole tokens (e.g. answer words that must be one token).

    Returns:
        A ``PreTrainedTokenizerFast`` with the family's special tokens and post-processing.
    """
    return wrap_tokenizer(tokenizer_backend(family, corpus, vocab_size, extra_tokens), family)


def tiny_model(family: str, tokenizer: Any, *, hidden: int = 32, layers: int = 2, heads: int = 2, positions: int = 128, seed: int = 0, dropout: float = 0.1, init_range: float = 0.02) -> Any:
    """A random-init LM of ``family``'s architecture sized for ``tokenizer``."""
    import torch
    import transformers as tf

    v = len(tokenizer)
    pad = tokenizer.pad_token_id
    common = dict(vocab_size=v, pad_token_id=pad, initializer_range=init_range)
    if family == "gpt2":
        cfg = tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions,
                            bos_token_id=None, eos_token_id=None, resid_pdrop=dropout, embd_pdrop=dropout,
                            attn_pdrop=dropout, **common)
    elif family == "llama":
        cfg = tf.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=1, max_position_embeddings=positions,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **common)
    elif family == "opt":
        cfg = tf.OPTConfig(hidden_size=hidden, ffn_dim=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           word_embed_proj_dim=hidden, max_position_embeddings=positions, dropout=dropout,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **common)
    elif family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, max_position_embeddings=positions,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **common)
    elif family == "bert":
        cfg = tf.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=2 * hidden, max_position_embeddings=positions, type_vocab_size=2,
                            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **common)
    elif family == "roberta":
        cfg = tf.RobertaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                               intermediate_size=2 * hidden, max_position_embeddings=positions + 2, type_vocab_size=1,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **common)
    elif family == "albert":
        cfg = tf.AlbertConfig(embedding_size=hidden // 2, hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=positions,
                              type_vocab_size=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **common)
    elif family == "deberta-v2":
        cfg = tf.DebertaV2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                 intermediate_size=2 * hidden, max_position_embeddings=positions, type_vocab_size=2,
                                 hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **common)
    else:
        raise ValueError(f"unknown family {family!r}; accepted: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    auto = tf.AutoModelForMaskedLM if family in _MASKED else tf.AutoModelForCausalLM
    return auto.from_config(cfg)


_DEMO_CORPUS = [
    "the movie was great and i loved it .",
    "the film was terrible , i hated every minute .",
    "a wonderful story with brilliant acting .",
    "boring plot and awful dialogue .",
    "Question : is it good ? Answer : yes .",
    "Question : is it bad ? Answer : no .",
    "The cat sat on the mat while the dog slept in the garden .",
    "Paris is the capital of France and Rome is the capital of Italy .",
]


def tiny_pair(family: str, corpus: Iterable[str] | None = None, **model_kwargs: Any) -> tuple[Any, Any]:
    """A (model, tokenizer) pair of ``family`` trained on ``corpus`` (a small default)."""
    tok = train_tokenizer(family, list(corpus or _DEMO_CORPUS) * 4)
    return tiny_model(family, tok, **model_kwargs), tok
