"""Template language: parsing, errors with columns, rendering, truncation."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tokenizer_for
from ptune import TemplateError
from ptune.errors import DataError
from ptune.template import Answer, Field, Pseudo, Sep, Template, Text, check_fields


def test_parse_elements():
    t = Template.parse("{premise} Question: {hypothesis:shorten} ? [P] Answer: [MASK] .")
    kinds = [type(e).__name__ for e in t.elements]
    assert kinds == ["Field", "Text", "Field", "Text", "Pseudo", "Text", "Answer", "Text"]
    assert t.fields == ("premise", "hypothesis")
    assert t.n_pseudo == 1
    hyp = t.elements[2]
    assert isinstance(hyp, Field) and hyp.shorten and hyp.space_before
    assert t.elements[6] == Answer(column=t.text.index("[MASK]"), space_before=True)


def test_lama_markers_and_pseudo_counts():
    t = Template.parse("[P*3] [X] [P*2:the] [Y] [P]")
    assert t.fields == ("subject",)
    pseudo = [e for e in t.elements if isinstance(e, Pseudo)]
    assert [(p.count, p.init) for p in pseudo] == [(3, None), (2, "the"), (1, None)]
    assert t.n_pseudo == 6
    assert Template.parse("[X] was born in [Y] .", x_field="sub_label").fields == ("sub_label",)


def test_escapes_and_sep():
    t = Template.parse(r"\[{a}\] \{x\} \\ [SEP] [MASK]")
    texts = "".join(e.text for e in t.elements if isinstance(e, Text))
    assert texts.startswith("[") and "]" in texts and "{x}" in texts and "\\" in texts
    assert any(isinstance(e, Sep) for e in t.elements)


@pytest.mark.parametrize(
    "text, column, words",
    [
        ("{premise} [MASK", 10, "no closing"),
        ("{premise [MASK]", 0, "unbalanced '{'"),
        ("{premise} ] [MASK]", 10, "unbalanced ']'"),
        ("{premise} }", 10, "unbalanced '}'"),
        ("{premise}", None, "no answer slot"),
        ("[MASK] {a} [Y]", 11, "second answer slot"),
        ("{1abc} [MASK]", 0, "bad field name"),
        ("{a:cut} [MASK]", 0, "unknown field option 'cut'"),
        ("{a} [FOO] [MASK]", 4, "unknown marker [FOO]"),
        ("[P*0] [MASK]", 0, "count must be"),
        ("[P*x] [MASK]", 0, "unknown marker"),
        ("[P:] [MASK]", 0, "needs a word"),
        ("a \\q [MASK]", 2, "backslash"),
    ],
)
def test_errors_name_the_column(text, column, words):
    with pytest.raises(TemplateError) as err:
        Template.parse(text)
    assert err.value.column == column
    assert words in str(err.value)
    assert repr(text) in str(err.value)
    if column is not None:
        assert f"column {column + 1}" in str(err.value)
        assert err.value.pretty().splitlines()[-1].index("^") == column + 2


# ----------------------------------------------------------------------------- property tests
_atoms = st.one_of(
    st.sampled_from(["{a}", "{b:shorten}", "[P]", "[P*2]", "[P*3:the]", "[SEP]", " ", "Question:", "?", ".", r"\[", r"\{"]),
    st.text(alphabet=st.characters(blacklist_characters="[]{}\\", blacklist_categories=("Cs",)), max_size=5),
)


@given(st.lists(_atoms, max_size=6), st.lists(_atoms, max_size=6))
def test_valid_templates_parse(before, after):
    text = "".join(before) + "[MASK]" + "".join(after)
    t = Template.parse(text)
    assert sum(isinstance(e, Answer) for e in t.elements) == 1
    expected = sum(text.count(m) * n for m, n in (("[P]", 1), ("[P*2]", 2), ("[P*3:the]", 3)))
    assert t.n_pseudo == expected
    # re-parsing is stable
    assert Template.parse(text) == t


@given(st.text(alphabet="ab {}[]:*P\\MASK0123", max_size=30))
def test_any_text_parses_or_raises_template_error(text):
    try:
        t = Template.parse(text)
    except TemplateError as e:
        assert e.column is None or 0 <= e.column < len(text)
    else:
        assert sum(isinstance(e, Answer) for e in t.elements) == 1


# ----------------------------------------------------------------------------- rendering
def test_bert_rendering_token_by_token():
    tok = tokenizer_for("bert")
    c = Template.parse("{premise} Question: {hypothesis} ? [P] Answer: [MASK] .").compile(tok, "masked")
    fields = c.tokenize_fields([{"premise": "the cat sat", "hypothesis": "the dog slept"}])[0]
    enc = c.encode(fields)
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    unk = tok.unk_token
    assert tokens == ["[CLS]", "the", "cat", "sat", *tok.tokenize("Question"), ":", "the", "dog", "slept", "?", unk,
                      *tok.tokenize("Answer"), ":", "[MASK]", ".", "[SEP]"]
    assert enc.pseudo_index == [0 if t == unk else -1 for t in tokens]
    assert enc.answer_positions == [tokens.index("[MASK]")]
    assert set(enc.token_type_ids) == {0}


def test_gpt2_rendering_keeps_word_starts_and_drops_after_answer(caplog):
    tok = tokenizer_for("gpt2")
    with caplog.at_level(logging.WARNING):
        c = Template.parse("[P*2] {text} [P] the [MASK] was [P]").compile(tok, "causal")
    assert "dropped" in caplog.text
    assert c.n_pseudo == 3
    enc = c.encode(c.tokenize_fields([{"text": "the movie"}])[0])
    tokens = tok.convert_ids_to_tokens(enc.input_ids)
    ph = tok.convert_ids_to_tokens(c.placeholder_id)
    assert tokens == [ph, ph, "Ġthe", *tok.tokenize(" movie"), ph, "Ġthe"]
    assert enc.answer_positions == [len(tokens) - 1]  # the last token predicts the answer


def test_causal_multi_token_answer_is_appended():
    tok = tokenizer_for("llama")
    c = Template.parse("{text} [MASK]").compile(tok, "causal")
    fields = c.tokenize_fields([{"text": "great"}])[0]
    answer = tok(" great movie", add_special_tokens=False)["input_ids"]
    enc = c.encode(fields, answer_len=len(answer), answer_ids=answer)
    assert enc.input_ids[0] == tok.bos_token_id
    assert enc.input_ids[-(len(answer) - 1):] == answer[:-1]
    n_before = len(enc.input_ids) - (len(answer) - 1)
    assert enc.answer_positions == list(range(n_before - 1, n_before - 1 + len(answer)))


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "gpt2", "llama"])
def test_special_tokens_follow_the_tokenizer(family):
    tok = tokenizer_for(family)
    kind = "causal" if family in ("gpt2", "llama") else "masked"
    c = Template.parse("{text} [MASK]").compile(tok, kind)
    plain = tok("great", add_special_tokens=True)["input_ids"]
    enc = c.encode(c.tokenize_fields([{"text": "great"}])[0])
    body = tok("great", add_special_tokens=False)["input_ids"]
    start = plain.index(body[0]) if body else 0
    assert enc.input_ids[:start] == plain[:start]  # BOS / CLS / <s> or nothing
    if kind == "masked":
        assert enc.input_ids[-len(plain[start + len(body):]) or len(enc.input_ids):] == plain[start + len(body):]


def test_missing_tokens_are_template_errors():
    with pytest.raises(TemplateError, match="no mask token"):
        Template.parse("{a} [MASK]").compile(tokenizer_for("gpt2"), "masked")
    with pytest.raises(TemplateError, match="no separator"):
        Template.parse("{a} [SEP] [MASK]").compile(tokenizer_for("gpt2"), "causal")
    with pytest.raises(TemplateError, match="at least one token before"):
        Template.parse("[MASK] .").compile(tokenizer_for("gpt2"), "causal")
    with pytest.raises(TemplateError, match=r"column 8: \{a\} comes after the answer slot"):
        Template.parse("[MASK] {a}").compile(tokenizer_for("gpt2"), "causal")


def test_check_fields_names_source_and_field():
    t = Template.parse("{premise} {hypothesis} [MASK]")
    with pytest.raises(DataError, match=r"train.jsonl:7: field 'hypothesis': missing"):
        check_fields(t, {"premise": "x"}, "train.jsonl:7")


# ----------------------------------------------------------------------------- truncation
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a_words=st.integers(0, 40),
    b_words=st.integers(0, 40),
    max_length=st.integers(20, 60),
    strategy=st.sampled_from(["longest_first", "last_first"]),
    kind=st.sampled_from(["masked", "causal"]),
)
def test_truncation_never_cuts_pseudo_anchors_or_answer(a_words, b_words, max_length, strategy, kind):
    tok = tokenizer_for("bert" if kind == "masked" else "gpt2")
    template = "[P*2] {a:shorten} Question: {b:shorten} ? [P] Answer: [MASK] ."
    c = Template.parse(template).compile(tok, kind, max_length=max_length, truncation=strategy)
    ex = {"a": " ".join(["cat"] * a_words), "b": " ".join(["dog"] * b_words)}
    fields = c.tokenize_fields([ex])[0]
    try:
        enc = c.encode(fields)
    except DataError:
        fixed = len(c.encode({"a": [], "b": []}).input_ids)
        assert fixed > max_length
        return
    assert len(enc.input_ids) <= max_length
    assert [p for p in enc.pseudo_index if p >= 0] == [0, 1, 2]
    anchor = tok("Question:", add_special_tokens=False)["input_ids"] if kind == "masked" else \
        tok(" Question:", add_special_tokens=False)["input_ids"]
    ids = enc.input_ids
    assert any(ids[i:i + len(anchor)] == anchor for i in range(len(ids)))
    if kind == "masked":
        assert ids[enc.answer_positions[0]] == tok.mask_token_id
    # nothing is cut when it fits; the kept part of a field is its beginning
    full = len(c.encode(fields).input_ids) if len(fields["a"]) + len(fields["b"]) == 0 else None
    cat = tok("cat", add_special_tokens=False)["input_ids"][0] if kind == "masked" else None
    if full is None and kind == "masked":
        kept_a = sum(1 for t in ids if t == cat)
        assert kept_a <= a_words


def test_longest_first_levels_the_longest_field():
    tok = tokenizer_for("bert")
    c = Template.parse("{a:shorten} {b:shorten} [MASK]").compile(tok, "masked", max_length=3 + 10)
    enc = c.encode({"a": list(range(10, 30)), "b": list(range(40, 44))})
    kept = enc.input_ids[1:-2]
    assert kept == list(range(10, 16)) + list(range(40, 44))  # a cut to 6, b (shorter) intact
    c2 = Template.parse("{a:shorten} {b:shorten} [MASK]").compile(tok, "masked", max_length=13, truncation="last_first")
    enc2 = c2.encode({"a": list(range(10, 30)), "b": list(range(40, 44))})
    assert enc2.input_ids[1:-2] == list(range(10, 20))  # b emptied first, then a cut


def test_too_long_without_shortenable_fields_is_a_data_error():
    tok = tokenizer_for("bert")
    c = Template.parse("{a} [MASK]").compile(tok, "masked", max_length=8)
    with pytest.raises(DataError, match=r"dev.jsonl:3: .*more than max_length 8.*shorten"):
        c.encode({"a": list(range(10, 30))}, source="dev.jsonl:3")


def test_token_types_zero_gives_one_segment():
    """``token_types="zero"``: the official few-shot code's patterns are one text segment."""
    tok = tokenizer_for("albert")
    t = Template.parse("{a} [SEP] {b} ? [P] [MASK]")
    ex = t.compile(tok, "masked").tokenize_fields([{"a": "great movie", "b": "loved it"}])[0]
    segments = t.compile(tok, "masked").encode(ex).token_type_ids
    zero = t.compile(tok, "masked", token_types="zero").encode(ex)
    assert set(segments) == {0, 1} and segments.index(1) == segments.index(0) + len(ex["a"]) + 2
    assert set(zero.token_type_ids) == {0} and len(zero.token_type_ids) == len(segments)
    assert tok.sep_token_id in zero.input_ids[1:-1]  # the separator token itself stays
    with pytest.raises(Exception, match="token_types"):
        t.compile(tok, "masked", token_types="none")  # type: ignore[arg-type]
