"""From examples to padded batches: validation, tokenization and the rows each answer needs.

:meth:`Collator.prepare` checks and tokenizes examples once (errors name the example's
source and field); :meth:`Collator.collate` renders prepared items through the compiled
template into :class:`ptune.batch.View`s, one per answer length:

* a masked LM reads every candidate of a length from one row with that many masks;
* a causal LM reads single-token answers from one row, but a multi-token answer is part
  of the input (each token is predicted from the ones before), so each such candidate
  gets its own row.

Example:
    >>> items = model.collator.prepare([{"text": "great", "label": "pos"}])   # doctest: +SKIP
    >>> batch = model.collator.collate(items)                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from .batch import Batch, Item, View, pad_view
from .config import PromptConfig, SpeedConfig
from .data import as_examples
from .errors import DataError
from .lm import LMKind
from .template import CompiledTemplate, Encoded, Template, check_fields
from .verbalizer import CompiledVerbalizer, Verbalizer, is_text

__all__ = ["Collator"]


class Collator:
    """Turns examples into batches for one compiled template and LM kind.

    Args:
        config: the prompt config (label and candidate fields, padding side).
        template: the parsed template; ``compiled``: it bound to the tokenizer.
        verbalizer, answers: the verbalizer and its compiled words (None with
            per-example candidates).
        tokenizer, kind, pad_id: the LM's tokenizer, kind and padding id.
    """

    def __init__(self, config: PromptConfig, template: Template, compiled: CompiledTemplate,
                 verbalizer: Verbalizer | None, answers: CompiledVerbalizer | None, tokenizer: Any,
                 kind: LMKind, pad_id: int) -> None:
        self.config, self.template, self.compiled = config, template, compiled
        self.verbalizer, self.answers = verbalizer, answers
        self.tokenizer, self.kind, self.pad_id = tokenizer, kind, pad_id
        self.speed = SpeedConfig()

    # ------------------------------------------------------------------ examples
    def prepare(self, examples: Sequence[dict[str, Any]], sources: Sequence[str] | None = None, *,
                require_labels: bool = False) -> list[Item]:
        """Validate and tokenize examples (once; batches are assembled from the result).

        Raises:
            DataError: naming the source and field of the first bad example.
        """
        examples, sources = as_examples(examples, sources)
        labels = []
        lf = self.config.label_field
        for ex, src in zip(examples, sources):
            if not isinstance(ex, dict):
                raise DataError(src, f"expected an object with fields, got {type(ex).__name__}")
            check_fields(self.template, ex, src)
            if lf in ex and ex[lf] is not None:
                labels.append(self._label_index(ex, src))
            elif require_labels:
                raise DataError(src, "missing; training and evaluation need a label", field=lf)
            else:
                labels.append(-100)
        field_ids = self.compiled.tokenize_fields(examples)
        items = [Item(f, y, s) for f, y, s in zip(field_ids, labels, sources)]
        if self.answers is None:
            self._tokenize_candidates(examples, items)
        for it in items:  # fail now, not in the middle of training (what encode checks)
            longest = max(self.answer_seqs(it), key=len)
            self.compiled.kept_lengths(it.fields, answer_len=len(longest), answer_ids=longest, source=it.source)
        return items

    def _label_index(self, ex: dict[str, Any], src: str) -> int:
        lf = self.config.label_field
        if self.verbalizer is not None:
            return self.verbalizer.label_index(ex[lf], src, lf)
        cands = ex.get(self.config.candidates_field)  # type: ignore[arg-type]
        y = ex[lf]
        n = len(cands) if isinstance(cands, (list, tuple)) else 0
        if isinstance(y, bool) or not isinstance(y, int) or not (n == 0 or 0 <= y < n):
            raise DataError(src, f"{y!r} is not the index of one of the {n} candidates", field=lf)
        return y

    def _tokenize_candidates(self, examples: Sequence[dict[str, Any]], items: list[Item]) -> None:
        cf = self.config.candidates_field
        lead = " " if self.compiled.answer.space_before else ""
        texts: list[str] = []
        for ex, it in zip(examples, items):
            cands = ex.get(cf)  # type: ignore[arg-type]
            if cands is None:
                raise DataError(it.source, "missing (a list of candidate answers)", field=cf)
            if not isinstance(cands, (list, tuple)) or not cands or not all(
                    isinstance(c, str) and c.strip() and is_text(c) for c in cands):
                raise DataError(it.source, f"expected a non-empty list of non-empty strings, got {cands!r}", field=cf)
            it.candidate_texts = [c.strip() for c in cands]
            texts += it.candidate_texts
        encoded = self.tokenizer([lead + t for t in texts], add_special_tokens=False)["input_ids"] if texts else []
        k = 0
        for it in items:
            n = len(it.candidate_texts or [])
            it.candidates = [tuple(ids) for ids in encoded[k : k + n]]
            k += n
            for c, ids in enumerate(it.candidates):
                if not ids:
                    raise DataError(it.source, f"candidate {it.candidate_texts[c]!r} gives no tokens",  # type: ignore[index]
                                    field=f"{cf}[{c}]")

    def answer_seqs(self, item: Item) -> list[tuple[int, ...]]:
        """The answer token sequences an item is scored on."""
        if item.candidates is not None:
            return item.candidates
        assert self.answers is not None
        return self.answers.candidates

    # ------------------------------------------------------------------ batches
    def collate(self, items: Sequence[Item]) -> Batch:
        """Assemble and pad a batch: one view per answer length (see :class:`View`)."""
        if self.answers is None:
            return self._collate_per_example(items)
        views = []
        b = len(items)
        for length, (cidx, cids) in self.answers.groups.items():
            k = len(cidx)
            if not self.kind.candidate_in_input(length):
                encs = [self.compiled.encode(it.fields, answer_len=length, source=it.source) for it in items]
                view = self.pad(encs, cids.unsqueeze(0).expand(b, k, length), cidx.unsqueeze(0).expand(b, k),
                                torch.arange(b), True)
            else:  # one row per (example, candidate)
                encs = [self.compiled.encode(it.fields, answer_len=length, answer_ids=ids, source=it.source)
                        for it in items for ids in cids.tolist()]
                view = self.pad(encs, cids.repeat(b, 1).unsqueeze(1), cidx.repeat(b).unsqueeze(1),
                                torch.arange(b).repeat_interleave(k), False)
            views.append(view)
        return Batch(views, torch.tensor([it.label for it in items], dtype=torch.long))

    def _collate_per_example(self, items: Sequence[Item]) -> Batch:
        """Views for per-example candidates: a row holds one example's candidates of one
        length, or one candidate where the answer is part of the input."""
        groups: dict[int, list[tuple[int, list[tuple[int, tuple[int, ...]]]]]] = {}
        for b, it in enumerate(items):
            by_len: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
            for c, ids in enumerate(it.candidates or []):
                by_len.setdefault(len(ids), []).append((c, ids))
            for length, cs in by_len.items():
                if self.kind.candidate_in_input(length):
                    groups.setdefault(length, []).extend((b, [x]) for x in cs)
                else:
                    groups.setdefault(length, []).append((b, cs))
        views = []
        for length, rows in sorted(groups.items()):
            k = max(len(cs) for _, cs in rows)
            targets = torch.full((len(rows), k, length), self.pad_id, dtype=torch.long)
            cand_index = torch.full((len(rows), k), -1, dtype=torch.long)
            encs = []
            for r, (b, cs) in enumerate(rows):
                for j, (c, ids) in enumerate(cs):
                    targets[r, j] = torch.tensor(ids)
                    cand_index[r, j] = c
                encs.append(self.compiled.encode(items[b].fields, answer_len=length, answer_ids=cs[0][1],
                                                 source=items[b].source))
            views.append(self.pad(encs, targets, cand_index, torch.tensor([b for b, _ in rows]), False))
        return Batch(views, torch.tensor([it.label for it in items], dtype=torch.long))

    def pad(self, encs: list[Encoded], targets: torch.Tensor, cand_index: torch.Tensor, rows: torch.Tensor,
            shared: bool, side: str | None = None) -> View:
        """Pad encodings into one view (``side``: the config's padding side by default)."""
        return pad_view(encs, targets, cand_index, rows, shared, pad_id=self.pad_id,
                        multiple=self.speed.pad_to_multiple_of, left=(side or self.config.padding_side) == "left")

    def batches(self, items: Sequence[Item], batch_size: int) -> Iterator[Batch]:
        for i in range(0, len(items), batch_size):
            yield self.collate(items[i : i + batch_size])
