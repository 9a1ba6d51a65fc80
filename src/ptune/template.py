"""Templates: where the input, the pseudo tokens, the anchors and the answer slot go.

A template is plain text with a few markers, parsed by this module (never ``eval``)::

    {premise} Question: {hypothesis} ? [P] Answer: [MASK] .
    [P*3] {subject} [P*3] [MASK] [P*3]
    [X] was born in [Y] .

=================  ==========================================================
``{field}``        the example's field ``field``
``{field:shorten}`` the same, and the field may be cut when the input is too long
``[P]``, ``[P*n]`` one or ``n`` pseudo tokens (paper §1); ``[P:word]`` or
                   ``[P*n:word]`` initialises them from the embedding of ``word``
``[MASK]``         the answer slot (``[Y]`` is accepted as an alias)
``[X]``            LAMA's subject slot: the field ``subject`` (see ``x_field``)
``[SEP]``          the tokenizer's separator token; the text after it is the next segment
``\\[ \\] \\{ \\} \\\\``  literal brackets and backslash
anything else      literal text: the anchor tokens
=================  ==========================================================

All pseudo tokens of a template form one sequence, numbered left to right, that the
prompt encoder processes in order wherever they stand (paper §1). Whitespace in the
template matters the way it matters in text: ``Answer: [MASK]`` puts the answer after a
space (so a BPE verbalizer word is spelled ``ĠYes``), ``Answer:[MASK]`` does not.

A :class:`Template` is compiled once per tokenizer into a :class:`CompiledTemplate`,
which turns examples into token ids plus per-token flags (pseudo-token index, answer
positions, segment) with the model family's special tokens.

Example:
    >>> t = Template.parse("{premise} Question: {hypothesis} ? [P] Answer: [MASK] .")
    >>> t.fields, t.n_pseudo
    (('premise', 'hypothesis'), 1)
    >>> Template.parse("[P*3] [X] [P*3] [Y]").fields
    ('subject',)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from .errors import ConfigError, DataError, TemplateError
from .lm import LMKind, kind_of
from .syntax import Answer, Element, Field, Pseudo, Sep, Text, parse_elements
from .verbalizer import is_text

__all__ = [
    "Template",
    "CompiledTemplate",
    "Encoded",
    "Text",
    "Field",
    "Pseudo",
    "Answer",
    "Sep",
    "ModelKind",
    "special_token_frame",
]

logger = logging.getLogger(__name__)

ModelKind = Literal["masked", "causal"]
Truncation = Literal["longest_first", "last_first"]
TokenTypes = Literal["segments", "zero"]


# ----------------------------------------------------------------------------- parsing
class Template:
    """A parsed template (tokenizer independent). Build it with :meth:`parse`."""

    def __init__(self, text: str, elements: tuple[Element, ...]):
        self.text = text
        self.elements = elements

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.elements == self.elements

    def __hash__(self) -> int:
        return hash(self.elements)

    @classmethod
    def parse(cls, text: str, *, x_field: str = "subject") -> "Template":
        """Parse template text.

        Args:
            text: the template, e.g. ``"[P*3] {subject} [P*3] [MASK] ."``.
            x_field: the field that LAMA's ``[X]`` stands for.

        Raises:
            TemplateError: naming the column of an unknown marker, an unbalanced bracket,
                a bad field name, a missing or second answer slot.
        """
        return cls(text, parse_elements(text, x_field))

    # --------------------------------------------------------------- properties
    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the example fields the template reads, in order, without repeats."""
        seen: dict[str, None] = {}
        for e in self.elements:
            if isinstance(e, Field):
                seen.setdefault(e.name)
        return tuple(seen)

    @property
    def n_pseudo(self) -> int:
        """Number of pseudo tokens in the whole template."""
        return sum(e.count for e in self.elements if isinstance(e, Pseudo))

    def without_pseudo(self) -> "Template":
        """The same template with every pseudo token removed (the manual-prompt baseline)."""
        kept = [e for e in self.elements if not isinstance(e, Pseudo)]
        return Template(self.text + " (without pseudo tokens)", tuple(_attach_spaces(kept)))

    def compile(
        self,
        tokenizer: Any,
        kind: ModelKind | LMKind,
        *,
        max_length: int | None = None,
        truncation: Truncation = "longest_first",
        token_types: TokenTypes = "segments",
    ) -> "CompiledTemplate":
        """Compile for one tokenizer and model kind (see :class:`CompiledTemplate`)."""
        return CompiledTemplate(
            self, tokenizer, kind, max_length=max_length, truncation=truncation, token_types=token_types
        )


# ----------------------------------------------------------------------------- special tokens
def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sequence.

    Found generically by encoding a probe text with and without special tokens, so that
    BOS (Llama), CLS/SEP (BERT), <s>/</s> (RoBERTa) and none (GPT-2) all come out right.
    """
    probe = "hello world"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise ConfigError(
        "tokenizer", "cannot find where the text goes among the special tokens it adds"
    )


# ----------------------------------------------------------------------------- compiled
@dataclass
class Encoded:
    """One rendered example (lists, before padding).

    Attributes:
        input_ids: token ids; pseudo positions hold a placeholder id.
        pseudo_index: per token, the index of the pseudo token there, or -1.
        token_type_ids: per token, its segment (0, 1, ...).
        answer_positions: the positions whose LM output gives answer token 1, 2, ...
            (the mask tokens for a masked LM; for a causal LM the token before each).
    """

    input_ids: list[int]
    pseudo_index: list[int]
    token_type_ids: list[int]
    answer_positions: list[int]


class CompiledTemplate:
    """A template bound to one tokenizer and model kind.

    Anchor text and special tokens are tokenized once here; :meth:`tokenize_fields`
    tokenizes example fields in one tokenizer call per field; :meth:`encode` assembles
    one example, cutting shortenable fields when it is longer than ``max_length``.

    Args:
        template: the parsed template.
        tokenizer: a Hugging Face tokenizer.
        kind: ``"masked"`` (answer read at mask tokens) or ``"causal"`` (answer is the
            continuation; the template after the answer slot is dropped).
        max_length: the longest sequence to produce (defaults to the tokenizer's limit).
        truncation: ``"longest_first"`` cuts the currently longest shortenable field one
            token at a time; ``"last_first"`` empties the last shortenable field first
            (PET's behaviour).
        token_types: ``"segments"``: each ``[SEP]`` starts the next segment (token type
            0, 1, ...); ``"zero"``: token type 0 everywhere.

    Raises:
        TemplateError: the template needs a token the tokenizer lacks ([MASK], [SEP]), or
            a causal template has nothing before its answer slot.
    """

    def __init__(
        self,
        template: Template,
        tokenizer: Any,
        kind: ModelKind | LMKind,
        *,
        max_length: int | None = None,
        truncation: Truncation = "longest_first",
        token_types: TokenTypes = "segments",
    ):
        if truncation not in ("longest_first", "last_first"):
            raise ConfigError(
                "truncation", f"{truncation!r}; accepted: longest_first, last_first"
            )
        if token_types not in ("segments", "zero"):
            raise ConfigError("token_types", f"{token_types!r}; accepted: segments, zero")
        self.next_segment = 1 if token_types == "segments" else 0
        self.template = template
        self.tokenizer = tokenizer
        self.kind = kind = kind_of(kind)
        self.truncation = truncation
        limit = getattr(tokenizer, "model_max_length", None)
        if max_length is None:
            max_length = limit if isinstance(limit, int) and limit < 1_000_000 else 512
        self.max_length = int(max_length)
        self.prefix, suffix = special_token_frame(tokenizer)
        self.suffix = suffix if kind.answer_in_input else []
        self.placeholder_id = _placeholder_id(tokenizer)
        text = template.text

        elements = list(template.elements)
        answer_at = next(k for k, e in enumerate(elements) if isinstance(e, Answer))
        if not kind.answer_in_input:
            elements = _causal_elements(elements, answer_at, text)
        self.elements: list[Element] = elements
        self.answer: Answer = elements[answer_at]  # type: ignore[assignment]
        self.n_pseudo = sum(e.count for e in elements if isinstance(e, Pseudo))
        self.fields = tuple(dict.fromkeys(e.name for e in elements if isinstance(e, Field)))
        self.shortenable = tuple(
            dict.fromkeys(e.name for e in elements if isinstance(e, Field) and e.shorten)
        )

        self.mask_id: int | None = tokenizer.mask_token_id
        if kind.answer_in_input and self.mask_id is None:
            raise TemplateError(
                text, self.answer.column, "the tokenizer has no mask token; is this a masked LM?"
            )
        # anchors are tokenized once; the first text of a sequence gets no leading space
        self._anchor_ids: dict[int, list[int]] = {}
        self._pseudo_start: dict[int, int] = {}
        n = 0
        for k, e in enumerate(elements):
            if isinstance(e, Text):
                body = e.text.strip()
                if body:  # the template's own leading space is kept, except at its start
                    lead = " " if (e.text[:1].isspace() and k > 0) else ""
                    self._anchor_ids[k] = tokenizer(lead + body, add_special_tokens=False)[
                        "input_ids"
                    ]
            elif isinstance(e, Sep):
                if tokenizer.sep_token_id is None:
                    raise TemplateError(text, e.column, "[SEP]: the tokenizer has no separator token")
            elif isinstance(e, Pseudo):
                self._pseudo_start[k] = n
                n += e.count
        if not kind.answer_in_input and not self.prefix and not any(
            isinstance(e, Text | Field | Pseudo | Sep) for e in elements[:answer_at]
        ):
            raise TemplateError(
                text,
                self.answer.column,
                "a causal LM needs at least one token before the answer slot",
            )

    # ------------------------------------------------------------------ encoding
    def field_prefix(self, name: str) -> str:
        """The whitespace put before the field's value (its spelling at this position)."""
        for k, e in enumerate(self.elements):
            if isinstance(e, Field) and e.name == name:
                return " " if e.space_before else ""
        raise KeyError(name)

    def tokenize_fields(self, examples: Sequence[dict[str, Any]]) -> list[dict[str, list[int]]]:
        """Tokenize the template's fields of many examples, one tokenizer call per field.

        Values are converted with ``str`` and stripped; the whitespace before the field in
        the template decides whether the value is spelled as a new word.
        """
        out: list[dict[str, list[int]]] = [{} for _ in examples]
        for name in self.fields:
            lead = self.field_prefix(name)
            texts = [lead + str(ex[name]).strip() for ex in examples]
            if not texts:
                continue
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            for row, toks in zip(out, ids):
                row[name] = list(toks)
        return out

    def encode(
        self,
        field_ids: dict[str, list[int]],
        *,
        answer_len: int = 1,
        answer_ids: Sequence[int] | None = None,
        source: str = "example",
    ) -> Encoded:
        """Assemble one example.

        Args:
            field_ids: token ids of each field (from :meth:`tokenize_fields`).
            answer_len: number of answer tokens (mask tokens for a masked LM).
            answer_ids: for a causal LM scoring a multi-token answer, the answer's tokens;
                all but the last are appended so that each answer token is predicted.
            source: where the example comes from, for error messages.

        Raises:
            DataError: the example is too long even with its shortenable fields emptied.
        """
        answer_tokens = self.kind.answer_tokens(answer_len, answer_ids, self.mask_id)
        keep = self.kept_lengths(field_ids, answer_len=answer_len, answer_ids=answer_ids, source=source)

        ids = list(self.prefix)
        pseudo = [-1] * len(ids)
        seg = 0
        segs = [0] * len(ids)
        answer_positions: list[int] = []

        def put(tokens: Sequence[int], flag: int = -1) -> None:
            ids.extend(tokens)
            pseudo.extend([flag] * len(tokens) if flag < 0 else range(flag, flag + len(tokens)))
            segs.extend([seg] * len(tokens))

        for k, e in enumerate(self.elements):
            if isinstance(e, Text):
                put(self._anchor_ids.get(k, []))
            elif isinstance(e, Field):
                toks = field_ids[e.name]
                put(toks[: keep[e.name]] if e.shorten else toks)
            elif isinstance(e, Pseudo):
                ids.extend([self.placeholder_id] * e.count)
                start = self._pseudo_start[k]
                pseudo.extend(range(start, start + e.count))
                segs.extend([seg] * e.count)
            elif isinstance(e, Sep):
                put([self.tokenizer.sep_token_id])
                seg += self.next_segment
            elif isinstance(e, Answer):
                answer_positions = self.kind.answer_positions(len(ids), answer_len)
                put(answer_tokens)
        put(self.suffix)
        return Encoded(ids, pseudo, segs, answer_positions)

    def kept_lengths(self, field_ids: dict[str, list[int]], *, answer_len: int = 1,
                     answer_ids: Sequence[int] | None = None, source: str = "example") -> dict[str, int]:
        """How many tokens of each shortenable field :meth:`encode` keeps (same arguments)."""
        if answer_len < 1:
            raise ConfigError("answer_len", f"must be at least 1, got {answer_len}")
        answer_tokens = self.kind.answer_tokens(answer_len, answer_ids, self.mask_id)
        fixed = len(self.prefix) + len(self.suffix) + len(answer_tokens) + self.n_pseudo
        fixed += sum(len(v) for v in self._anchor_ids.values())
        fixed += sum(1 for e in self.elements if isinstance(e, Sep))
        lengths = {}
        for e in self.elements:
            if isinstance(e, Field):
                if e.shorten:
                    lengths[e.name] = len(field_ids[e.name])
                else:
                    fixed += len(field_ids[e.name])
        return self._truncate(lengths, self.max_length - fixed, source, fixed)

    def _truncate(
        self, lengths: dict[str, int], budget: int, source: str, fixed: int
    ) -> dict[str, int]:
        """How many tokens of each shortenable field to keep so that all fits in budget."""
        excess = sum(lengths.values()) - budget
        if excess <= 0:
            return lengths
        if budget < 0:
            hint = (
                "mark a long field shortenable, e.g. {passage:shorten}, or raise max_length"
                if not self.shortenable
                else "raise max_length"
            )
            raise DataError(
                source,
                f"{fixed} tokens without its shortenable fields, more than max_length "
                f"{self.max_length}; {hint}",
            )
        keep = dict(lengths)
        if self.truncation == "last_first":
            for name in reversed(list(keep)):
                cut = min(keep[name], excess)
                keep[name] -= cut
                excess -= cut
        else:  # longest_first: level the longest fields down
            while excess > 0:
                name = max(keep, key=lambda f: keep[f])
                keep[name] -= 1
                excess -= 1
        return keep


def _causal_elements(elements: list[Element], answer_at: int, text: str) -> list[Element]:
    """What a causal LM sees of a template: everything up to the answer slot (it reads the
    answer as the continuation). Pseudo tokens after the slot are dropped with a warning.

    Raises:
        TemplateError: a field after the answer slot (it would never be seen).
    """
    dropped = elements[answer_at + 1 :]
    late = next((e for e in dropped if isinstance(e, Field)), None)
    if late is not None:
        raise TemplateError(text, late.column, f"{{{late.name}}} comes after the answer slot, which a causal LM "
                            "never sees (it reads the answer as the continuation); move it before [MASK]")
    if any(isinstance(e, Pseudo) for e in dropped):
        logger.warning("template %r: a causal LM reads the answer as the continuation, so the pseudo tokens "
                       "after the answer slot are dropped", text)
    return elements[: answer_at + 1]


def _placeholder_id(tokenizer: Any) -> int:
    """A valid token id to hold pseudo positions (overwritten by the prompt encoder)."""
    for tid in (tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def check_fields(template: Template, example: dict[str, Any], source: str) -> None:
    """Raise :class:`DataError` naming the first template field the example lacks."""
    for name in template.fields:
        if name not in example:
            raise DataError(
                source,
                f"missing (the template needs {', '.join(template.fields)}; "
                f"the example has {', '.join(sorted(map(str, example))) or 'no fields'})",
                field=name,
            )
        value = example[name]
        if value is None:
            raise DataError(source, "is null; a text is needed", field=name)
        if not isinstance(value, str):
            raise DataError(source, f"expected text, got {type(value).__name__} {value!r:.40}", field=name)
        if not is_text(value):
            raise DataError(source, "holds a lone surrogate code point, which is not text", field=name)
