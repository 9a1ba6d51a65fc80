"""Tiny tokenizers and models, built locally with no download.

Tests, examples and benchmarks need real Hugging Face models without a hub. This module
trains a tokenizer of a model family's kind (WordPiece for BERT, byte-level BPE for GPT-2
and RoBERTa, SentencePiece-style for Llama and ALBERT) on a small corpus and builds a
random-init model of that family from its config.

Example:
    >>> tok = train_tokenizer("gpt2", ["a small corpus", "of a few sentences"], vocab_size=120)
    >>> lm = tiny_model("gpt2", tok, hidden=32, layers=1)
    >>> lm.config.n_embd
    32
"""

from __future__ import annotations

from collections import Counter

from typing import Any, Iterable

__all__ = ["FAMILIES", "train_tokenizer", "tiny_model", "tiny_pair"]

FAMILIES = ("gpt2", "llama", "opt", "gpt_neox", "bert", "roberta", "albert", "deberta-v2")
_MASKED = {"bert", "roberta", "albert", "deberta-v2"}

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
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; accepted: {', '.join(FAMILIES)}")
    specials = _SPECIALS[family]
    corpus = list(corpus)
    if family in ("bert", "deberta-v2"):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = None
    elif family in ("gpt2", "roberta", "opt", "gpt_neox"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:  # llama, albert: SentencePiece-style word-start marker
        # BPE with the ▁ word-start marker (a Unigram trainer is unstable on tiny corpora)
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        tok.decoder = decoders.Metaspace(prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    if family in ("bert", "deberta-v2"):
        # tokenizers' WordPiece (and "##"-BPE) trainers break ties in hash order: another
        # vocabulary in every process. This one is deterministic: the specials, every
        # character (also as a "##" continuation), then the most frequent whole words.
        pre = pre_tokenizers.BertPreTokenizer()
        counts = Counter(w for line in corpus for w, _ in pre.pre_tokenize_str(line))
        chars = sorted({c for w in counts for c in w})
        pieces = list(dict.fromkeys([*specials, *chars, *("##" + c for c in chars)]))
        words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in pieces]
        pieces += words[: max(0, vocab_size - len(pieces))]
        tok.model = models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]")
    else:
        tok.train_from_iterator(corpus, trainer)
    extra = [AddedToken(w, single_word=True, normalized=False) for w in extra_tokens]
    if extra:
        tok.add_tokens(extra)
    ids = {s: tok.token_to_id(s) for s in specials}
    kwargs: dict[str, Any] = {}
    if family in ("bert", "albert", "deberta-v2"):
        cls_, sep = ("[CLS]", "[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls_} $A {sep}",
            pair=f"{cls_} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls_, ids[cls_]), (sep, ids[sep])],
        )
        kwargs = dict(
            pad_token=specials[0] if family != "deberta-v2" else "[PAD]",
            unk_token="<unk>" if family == "albert" else "[UNK]",
            cls_token=cls_, sep_token=sep, mask_token="[MASK]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    elif family == "roberta":
        tok.post_processor = processors.RobertaProcessing(("</s>", ids["</s>"]), ("<s>", ids["<s>"]))
        kwargs = dict(
            bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
            unk_token="<unk>", mask_token=AddedToken("<mask>", lstrip=True, normalized=False),
            model_input_names=["input_ids", "attention_mask"],
        )
    elif family == "gpt2":
        kwargs = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                      model_input_names=["input_ids", "attention_mask"])
    elif family == "gpt_neox":
        kwargs = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|padding|>",
                      model_input_names=["input_ids", "attention_mask"])
    elif family == "opt":
        tok.post_processor = processors.TemplateProcessing(
            single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", ids["</s>"])]
        )
        kwargs = dict(bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                      model_input_names=["input_ids", "attention_mask"])
    else:  # llama
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", ids["<s>"])]
        )
        kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                      model_input_names=["input_ids", "attention_mask"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


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
