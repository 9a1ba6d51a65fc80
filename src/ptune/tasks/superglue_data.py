"""Readers for the eight SuperGLUE tasks in their jsonl format (FewGLUE: train, dev32, val).

Each reader turns a file into flat example dicts with the fields the patterns need,
validated line by line: bad data raises :class:`~ptune.errors.DataError` naming
``file:line`` and the dotted field. ``skip_invalid=True`` skips bad lines instead and
lists their messages in ``Records.skipped``.

Example:
    >>> recs = read_task("copa", split_path("data/fewglue", "COPA", "train"))  # doctest: +SKIP
    >>> recs.examples[0]["choices"], recs.examples[0]["connective"]                     # doctest: +SKIP
    (['the chandelier dropped from the ceiling', "the chandelier's lights flickered on and off"], 'because')
"""

from __future__ import annotations

import os
import random
import string
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from ..data import Records, keep_valid, read_examples
from ..errors import ConfigError, DataError

__all__ = ["TASKS", "LABELS", "SPLITS", "canonical_task", "split_path", "read_task", "load_splits",
           "mirror_copa", "record_train_examples", "train_examples"]

TASKS = ("BoolQ", "CB", "COPA", "MultiRC", "ReCoRD", "RTE", "WiC", "WSC")
SPLITS = ("train", "dev32", "val", "test")

#: Class labels in class-index order; None for the choice tasks (label = index into "choices").
LABELS: dict[str, list[str] | None] = {
    "BoolQ": ["False", "True"],
    "CB": ["entailment", "contradiction", "neutral"],
    "COPA": None,
    "MultiRC": ["0", "1"],
    "ReCoRD": None,
    "RTE": ["entailment", "not_entailment"],
    "WiC": ["False", "True"],
    "WSC": ["False", "True"],
}

_FINAL_PUNCT = ".?!,;:"
_EDGE_PUNCT = string.punctuation + "\u201c\u201d\u2018\u2019"


def canonical_task(name: str) -> str:
    """The task's canonical spelling (``"rte"`` -> ``"RTE"``); ConfigError for unknown names."""
    for task in TASKS:
        if str(name).strip().lower() == task.lower():
            return task
    raise ConfigError("task", f"unknown task {name!r}; accepted: {', '.join(TASKS)}")


def split_path(data_dir: str | os.PathLike, task: str, split: str) -> Path:
    """``<data_dir>/<Task>/<split>.jsonl``, the task folder matched case-insensitively."""
    task = canonical_task(task)
    if split not in SPLITS:
        raise ConfigError("split", f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    folders = [data_dir / task]
    if data_dir.is_dir():
        folders += sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name.lower() == task.lower()
                          and p.name != task)
    for folder in folders:
        path = folder / f"{split}.jsonl"
        if path.is_file():
            return path
    looked = ", ".join(str(f) for f in folders) if data_dir.is_dir() else f"{data_dir} (no such folder)"
    raise DataError(str(data_dir), f"no {split}.jsonl for {task} (looked in {looked})")


def read_task(task: str, path: str | os.PathLike, *, skip_invalid: bool = False) -> Records:
    """Read one SuperGLUE jsonl file into flat, validated examples (see the module doc).

    MultiRC gives one example per answer option and ReCoRD one per question, so their
    sources (``file:line``) repeat. Unlabelled files give examples without ``label``.

    Raises:
        DataError: a missing file, a malformed line, or a line that does not fit the task
            (unless ``skip_invalid``, which skips such lines and lists them in ``skipped``).
    """
    task = canonical_task(task)
    convert = _CONVERTERS[task]
    lines = read_examples(path, skip_invalid=skip_invalid)
    examples: list[dict[str, Any]] = []
    sources: list[str] = []
    skipped = list(lines.skipped)
    for made, src in keep_valid(zip(lines.examples, lines.sources), convert, skip_invalid, skipped):
        examples.extend(made)
        sources.extend([src] * len(made))
    if not examples and skipped:
        raise DataError(str(path), f"no valid lines ({len(skipped)} skipped; first: {skipped[0]})")
    return Records(examples, sources, skipped)


def _read_split(task: str, data_dir: Path, split: str, skip_invalid: bool, notes: list[str]) -> Records | None:
    try:
        path = split_path(data_dir, task, split)
    except DataError:
        return None
    rec = read_task(task, path, skip_invalid=skip_invalid)
    if rec.skipped:
        notes.append(f"{path}: skipped {len(rec.skipped)} invalid example(s), first: {rec.skipped[0]}")
    return rec


def load_splits(task: str, data_dir: str | os.PathLike, *, setting: Literal["fewshot", "full"] = "fewshot",
                skip_invalid: bool = False, test: bool = False) -> tuple[dict[str, Records], list[str]]:
    """``train``, ``dev`` (model selection), ``dev32`` and ``val`` records of a task (those
    that exist), with ``test`` also SuperGLUE's unlabelled ``test`` split (which must exist),
    and notes on what was skipped or substituted.

    ``dev`` is ``dev32``; in the ``full`` setting without a ``dev32.jsonl`` it is a
    held-out 10% of train (at most 1,000 examples, the same ones every time).
    """
    data_dir = Path(data_dir)
    notes: list[str] = []
    out: dict[str, Records] = {}
    train_rec = _read_split(task, data_dir, "train", skip_invalid, notes)
    if train_rec is None:
        split_path(data_dir, task, "train")  # raises the clear "no train.jsonl" error
    assert train_rec is not None
    for s in ("dev32", "val"):
        rec = _read_split(task, data_dir, s, skip_invalid, notes)
        if rec is not None:
            out[s] = rec
    if "dev32" in out:
        out["dev"] = out["dev32"]
    elif setting == "full":
        n_dev = min(1000, max(1, len(train_rec) // 10))
        order = list(range(len(train_rec)))
        random.Random(0).shuffle(order)
        held, kept = sorted(order[:n_dev]), sorted(order[n_dev:])
        out["dev"] = Records([train_rec.examples[i] for i in held], [train_rec.sources[i] for i in held])
        train_rec = Records([train_rec.examples[i] for i in kept], [train_rec.sources[i] for i in kept])
        notes.append(f"no dev32.jsonl: selecting on {n_dev} held-out training examples")
    else:
        raise ConfigError("data_dir", f"{data_dir}: no dev32.jsonl for {task}; the few-shot setting selects on it")
    if "val" not in out:
        notes.append(f"no val.jsonl for {task}: reporting dev32 only")
    if test:
        split_path(data_dir, task, "test")  # raises the clear "no test.jsonl" error
        out["test"] = _read_split(task, data_dir, "test", skip_invalid, notes)  # type: ignore[assignment]
    out["train"] = train_rec
    return out, notes


def train_examples(task: str, records: Records, generative: bool) -> Records:
    """The training examples of a task: COPA mirrored, ReCoRD one per answer, and for
    generative WSC (``generative``) only the examples whose referent is right."""
    if task == "COPA":
        return mirror_copa(records)
    if task == "ReCoRD":
        return record_train_examples(records)
    if task == "WSC" and generative:
        keep = [i for i, ex in enumerate(records.examples) if ex.get("label") == "True"]
        return Records([records.examples[i] for i in keep], [records.sources[i] for i in keep])
    return records


def mirror_copa(records: Records) -> Records:
    """COPA training augmentation: the examples followed by copies with the two choices
    swapped and the label flipped (sources ``"<source> (mirrored)"``)."""
    mirrored, sources = [], []
    for ex, src in zip(records.examples, records.sources):
        m = dict(ex)
        m["choice1"], m["choice2"] = ex["choice2"], ex["choice1"]
        m["choice1_stem"], m["choice2_stem"] = ex["choice2_stem"], ex["choice1_stem"]
        m["choices"] = [ex["choices"][1], ex["choices"][0]]
        if "label" in ex:
            m["label"] = 1 - ex["label"]
        mirrored.append(m)
        sources.append(f"{src} (mirrored)")
    return Records(list(records.examples) + mirrored, list(records.sources) + sources,
                   list(records.skipped))


def record_train_examples(records: Records, max_negatives: int = 9, seed: int = 42) -> Records:
    """ReCoRD training examples: one per gold answer, ``choices`` = [answer] + up to
    ``max_negatives`` non-answer entities (shuffled by one ``random.Random(seed)``), label 0."""
    rng = random.Random(seed)
    examples, sources = [], []
    for ex, src in zip(records.examples, records.sources):
        answers = ex.get("answers") or []
        if not answers:
            raise DataError(src, "no gold answers; training needs labelled examples", field="answers")
        negatives = [e for e in ex["entities"] if e not in answers]
        for answer in answers:
            cands = list(negatives)
            if len(cands) > max_negatives:
                rng.shuffle(cands)
                cands = cands[:max_negatives]
            new = dict(ex)
            new["choices"] = [answer] + cands
            new["label"] = 0
            examples.append(new)
            sources.append(src)
    return Records(examples, sources, list(records.skipped))


# ---------------------------------------------------------------- reading and checking


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true/false", dict: "an object", list: "a list"}


def _typename(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _get(obj: dict, key: str, path: str, src: str, kind: type | tuple[type, ...]) -> Any:
    """``obj[key]`` checked for presence and type; ``path`` is the dotted field name."""
    if key not in obj:
        raise DataError(src, "missing", field=path)
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise DataError(src, f"expected {expected}, got {_typename(value)} {value!r:.60}", field=path)
    return value


def _objects(items: list, path: str, src: str) -> Iterator[tuple[str, dict]]:
    """``(f"{path}[i]", item)`` for each item of a list; every item must be an object."""
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise DataError(src, f"expected an object, got {_typename(item)}", field=item_path)
        yield item_path, item


def _class_label(task: str, obj: dict, src: str, path: str = "label", key: str = "label") -> str:
    """The label as its string in LABELS[task] (bools -> "True"/"False", 0/1 -> "0"/"1")."""
    accepted = LABELS[task]
    assert accepted is not None
    value = obj[key]
    if isinstance(value, bool):  # BoolQ/WiC/WSC files write true/false
        text = str(value)
    elif isinstance(value, int) and task == "MultiRC":  # MultiRC writes 0/1
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise DataError(src, f"unknown label {value!r}; accepted: {', '.join(accepted)}", field=path)
    if text not in accepted:
        raise DataError(src, f"unknown label {value!r}; accepted: {', '.join(accepted)}", field=path)
    return text


def _with_label(task: str, obj: dict, src: str, ex: dict) -> dict:
    if "label" in obj:
        ex["label"] = _class_label(task, obj, src)
    return ex


def _idx(obj: dict, src: str, path: str = "idx") -> Any:
    return _get(obj, "idx", path, src, (int, str))


def _strip_final(text: str) -> str:
    """``text`` without trailing punctuation (``.?!,;:``) and whitespace."""
    return text.rstrip(_FINAL_PUNCT + " \t\n\r")


def _lowercase_first(text: str) -> str:
    """Lowercase the first character, unless the first word is "I" (or "I'm", "I'd", ...)."""
    first = text.split(" ", 1)[0]
    if first == "I" or first.startswith("I'") or first.startswith("I\u2019") or not text:
        return text
    return text[0].lower() + text[1:]


# ---------------------------------------------------------------- tasks


def _boolq(obj: dict, src: str) -> list[dict]:
    ex = {"idx": _idx(obj, src),
          "passage": _get(obj, "passage", "passage", src, str),
          "question": _get(obj, "question", "question", src, str)}
    return [_with_label("BoolQ", obj, src, ex)]


def _cb(obj: dict, src: str) -> list[dict]:
    ex = {"idx": _idx(obj, src),
          "premise": _get(obj, "premise", "premise", src, str),
          "hypothesis": _get(obj, "hypothesis", "hypothesis", src, str)}
    return [_with_label("CB", obj, src, ex)]


def _rte(obj: dict, src: str) -> list[dict]:
    hyp = _get(obj, "hypothesis", "hypothesis", src, str)
    ex = {"idx": _idx(obj, src),
          "premise": _get(obj, "premise", "premise", src, str),
          "hypothesis": hyp,
          "hypothesis_stem": _strip_final(hyp)}
    return [_with_label("RTE", obj, src, ex)]


def _wic(obj: dict, src: str) -> list[dict]:
    ex: dict[str, Any] = {"idx": _idx(obj, src), "word": _get(obj, "word", "word", src, str)}
    for n in ("1", "2"):
        sent = _get(obj, "sentence" + n, "sentence" + n, src, str)
        start = _get(obj, "start" + n, "start" + n, src, int)
        end = _get(obj, "end" + n, "end" + n, src, int)
        if not 0 <= start < len(sent):
            raise DataError(src, f"start{n}={start} is outside sentence{n} (length {len(sent)})",
                            field="start" + n)
        if not start < end <= len(sent):
            raise DataError(src, f"end{n}={end} must be > start{n}={start} and <= the length of "
                            f"sentence{n} ({len(sent)})", field="end" + n)
        ex["sentence" + n] = sent
        ex["start" + n], ex["end" + n] = start, end
    return [_with_label("WiC", obj, src, ex)]


def _copa(obj: dict, src: str) -> list[dict]:
    premise = _get(obj, "premise", "premise", src, str)
    c1 = _get(obj, "choice1", "choice1", src, str)
    c2 = _get(obj, "choice2", "choice2", src, str)
    question = _get(obj, "question", "question", src, str)
    if question not in ("cause", "effect"):
        raise DataError(src, f"unknown question {question!r}; accepted: cause, effect", field="question")
    s1, s2 = _lowercase_first(_strip_final(c1)), _lowercase_first(_strip_final(c2))
    ex: dict[str, Any] = {
        "idx": _idx(obj, src), "premise": premise, "choice1": c1, "choice2": c2, "question": question,
        "connective": "because" if question == "cause" else "so",
        "premise_stem": _strip_final(premise), "choice1_stem": s1, "choice2_stem": s2,
        "choices": [s1, s2],
    }
    if "label" in obj:
        label = obj["label"]
        if isinstance(label, str) and label in ("0", "1"):
            label = int(label)
        if type(label) is not int or label not in (0, 1):
            raise DataError(src, f"unknown label {label!r}; accepted: 0, 1", field="label")
        ex["label"] = label
    return [ex]


def _norm_word(word: str) -> str:
    return word.strip(_EDGE_PUNCT).lower()


def _wsc(obj: dict, src: str) -> list[dict]:
    text = _get(obj, "text", "text", src, str)
    target = _get(obj, "target", "target", src, dict)
    span1 = _get(target, "span1_text", "target.span1_text", src, str)
    span2 = _get(target, "span2_text", "target.span2_text", src, str)
    i1 = _get(target, "span1_index", "target.span1_index", src, int)
    i2 = _get(target, "span2_index", "target.span2_index", src, int)
    words = text.split(" ")  # SuperGLUE's word indices count single-space-separated words
    span1_words = [_norm_word(w) for w in span1.split(" ")]
    pronoun = _norm_word(span2)

    def span1_at(i: int) -> bool:
        return 0 <= i and [_norm_word(w) for w in words[i:i + len(span1_words)]] == span1_words

    def pronoun_at(i: int) -> bool:
        return 0 <= i < len(words) and _norm_word(words[i]) == pronoun

    # Repairs as PET's WSC processor: a word index one off (val idx 42: "use it" points at
    # "use"), and a pronoun glued to punctuation (train idx 137: 'him,"'), which the
    # punctuation-stripping comparison accepts and the marking below splits off.
    for fix in (0, -1, 1):
        if span1_at(i1 + fix):
            i1 += fix
            break
    else:
        found = (repr(" ".join(words[i1:i1 + len(span1_words)])) if 0 <= i1 < len(words)
                 else f"nothing (the text has {len(words)} words)")
        raise DataError(src, f"span1_text {span1!r} is not at word {i1} (±1) of the text; found {found}",
                        field="target.span1_index")
    for fix in (0, -1, 1):
        if pronoun_at(i2 + fix):
            i2 += fix
            break
    else:
        found = repr(words[i2]) if 0 <= i2 < len(words) else f"nothing (the text has {len(words)} words)"
        raise DataError(src, f"span2_text {span2!r} is not at word {i2} (±1) of the text; found {found}",
                        field="target.span2_index")
    word = words[i2]
    core = word.strip(_EDGE_PUNCT)
    start = word.find(core)
    marked = words[:i2] + [f"{word[:start]}*{core}*{word[start + len(core):]}"] + words[i2 + 1:]
    ex = {"idx": _idx(obj, src), "text": text, "span1": span1, "span2": span2,
          "span1_index": i1, "span2_index": i2, "text_marked": " ".join(marked), "choices": [span1]}
    return [_with_label("WSC", obj, src, ex)]


def _multirc(obj: dict, src: str) -> list[dict]:
    pidx = _idx(obj, src)
    passage = _get(obj, "passage", "passage", src, dict)
    text = _get(passage, "text", "passage.text", src, str)
    questions = _get(passage, "questions", "passage.questions", src, list)
    labelled = any(isinstance(q, dict) and isinstance(q.get("answers"), list)
                   and any(isinstance(a, dict) and "label" in a for a in q["answers"]) for q in questions)
    out = []
    for qpath, q in _objects(questions, "passage.questions", src):
        question = _get(q, "question", qpath + ".question", src, str)
        qidx = _get(q, "idx", qpath + ".idx", src, (int, str))
        answers = _get(q, "answers", qpath + ".answers", src, list)
        for apath, a in _objects(answers, qpath + ".answers", src):
            ex = {"idx": _get(a, "idx", apath + ".idx", src, (int, str)), "passage": text,
                  "question": question, "answer": _get(a, "text", apath + ".text", src, str),
                  "question_idx": qidx, "passage_idx": pidx}
            if "label" in a:
                ex["label"] = _class_label("MultiRC", a, src, path=apath + ".label")
            elif labelled:  # other answers on this line have labels: this one must too
                raise DataError(src, "missing", field=apath + ".label")
            out.append(ex)
    return out


def _record(obj: dict, src: str) -> list[dict]:
    pidx = _idx(obj, src)
    passage = _get(obj, "passage", "passage", src, dict)
    text = _get(passage, "text", "passage.text", src, str)
    spans = _get(passage, "entities", "passage.entities", src, list)
    entities: list[str] = []
    for epath, ent in _objects(spans, "passage.entities", src):
        start, end = _span(ent, epath, text, src)
        name = text[start:end + 1]
        if name not in entities:
            entities.append(name)
    qas = _get(obj, "qas", "qas", src, list)
    shown = text.replace("@highlight\n", "- ")
    out = []
    for qpath, qa in _objects(qas, "qas", src):
        query = _get(qa, "query", qpath + ".query", src, str)
        if query.count("@placeholder") != 1:
            raise DataError(src, f"the query must hold exactly one @placeholder, found "
                            f"{query.count('@placeholder')}: {query!r:.80}", field=qpath + ".query")
        left, right = query.split("@placeholder")
        ex: dict[str, Any] = {"idx": _get(qa, "idx", qpath + ".idx", src, (int, str)), "passage_idx": pidx,
                              "passage": shown, "query": query, "query_left": left, "query_right": right,
                              "entities": list(entities), "choices": list(entities)}
        answers: list[str] = []
        golds = _get(qa, "answers", qpath + ".answers", src, list) if "answers" in qa else []
        for apath, ans in _objects(golds, qpath + ".answers", src):
            start, end = _span(ans, apath, text, src)
            answer = _get(ans, "text", apath + ".text", src, str)
            if text[start:end + 1] != answer:
                raise DataError(src, f"text {answer!r} differs from the passage at {start}..{end} "
                                f"(end inclusive): {text[start:end + 1]!r}", field=apath)
            if answer not in answers:
                answers.append(answer)
        ex["answers"] = answers
        if answers:
            found = [a for a in answers if a in entities]
            if not found:
                raise DataError(src, f"no gold answer {answers!r:.80} is among the passage's "
                                f"{len(entities)} entities", field=qpath + ".answers")
            ex["label"] = entities.index(found[0])
        out.append(ex)
    return out


def _span(obj: dict, path: str, text: str, src: str) -> tuple[int, int]:
    """A ReCoRD (start, end) pair, end inclusive, checked against the passage."""
    start = _get(obj, "start", path + ".start", src, int)
    end = _get(obj, "end", path + ".end", src, int)
    if not 0 <= start <= end < len(text):
        raise DataError(src, f"span {start}..{end} (end inclusive) is outside the passage "
                        f"(length {len(text)})", field=path)
    return start, end


_CONVERTERS: dict[str, Callable[[dict, str], list[dict]]] = {
    "BoolQ": _boolq, "CB": _cb, "COPA": _copa, "MultiRC": _multirc, "ReCoRD": _record,
    "RTE": _rte, "WiC": _wic, "WSC": _wsc,
}
