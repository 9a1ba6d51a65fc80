"""Property: any text, parsed, compiled and encoded for a causal and a masked tokenizer,
either works or raises one of ptune's own errors (never another exception).

The suite runs a modest number of examples; ``PTUNE_FUZZ_EXAMPLES=20000 pytest
tests/unit/test_template_fuzz.py`` runs a long campaign.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tokenizer_for
from ptune.errors import PtuneError
from ptune.template import Template

EXAMPLES = int(os.environ.get("PTUNE_FUZZ_EXAMPLES", "150"))
MAX_LENGTH = 256
PIECES = ["[", "]", "{", "}", "\\", "P", "*", ":", "MASK", "X", "Y", "SEP", "[MASK]", "[P]", "[P*", "{text",
          "{text}", "{b:shorten}", "shorten", ",", " ", "\n", "\t", "0", "3", "9", "512", "513", "99999999", "\u0663",
          "\uff13", "\u00b2", "é", "日本", "\x00", "\ud7ff", "word", "_", "Answer:", "?"]
RAW = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=24).map("".join)
PLAIN = st.text(st.characters(blacklist_characters="[]{}\\"), max_size=8)
ELEMENT = st.one_of(
    st.sampled_from(["[P]", "[SEP]", "[X]", "{text}", "{b:shorten}", "{text:shorten}", " ", "?", ".", "\\[", "\\}"]),
    st.one_of(st.integers(0, 12), st.sampled_from([512, 513, 1025])).map(lambda n: f"[P*{n}]"),
    PLAIN.map(lambda w: f"[P:{w}]"),
    PLAIN,
    st.text(max_size=3),
)
VALID_ISH = st.tuples(st.lists(ELEMENT, max_size=10), st.lists(ELEMENT, max_size=6), st.sampled_from(
    ["[MASK]", "[Y]", " [MASK]", "[MASK] [MASK]", ""])).map(lambda t: "".join(t[0]) + t[2] + "".join(t[1]))
TEXT = st.one_of(VALID_ISH, VALID_ISH, RAW)


def _encode(template: Template, family: str, kind: str) -> None:
    example = {name: "the movie was great ." for name in template.fields}
    compiled = template.compile(tokenizer_for(family), kind, max_length=MAX_LENGTH)
    fields = compiled.tokenize_fields([example])[0]
    for answer_len in (1, 2):
        encoded = compiled.encode(fields, answer_len=answer_len, answer_ids=[5] * answer_len)
        assert len(encoded.input_ids) == len(encoded.pseudo_index) == len(encoded.token_type_ids) <= MAX_LENGTH
        assert len(encoded.answer_positions) == answer_len
        assert sorted(i for i in encoded.pseudo_index if i >= 0) == list(range(compiled.n_pseudo))


def exercise(text: str) -> int:
    """Parse ``text``, then compile and encode it for a causal and a masked tokenizer; the
    number of kinds it worked for. Any error but ptune's own propagates."""
    try:
        template = Template.parse(text)
    except PtuneError:
        return 0
    done = 0
    for family, kind in (("gpt2", "causal"), ("bert", "masked")):
        try:
            _encode(template, family, kind)
            done += 1
        except PtuneError:
            pass
    return done


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(TEXT)
def test_any_template_works_or_raises_a_ptune_error(text):
    exercise(text)
