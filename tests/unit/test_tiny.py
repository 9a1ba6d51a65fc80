"""The tiny tokenizers: the same in every process (hash-order free), and the shared builder's parts."""

from __future__ import annotations

import subprocess
import sys

from ptune.tiny import tokenizer_backend, train_bpe, train_tokenizer, wrap_tokenizer

SCRIPT = """
import hashlib, json
from ptune.tiny import train_tokenizer
corpus = ["the movie was great and i loved it .", "a wonderful story , bad film ?"] * 4
for family in ("bert", "deberta-v2", "gpt2", "llama"):
    tok = train_tokenizer(family, corpus, vocab_size=120)
    print(family, hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest())
"""


def test_tokenizers_are_identical_across_processes():
    outs = [subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert outs[0].count("\n") == 4 and outs[0] == outs[1]


def test_wordpiece_style_tokenizer_merges_words_and_keeps_extra_tokens_whole():
    corpus = ["the movie was great .", "the film was great !", "a great film , a great cast ."] * 3
    tok = train_tokenizer("bert", corpus, vocab_size=200, extra_tokens=["Kelburg"])
    assert tok.tokenize("the movie was great .") == ["the", "movie", "was", "great", "."]
    assert tok.tokenize("Kelburg") == ["Kelburg"] and "Kelburg" not in train_bpe(corpus, 200, ["[PAD]"])[0]
    pieces = tok.tokenize("greatfilm")  # an unseen word of seen characters: pieces, no [UNK]
    assert pieces[0] == "great" and all(p.startswith("##") for p in pieces[1:]) and tok.unk_token not in pieces
    ids = tok("greatfilm", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "greatfilm"
    assert tok.convert_ids_to_tokens(tok("a film", "the cast")["input_ids"]) == [
        "[CLS]", "a", "film", "[SEP]", "the", "cast", "[SEP]"]


def test_train_bpe_depends_on_the_corpus_only():
    corpus = ["low lower lowest", "new newer newest", "wide wider widest"] * 2
    vocab, merges = train_bpe(corpus, 25, ["[PAD]", "[UNK]"])
    assert (vocab, merges) == train_bpe(list(reversed(corpus)), 25, ["[PAD]", "[UNK]"])
    assert list(vocab)[:2] == ["[PAD]", "[UNK]"] and len(vocab) == 25 and len(merges) == 10
    assert all(a + b.removeprefix("##") in vocab for a, b in merges)
    only_seen = train_bpe(corpus, 25, ["[PAD]", "[UNK]"], every_continuation=False)[0]
    assert "##l" in vocab and "##l" not in only_seen  # "l" only starts words


def test_wrap_tokenizer_with_an_explicit_template():
    backend = tokenizer_backend("bert", ["one two three"] * 2, 60, specials=["[PAD]", "[UNK]", "<eos>"])
    tok = wrap_tokenizer(backend, template=("<eos> $A", "<eos> $A $B:1"), bos_token="<eos>", eos_token="<eos>",
                         pad_token="[PAD]", unk_token="[UNK]")
    assert tok.convert_ids_to_tokens(tok("two one")["input_ids"]) == ["<eos>", "two", "one"]
    assert tok.model_input_names == ["input_ids", "attention_mask"] and tok.pad_token_id == 0
