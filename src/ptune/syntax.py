"""The template language: its elements and the parser (see :mod:`ptune.template`).

The parser reads the markers itself and never evaluates template text as code; every
error names the column it found.

Example:
    >>> [type(e).__name__ for e in parse_elements("[P*2] {text} [MASK]", "subject")]
    ['Pseudo', 'Text', 'Field', 'Text', 'Answer']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .errors import TemplateError

__all__ = ["Text", "Field", "Pseudo", "Answer", "Sep", "Element", "parse_elements", "MAX_PSEUDO_PER_MARKER",
           "MAX_PSEUDO", "MAX_TEMPLATE_CHARS", "strip_pseudo"]

_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PSEUDO_RE = re.compile(r"P(?:\*([0-9]+))?(?::(.*))?\Z", re.S)  # ASCII digits only
_ESCAPES = {"[": "[", "]": "]", "{": "{", "}": "}", "\\": "\\"}
MAX_PSEUDO_PER_MARKER = 512
"""The most pseudo tokens one marker ``[P*n]`` asks for."""
MAX_PSEUDO = 1024
"""The most pseudo tokens in one template."""
MAX_TEMPLATE_CHARS = 4096
"""The longest template text."""

_PSEUDO_MARKER_RE = re.compile(r"(?<!\\)\[P(?:\*\d+)?(?::[^\]]*)?\]")


def strip_pseudo(template: str) -> str:
    """The manual-prompt version of a template: its pseudo-token markers removed.

    Example:
        >>> strip_pseudo("{premise} ? [P*2] Answer: [MASK] .")
        '{premise} ? Answer: [MASK] .'
    """
    return re.sub(r" {2,}", " ", _PSEUDO_MARKER_RE.sub("", template)).strip()


# ----------------------------------------------------------------------------- elements
@dataclass(frozen=True)
class Text:
    """Literal text: anchor tokens."""

    text: str
    column: int


@dataclass(frozen=True)
class Field:
    """An input field of the example; ``shorten`` marks it as cuttable."""

    name: str
    shorten: bool
    column: int
    space_before: bool = False


@dataclass(frozen=True)
class Pseudo:
    """``count`` pseudo tokens, optionally initialised from the embedding of ``init``."""

    count: int
    init: str | None
    column: int


@dataclass(frozen=True)
class Answer:
    """The answer slot: mask token(s) for a masked LM, the continuation for a causal LM."""

    column: int
    space_before: bool = False


@dataclass(frozen=True)
class Sep:
    """The tokenizer's separator token; what follows is the next segment."""

    column: int


Element = Text | Field | Pseudo | Answer | Sep


def parse_elements(text: str, x_field: str = "subject") -> tuple[Element, ...]:
    """The elements of template ``text``, with the whitespace before each field and the
    answer slot attached.

    Raises:
        TemplateError: naming the column of an unknown marker, an unbalanced bracket,
            a bad field name, a missing or second answer slot.
    """
    if not isinstance(text, str):
        raise TemplateError(repr(text)[:80], None, "a template must be a string")
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(text[:60] + "...", None, f"{len(text)} characters; a template has at most "
                            f"{MAX_TEMPLATE_CHARS}")
    bad = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        raise TemplateError(text, bad, "a lone surrogate code point is not text (not encodable as UTF-8)")
    elements: list[Element] = []
    buf: list[str] = []
    buf_col = 0
    i = 0

    def flush() -> None:
        if buf:
            elements.append(Text("".join(buf), buf_col))
            buf.clear()

    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 < len(text) and text[i + 1] in _ESCAPES:
                if not buf:
                    buf_col = i
                buf.append(text[i + 1])
                i += 2
                continue
            raise TemplateError(text, i, "a backslash must be followed by one of [ ] { } \\")
        if ch in "]}":
            raise TemplateError(
                text, i, f"unbalanced {ch!r}; write \\{ch} for a literal bracket"
            )
        if ch in "[{":
            close = "]" if ch == "[" else "}"
            end = _find_close(text, i, close)
            inner = text[i + 1 : end]
            flush()
            elements.append(_parse_marker(text, i, ch, inner, x_field))
            i = end + 1
            continue
        if not buf:
            buf_col = i
        buf.append(ch)
        i += 1
    flush()
    total = 0
    for e in elements:
        total += e.count if isinstance(e, Pseudo) else 0
        if total > MAX_PSEUDO:
            raise TemplateError(text, e.column, f"more than {MAX_PSEUDO} pseudo tokens in the template")
    elements = _attach_spaces(elements)
    answers = [e for e in elements if isinstance(e, Answer)]
    if not answers:
        raise TemplateError(text, None, "no answer slot; put [MASK] where the answer goes")
    if len(answers) > 1:
        raise TemplateError(text, answers[1].column, "a second answer slot; one is allowed")
    return tuple(elements)


def _find_close(text: str, start: int, close: str) -> int:
    j = start + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == close:
            return j
        if text[j] in "[{":
            raise TemplateError(
                text, start, f"unbalanced {text[start]!r}: {text[j]!r} opens at column {j + 1} "
                f"before {close!r} closes it"
            )
        j += 1
    raise TemplateError(text, start, f"unbalanced {text[start]!r}: no closing {close!r}")


def _parse_marker(text: str, col: int, opener: str, inner: str, x_field: str) -> Element:
    if opener == "{":
        name, _, opts = inner.partition(":")
        name = name.strip()
        if not _FIELD_RE.match(name):
            raise TemplateError(
                text, col, f"bad field name {name!r}; use letters, digits and _ (e.g. {{premise}})"
            )
        shorten = False
        if opts:
            for opt in (o.strip() for o in opts.split(",")):
                if opt == "shorten":
                    shorten = True
                else:
                    raise TemplateError(
                        text, col, f"unknown field option {opt!r}; accepted: shorten"
                    )
        return Field(name, shorten, col)
    if inner in ("MASK", "Y"):
        return Answer(col)
    if inner == "X":
        return Field(x_field, False, col)
    if inner == "SEP":
        return Sep(col)
    m = _PSEUDO_RE.match(inner)
    if m:
        digits = m.group(1)
        if digits is not None and len(digits.lstrip("0")) > len(str(MAX_PSEUDO_PER_MARKER)):
            raise TemplateError(text, col, f"[P*{digits[:8]}...]: the count must be 1 to {MAX_PSEUDO_PER_MARKER}")
        count = int(digits) if digits is not None else 1
        if not 1 <= count <= MAX_PSEUDO_PER_MARKER:
            raise TemplateError(
                text, col, f"[P*{count}]: the count must be 1 to {MAX_PSEUDO_PER_MARKER}"
            )
        init = m.group(2)
        if init is not None and not init.strip():
            raise TemplateError(text, col, "[P:word] needs a word after the colon")
        return Pseudo(count, init.strip() if init else None, col)
    raise TemplateError(
        text,
        col,
        f"unknown marker [{inner}]; accepted: [P], [P*n], [P:word], [MASK], [Y], [X], [SEP] "
        "(write \\[ for a literal bracket)",
    )


def _attach_spaces(elements: Sequence[Element]) -> list[Element]:
    """Record, on fields and the answer slot, whether whitespace precedes them."""
    out: list[Element] = []
    prev_space = False
    for k, e in enumerate(elements):
        if isinstance(e, Field):
            e = Field(e.name, e.shorten, e.column, space_before=prev_space and k > 0)
        elif isinstance(e, Answer):
            e = Answer(e.column, space_before=prev_space and k > 0)
        out.append(e)
        if isinstance(e, Text):
            prev_space = e.text[-1:].isspace()
        else:
            prev_space = False
    return out
