"""The bad-input corpus: every malformed input to every command is one line on stderr that
names the file (and line or field), exit code 2, and no existing file changes.

The fixtures (tiny models, data, a trained run, a LAMA and a FewGLUE folder) are built
once; each case writes its own bad input into a folder of its own, then runs the command
in-process.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import SHARED_DATA, saved_model, sentiment
from ptune.checkpoint import CONFIG_NAME, config_digest
from ptune.cli import main
from ptune.lock import LOCK_NAME

VERB = '{"pos": "yes", "neg": "no"}'
TEMPLATE = "{text} [P*2] [MASK]"
LAMA = Path(__file__).resolve().parents[2] / "src" / "ptune" / "world" / "data" / "tiny-seed0" / "lama"
FEWGLUE = SHARED_DATA / "fewglue"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Models, data and a trained run shared by every case (never written by a case)."""
    r = tmp_path_factory.mktemp("corpus")
    saved_model(r / "gpt2", "gpt2")
    saved_model(r / "bert", "bert")
    for name, rows in (("train", sentiment(16)), ("dev", sentiment(8, seed=1))):
        (r / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    assert main(["train", "--model", str(r / "gpt2"), "--train", str(r / "train.jsonl"), "--dev", str(r / "dev.jsonl"),
                 "--template", TEMPLATE, "--verbalizer", VERB, "--output", str(r / "run"), "--steps", "2",
                 "--batch-size", "8", "--eval-every", "2", "--encoder", "mlp"]) == 0
    (r / "cases").mkdir()
    return r


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and LOCK_NAME not in p.name}


# ----------------------------------------------------------------------------- helpers to build cases
def _w(d: Path, name: str, content: str | bytes) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def _train(r: Path, d: Path, *extra: str, train: Path | None = None, model: str = "gpt2") -> list[str]:
    args = {"--model": str(r / model), "--train": str(train or r / "train.jsonl"), "--dev": str(r / "dev.jsonl"),
            "--template": TEMPLATE, "--verbalizer": VERB, "--output": str(d / "out"), "--steps": "2",
            "--batch-size": "8"}
    extra = list(extra)
    for i, a in enumerate(extra):  # a flag given in extra replaces the default
        if a in args and i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            args.pop(a)
    return ["train", *[x for kv in args.items() for x in kv], *extra]


def _ckpt(r: Path, d: Path) -> Path:
    """A copy of the trained run's best/ checkpoint to damage."""
    shutil.copytree(r / "run" / "best", d / "ck")
    return d / "ck"


def _edit_config(ck: Path, change: Callable[[dict], None], rehash: bool = False) -> None:
    meta = json.loads((ck / CONFIG_NAME).read_text())
    change(meta)
    if rehash:
        meta["config_sha256"] = config_digest(meta)
    (ck / CONFIG_NAME).write_text(json.dumps(meta))


def _edit_tensors(ck: Path, change: Callable[[dict], None]) -> None:
    """Change the prompt tensors and record their new hash (so that the tensor checks, not
    the hash, must catch it)."""
    import hashlib

    tensors = load_file(str(ck / "prompt.safetensors"))
    change(tensors)
    save_file(tensors, str(ck / "prompt.safetensors"))
    digest = hashlib.sha256((ck / "prompt.safetensors").read_bytes()).hexdigest()
    _edit_config(ck, lambda m: m["sha256"].update({"prompt.safetensors": digest}))


def _eval(ck: Path | str, r: Path, *extra: str, data: Path | None = None, command: str = "eval") -> list[str]:
    return [command, "--checkpoint", str(ck), "--data", str(data or r / "dev.jsonl"), *extra]


def _probe(r: Path, d: Path, *extra: str, data_dir: Path = LAMA) -> list[str]:
    return ["probe", "--model", str(r / "gpt2"), "--data-dir", str(data_dir), "--output", str(d / "out"),
            "--relations", "P19", "--methods", "majority", *extra]


def _glue(r: Path, d: Path, *extra: str, data_dir: Path = FEWGLUE, task: str = "RTE") -> list[str]:
    return ["superglue", "--task", task, "--model", str(r / "bert"), "--data-dir", str(data_dir),
            "--output", str(d / "out"), "--seeds", "1", "--max-steps", "1", "--limit-eval", "2", *extra]


def _glue_data(d: Path, task: str, split: str, edit: Callable[[list[str]], list[str]]) -> Path:
    data = d / "fewglue"
    shutil.copytree(FEWGLUE / task, data / task)
    lines = (data / task / f"{split}.jsonl").read_text().splitlines()
    (data / task / f"{split}.jsonl").write_text("\n".join(edit(lines)) + "\n")
    return data


def _append(folder: Path, name: str, data: bytes) -> Path:
    with open(folder / name, "ab") as fh:
        fh.write(data)
    return folder


def _lama_copy(d: Path) -> Path:
    shutil.copytree(LAMA, d / "lama")
    return d / "lama"


def _hold_lock(folder: Path) -> None:
    """Hold ``folder``'s lock the way another process would (another open file)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"pid 4242 on otherhost, since 2020-01-01 00:00:00, ptune train\n")
    _HELD.append(fd)


_HELD: list[int] = []
JL = "train.jsonl"
GOOD = '{"text": "the movie was great .", "label": "pos"}\n'


@dataclass
class Case:
    id: str
    build: Callable[[Path, Path], list[str]]  # (root, case folder) -> argv
    says: tuple[str, ...]  # substrings of the error line ("{d}": the case folder, "{r}": the root)


def _data_case(id: str, content: str | bytes, says: str, name: str = JL) -> Case:
    return Case(id, lambda r, d: _train(r, d, train=_w(d, name, content)), ("{d}/" + name + says,))


CASES: list[Case] = [
    # ------------------------------------------------------------ training data: JSON lines
    _data_case("jsonl-syntax", GOOD + '{"text": "b", "label": "neg"\n', ":2: invalid JSON at column"),
    _data_case("jsonl-not-object", GOOD + "[1, 2]\n", ":2: expected a JSON object, got list"),
    _data_case("jsonl-string-line", '"just text"\n', ":1: expected a JSON object, got str"),
    _data_case("jsonl-nan", '{"text": NaN, "label": "pos"}\n', ":1: invalid JSON: NaN is not JSON"),
    _data_case("jsonl-infinity", '{"text": "a", "label": "pos", "w": Infinity}\n', ":1: invalid JSON: Infinity"),
    _data_case("jsonl-duplicate-key", '{"text": "a", "text": "b", "label": "pos"}\n', ":1: invalid JSON: the key 'text'"),
    _data_case("jsonl-not-utf8", GOOD.encode() + b'{"text": "caf\xe9", "label": "pos"}\n', ":2: not UTF-8 text"),
    _data_case("jsonl-latin1-first", b'{"text": "\xff", "label": "pos"}\n', ":1: not UTF-8 text (byte 0xff"),
    _data_case("jsonl-missing-field", GOOD + '{"txt": "b", "label": "neg"}\n', ":2: field 'text': missing"),
    _data_case("jsonl-null-field", '{"text": null, "label": "pos"}\n', ":1: field 'text': is null"),
    _data_case("jsonl-list-field", '{"text": ["a", "b"], "label": "pos"}\n', ":1: field 'text': expected text, got list"),
    _data_case("jsonl-dict-field", '{"text": {"a": 1}, "label": "pos"}\n', ":1: field 'text': expected text, got dict"),
    _data_case("jsonl-number-field", '{"text": 3.5, "label": "pos"}\n', ":1: field 'text': expected text, got float"),
    _data_case("jsonl-bool-field", '{"text": true, "label": "pos"}\n', ":1: field 'text': expected text, got bool"),
    _data_case("jsonl-unknown-label", GOOD + '{"text": "b", "label": "meh"}\n', ":2: field 'label': 'meh' is not a label"),
    _data_case("jsonl-no-label", '{"text": "a"}\n', ":1: field 'label': missing"),
    _data_case("jsonl-list-label", '{"text": "a", "label": ["pos"]}\n', ":1: field 'label':"),
    _data_case("jsonl-lone-surrogate", '{"text": "a\\ud800", "label": "pos"}\n', ":1: field 'text': holds a lone surrogate"),
    _data_case("jsonl-empty", "", ": no examples"),
    _data_case("jsonl-blank-lines", "\n\n  \n", ": no examples"),
    _data_case("jsonl-deep-nesting", '{"text": ' + "[" * 100000 + "]" * 100000 + "}\n", ":1: invalid JSON"),
    Case("train-missing-file", lambda r, d: _train(r, d, train=d / "none.jsonl"), ("{d}/none.jsonl: no such file",)),
    Case("train-unknown-format", lambda r, d: _train(r, d, train=_w(d, "t.xml", "<a/>")), ("{d}/t.xml",)),
    Case("train-folder-named-jsonl", lambda r, d: _train(r, d, train=(d / "x.jsonl").mkdir() or d / "x.jsonl"),
         ("{d}/x.jsonl",)),
    Case("dev-syntax", lambda r, d: _train(r, d, "--dev", str(_w(d, "dev.jsonl", GOOD + "{oops\n"))),
         ("{d}/dev.jsonl:2: invalid JSON",)),
    Case("dev-not-utf8", lambda r, d: _train(r, d, "--dev", str(_w(d, "dev.jsonl", b'{"text": "\xc3\x28"}\n'))),
         ("{d}/dev.jsonl:1: not UTF-8",)),
    Case("dev-unknown-label", lambda r, d: _train(r, d, "--dev", str(_w(d, "dev.jsonl", '{"text": "a", "label": 5}\n'))),
         ("{d}/dev.jsonl:1: field 'label'",)),
    # ------------------------------------------------------------ training data: CSV / TSV
    _data_case("csv-not-utf8", b"text,label\ngood,pos\nbad\xff,neg\n", ":3: not UTF-8", name="t.csv"),
    _data_case("csv-huge-field", 'text,label\n"' + "x" * 140_000 + '",pos\n', ":2: not valid CSV: field larger", name="t.csv"),
    _data_case("csv-too-many-values", "text,label\na,pos,extra\n", ":2: 3 values for 2 columns", name="t.csv"),
    _data_case("csv-too-few-values", "text,label\na\n", ":2: fewer values than columns", name="t.csv"),
    _data_case("csv-duplicate-column", "text,text,label\na,b,pos\n", ":1: the column 'text' is named twice", name="t.csv"),
    _data_case("csv-empty", "", ":1: no header row", name="t.csv"),
    _data_case("csv-header-only", "text,label\n", ": no examples", name="t.csv"),
    _data_case("csv-missing-column", "txt,label\na,pos\n", ":2: field 'text': missing", name="t.csv"),
    _data_case("csv-unknown-label", "text,label\na,maybe\n", ":2: field 'label': 'maybe'", name="t.csv"),
    _data_case("tsv-too-many", "text\tlabel\na\tpos\tx\n", ":2: 3 values for 2 columns", name="t.tsv"),
    _data_case("tsv-not-utf8", b"text\tlabel\n\x80\tpos\n", ":2: not UTF-8", name="t.tsv"),
    # ------------------------------------------------------------ templates
    *[Case(f"template-{name}", (lambda t: lambda r, d: _train(r, d, "--template", t))(t), says) for name, t, says in [
        ("unbalanced-open", "{text} [P*3 [MASK]", ("column 8",)),
        ("unbalanced-close", "{text} ] [MASK]", ("column 8", "unbalanced")),
        ("unknown-marker", "{text} [Q] [MASK]", ("column 8", "unknown marker [Q]")),
        ("bad-field-name", "{1text} [MASK]", ("column 1", "bad field name")),
        ("no-answer", "{text} [P*3]", ("no answer slot",)),
        ("two-answers", "{text} [MASK] [MASK]", ("column 15", "a second answer slot")),
        ("zero-pseudo", "{text} [P*0] [MASK]", ("column 8", "the count must be 1 to 512")),
        ("too-many-per-marker", "{text} [P*513] [MASK]", ("column 8", "1 to 512")),
        ("huge-digit-count", "{text} [P*" + "9" * 4301 + "] [MASK]", ("a template has at most 4096",)),
        ("many-digits", "{text} [P*99999999999] [MASK]", ("column 8", "1 to 512")),
        ("unicode-digits", "{text} [P*\u0663] [MASK]", ("column 8", "unknown marker")),
        ("fullwidth-digits", "{text} [P*\uff13] [MASK]", ("column 8", "unknown marker")),
        ("too-long", "{text} [MASK] " + "word " * 1000, ("characters; a template has at most 4096",)),
        ("too-many-pseudo", "{text} " + "[P*512] " * 3 + "[MASK]", ("more than 1024 pseudo tokens",)),
        ("million-pseudo", "[P*500]" * 2000 + "{text} [MASK]", ("a template has at most",)),
        ("trailing-backslash", "{text} [MASK] \\", ("backslash",)),
        ("empty-init", "{text} [P:] [MASK]", ("[P:word] needs a word",)),
        ("unknown-field-option", "{text:cut} [MASK]", ("unknown field option 'cut'",)),
        ("field-after-mask-causal", "[P*2] [MASK] {text}", ("column 14", "{text} comes after the answer slot")),
        ("sep-without-sep-token", "{text} [SEP] [MASK]", ("[SEP]: the tokenizer has no separator",)),
        ("empty", "", ("template",)),
        ("nested-brace", "{te{xt} [MASK]", ("column 1", "unbalanced")),
        ("lone-surrogate", "{text} \udcff [MASK]", ("column 8", "lone surrogate")),
    ]],
    Case("template-masked-on-causal", lambda r, d: _train(r, d, "--kind", "masked"), ("cannot load", "MaskedLM")),
    Case("template-field-not-in-data", lambda r, d: _train(r, d, "--template", "{premise} [MASK]"),
         ("{r}/train.jsonl:1: field 'premise': missing",)),
    # ------------------------------------------------------------ verbalizers
    *[Case(f"verbalizer-{name}", (lambda v: lambda r, d: _train(r, d, "--verbalizer", v))(v), says) for name, v, says in [
        ("invalid-json", '{"pos": "yes"', ("invalid JSON",)),
        ("number-value", '{"pos": 1, "neg": "no"}', ("verbalizer['pos']", "non-empty words, got 1")),
        ("null-value", '{"pos": null, "neg": "no"}', ("verbalizer['pos']",)),
        ("dict-value", '{"pos": {"a": "b"}, "neg": "no"}', ("verbalizer['pos']",)),
        ("empty-list", '{"pos": [], "neg": "no"}', ("verbalizer['pos']",)),
        ("empty-word", '{"pos": "  ", "neg": "no"}', ("verbalizer['pos']",)),
        ("list-with-number", '{"pos": ["yes", 2], "neg": "no"}', ("verbalizer['pos']",)),
        ("duplicate-key", '{"pos": "yes", "pos": "good", "neg": "no"}', ("the key 'pos' is given twice",)),
        ("not-object", '["yes", "no"]', ("neither inline JSON nor a file",)),
        ("empty-object", "{}", ("verbalizer", "non-empty mapping")),
        ("nan-value", '{"pos": NaN, "neg": "no"}', ("NaN is not JSON",)),
        ("empty-label", '{"": "yes", "neg": "no"}', ("a label must be a non-empty string",)),
        ("lone-surrogate", '{"pos": "\\ud800", "neg": "no"}', ("verbalizer['pos']",)),
        ("missing-file", "labels-nowhere.json", ("neither inline JSON nor a file",)),
    ]],
    Case("verbalizer-file-not-utf8", lambda r, d: _train(r, d, "--verbalizer", str(_w(d, "v.json", b'{"pos": "\xff"}'))),
         ("{d}/v.json:1: not UTF-8",)),
    Case("verbalizer-file-syntax", lambda r, d: _train(r, d, "--verbalizer", str(_w(d, "v.json", '{\n"pos": "yes",\n}'))),
         ("{d}/v.json", "line 3")),
    Case("verbalizer-file-list", lambda r, d: _train(r, d, "--verbalizer", str(_w(d, "v.json", '["a"]'))),
         ("{d}/v.json: expected a JSON object",)),
    # ------------------------------------------------------------ flags
    *[Case(f"flag-{name}", (lambda a: lambda r, d: _train(r, d, *a))(a), says) for name, a, says in [
        ("batch-size-zero", ["--batch-size", "0"], ("batch_size: must be a positive integer, got 0",)),
        ("batch-size-negative", ["--batch-size", "-1"], ("batch_size", "-1")),
        ("batch-size-text", ["--batch-size", "many"], ("--batch-size", "expected an integer")),
        ("batch-size-over-data", ["--batch-size", "64"], ("batch_size: 64 is larger than the 16 training examples",)),
        ("steps-zero", ["--steps", "0"], ("steps: must be a positive integer",)),
        ("steps-and-epochs", ["--epochs", "2"], ("give steps or epochs, not both",)),
        ("lr-inf", ["--lr", "inf"], ("--lr: expected a number, got 'inf'",)),
        ("lr-nan", ["--lr", "nan"], ("--lr: expected a number, got 'nan'",)),
        ("lr-negative", ["--lr", "-1"], ("lr: must be positive",)),
        ("lr-text", ["--lr", "fast"], ("--lr", "expected a number")),
        ("lm-lr-infinity", ["--lm-lr", "Infinity"], ("--lm-lr: expected a number",)),
        ("weight-decay-inf", ["--weight-decay", "1e999"], ("--weight-decay: expected a number",)),
        ("max-length-one", ["--max-length", "1"], ("max_length: must be at least 2",)),
        ("max-length-over-positions", ["--max-length", "100000"], ("max_length: 100000 is more than the",)),
        ("encoder-unknown", ["--encoder", "gru"], ("--encoder", "gru")),
        ("grad-accum-indivisible", ["--grad-accum", "3"], ("grad_accum", "not divisible")),
        ("gamma-over-one", ["--gamma", "2"], ("gamma: must be in (0, 1]",)),
        ("warmup-negative", ["--warmup-steps", "-1"], ("warmup_steps",)),
        ("eval-every-zero", ["--eval-every", "0"], ("eval_every: must be a positive integer",)),
        ("patience-zero", ["--patience", "0"], ("patience",)),
        ("max-grad-norm-zero", ["--max-grad-norm", "0"], ("max_grad_norm: must be positive",)),
        ("seed-text", ["--seed", "x"], ("--seed", "expected an integer")),
        ("unknown-flag", ["--learning-rate", "1"], ("unrecognized arguments: --learning-rate",)),
        ("schedule-unknown", ["--schedule", "cosine"], ("--schedule", "cosine")),
        ("lstm-dropout-one", ["--encoder-lstm-dropout", "1"], ("lstm_dropout",)),
    ]],
    Case("flag-missing-template", lambda r, d: [a for a in _train(r, d) if a not in ("--template", TEMPLATE)],
         ("the following options are required: --template",)),
    Case("model-missing", lambda r, d: _train(r, d, "--model", str(d / "no-model")), ("cannot load", "{d}/no-model")),
    Case("model-damaged-weights", lambda r, d: _train(r, d, "--model", str(_damaged_model(r, d))),
         ("cannot load", "{d}/m")),
    Case("model-remote-code", lambda r, d: _train(r, d, "--model", str(_remote_code_model(d))),
         ("cannot load", "{d}/custom", "only with --trust-remote-code")),
    # ------------------------------------------------------------ config files
    *[Case(f"config-{name}", (lambda n, t: lambda r, d: _train(r, d, "--config", str(_w(d, n, t))))(n, t), says)
      for name, n, t, says in [
        ("json-syntax", "c.json", '{"lr": 1e-3,}', ("{d}/c.json: invalid JSON at line 1",)),
        ("json-nan", "c.json", '{"lr": NaN}', ("{d}/c.json", "NaN is not JSON")),
        ("json-duplicate", "c.json", '{"lr": 0.1, "lr": 0.2}', ("{d}/c.json", "the key 'lr' is given twice")),
        ("json-list", "c.json", "[1]", ("{d}/c.json: expected a mapping",)),
        ("unknown-key", "c.yaml", "lrate: 0.1\n", ("{d}/c.yaml: lrate: unknown key",)),
        ("wrong-type", "c.yaml", "batch_size: [1]\n", ("{d}/c.yaml: batch_size: expected an integer",)),
        ("yaml-nan", "c.yaml", "lr: .nan\n", ("{d}/c.yaml: lr", "finite")),
        ("yaml-syntax", "c.yaml", "a: [1\n", ("{d}/c.yaml: invalid YAML",)),
        ("yaml-duplicate", "c.yaml", "lr: 0.1\nsteps: 2\nlr: 0.2\n",
         ("{d}/c.yaml: invalid YAML at line 3: the key 'lr' is given twice (lines 1 and 3)",)),
        ("yaml-nested-duplicate", "c.yaml", "prompt:\n  template: '{text} [MASK]'\n  template: '[P] {text} [MASK]'\n",
         ("{d}/c.yaml: invalid YAML at line 3: the key 'template' is given twice (lines 2 and 3)",)),
        ("yaml-flow-duplicate", "c.yaml", "train: {lr: 0.1, lr: 0.2}\n",
         ("{d}/c.yaml: invalid YAML at line 1: the key 'lr' is given twice (line 1)",)),
        ("toml-syntax", "c.toml", "a = \n", ("{d}/c.toml: invalid TOML",)),
        ("toml-inf", "c.toml", "lr = inf\n", ("{d}/c.toml: lr", "finite")),
        ("not-utf8", "c.yaml", b"lr: \xff\n", ("{d}/c.yaml:1: not UTF-8",)),
        ("unknown-format", "c.ini", "[a]\n", ("{d}/c.ini: unknown config format",)),
        ("bad-value", "c.yaml", "eval_batch_size: 0\n", ("{d}/c.yaml: train.eval_batch_size: must be a positive",)),
        ("template-wrong-type", "c.yaml", "template: 5\n", ("{d}/c.yaml: template",)),
      ]],
    Case("config-missing", lambda r, d: _train(r, d, "--config", str(d / "none.yaml")), ("{d}/none.yaml: no such config",)),
    # ------------------------------------------------------------ checkpoints
    Case("ckpt-not-a-checkpoint", lambda r, d: _eval(d, r), ("{d}: not a ptune checkpoint",)),
    Case("ckpt-config-syntax", lambda r, d: _eval((_w(_ckpt(r, d), CONFIG_NAME, "{oops").parent), r),
         ("{d}/ck/ptune_config.json", "invalid JSON at line 1")),
    Case("ckpt-config-nan", lambda r, d: _eval((_w(_ckpt(r, d), CONFIG_NAME, '{"base": NaN}').parent), r),
         ("{d}/ck/ptune_config.json", "NaN is not JSON")),
    Case("ckpt-config-list", lambda r, d: _eval((_w(_ckpt(r, d), CONFIG_NAME, "[]").parent), r),
         ("{d}/ck/ptune_config.json: not a ptune checkpoint config",)),
    Case("ckpt-config-not-utf8", lambda r, d: _eval((_w(_ckpt(r, d), CONFIG_NAME, b"{\xfe}").parent), r),
         ("{d}/ck/ptune_config.json:1: not UTF-8",)),
    *[Case(f"ckpt-meta-{name}", (lambda f, h: lambda r, d: _eval(_edit_config(ck := _ckpt(r, d), f, h) or ck, r))(f, h),
           ("{d}/ck/",) + says) for name, f, h, says in [
        ("base-not-object", lambda m: m.update(base=[1]), False, ("base: expected dict",)),
        ("labels-numbers", lambda m: m.update(labels=[1, 2]), False, ("labels: expected a list of strings",)),
        ("lm-included-text", lambda m: m.update(lm_included="yes"), False, ("lm_included: expected bool",)),
        ("n-pseudo-text", lambda m: m.update(n_pseudo="2"), False, ("n_pseudo: expected int",)),
        ("sha256-list", lambda m: m.update(sha256=["x"]), False, ("sha256: expected dict",)),
        ("max-length-text", lambda m: m["prompt"].update(max_length="long"), True, ("prompt.max_length",)),
        ("encoder-number", lambda m: m["prompt"].update(encoder=5), True, ("prompt.encoder",)),
        ("verbalizer-number", lambda m: m["prompt"].update(verbalizer={"pos": 1, "neg": "no"}), True,
         ("verbalizer['pos']",)),
        ("template-number", lambda m: m["prompt"].update(template=3), True, ("prompt.template",)),
        ("unknown-prompt-key", lambda m: m["prompt"].update(colour="red"), True, ("prompt.colour: unknown key",)),
        ("edited-template", lambda m: m["prompt"].update(template="{text} [MASK] [P*2]"), False,
         ("changed after the checkpoint was saved",)),
        ("edited-verbalizer", lambda m: m["prompt"].update(verbalizer={"pos": ["good"], "neg": ["no"]}), False,
         ("changed after the checkpoint was saved",)),
        ("edited-labels-order", lambda m: m.update(labels=["neg", "pos"]), True, ("recorded order",)),
        ("n-pseudo-wrong", lambda m: m.update(n_pseudo=5), True, ("n_pseudo 5 but the template has 2",)),
        ("hash-path-escape", lambda m: m["sha256"].update({"../x": "0"}), False, ("not a file inside the checkpoint",)),
        ("hash-file-missing", lambda m: m["sha256"].update({"extra.bin": "0"}), False, ("{d}/ck/extra.bin: missing",)),
    ]],
    Case("ckpt-weights-edited", lambda r, d: _eval(_flip_byte(_ckpt(r, d) / "prompt.safetensors").parent, r),
         ("{d}/ck/prompt.safetensors: its content differs from the SHA-256",)),
    Case("ckpt-weights-missing", lambda r, d: _eval(_unlink(_ckpt(r, d) / "prompt.safetensors").parent, r),
         ("{d}/ck/prompt.safetensors: missing",)),
    *[Case(f"ckpt-weights-{name}", (lambda f: lambda r, d: _eval(_rewrite(ck := _ckpt(r, d), f) or ck, r))(f),
           ("{d}/ck/prompt.safetensors",) + says) for name, f, says in [
        ("truncated", lambda b: b[: len(b) // 2], ("not a readable safetensors file",)),
        ("garbage", lambda b: b"\x00" * 64, ("not a readable safetensors file",)),
        ("empty", lambda b: b"", ("not a readable safetensors file",)),
        ("header-size-lies", lambda b: b"\xff" * 8 + b[8:], ("not a readable safetensors file",)),
        ("header-not-json", lambda b: b[:8] + b"[" + b[9:], ("not a readable safetensors file",)),
    ]],
    *[Case(f"ckpt-tensor-{name}", (lambda f: lambda r, d: _eval(_edit_tensors(ck := _ckpt(r, d), f) or ck, r))(f),
           ("{d}/ck/prompt.safetensors",) + says) for name, f, says in [
        ("pseudo-nan", lambda t: t["pseudo_embeddings"].fill_(float("nan")), ("pseudo_embeddings holds NaN",)),
        ("pseudo-inf", lambda t: t["pseudo_embeddings"].__setitem__((0, 0), float("inf")), ("holds NaN or infinite",)),
        ("pseudo-int", lambda t: t.update(pseudo_embeddings=t["pseudo_embeddings"].long()), ("pseudo_embeddings is torch.int64",)),
        ("pseudo-shape", lambda t: t.update(pseudo_embeddings=torch.zeros(3, 8)), ("wrong shape ['pseudo_embeddings']",)),
        ("encoder-missing", lambda t: t.pop(next(k for k in t if k.startswith("encoder."))), ("missing [",)),
        ("extra-tensor", lambda t: t.update(extra=torch.zeros(1)), ("unexpected ['extra']",)),
        ("encoder-nan", lambda t: next(v for k, v in t.items() if k.startswith("encoder.")).fill_(float("nan")),
         ("holds NaN or infinite",)),
    ]],
    Case("ckpt-other-base", lambda r, d: _eval(r / "run", r, "--model", str(r / "bert")),
         ("{r}/run/best: trained for another base model",)),
    Case("ckpt-base-missing", lambda r, d: _eval(r / "run", r, "--model", str(d / "gone")), ("cannot load", "{d}/gone")),
    Case("eval-data-missing", lambda r, d: _eval(r / "run", r, data=d / "none.jsonl"), ("{d}/none.jsonl: no such file",)),
    Case("eval-data-bad-label", lambda r, d: _eval(r / "run", r, data=_w(d, "e.jsonl", '{"text": "a", "label": "x"}\n')),
         ("{d}/e.jsonl:1: field 'label'",)),
    Case("eval-data-no-label", lambda r, d: _eval(r / "run", r, data=_w(d, "e.jsonl", '{"text": "a"}\n')),
         ("{d}/e.jsonl:1: field 'label': missing",)),
    Case("eval-batch-size-zero", lambda r, d: _eval(r / "run", r, "--batch-size", "0"), ("eval_batch_size", "got 0")),
    Case("eval-batch-size-negative", lambda r, d: _eval(r / "run", r, "--batch-size", "-1"), ("eval_batch_size",)),
    Case("predict-batch-size-zero", lambda r, d: _eval(r / "run", r, "--batch-size", "0", command="predict"),
         ("eval_batch_size", "got 0")),
    Case("predict-data-not-utf8", lambda r, d: _eval(r / "run", r, data=_w(d, "p.jsonl", b'{"text": "\xff"}\n'),
                                                      command="predict"), ("{d}/p.jsonl:1: not UTF-8",)),
    Case("predict-data-list-field", lambda r, d: _eval(r / "run", r, data=_w(d, "p.jsonl", '{"text": [1]}\n'),
                                                        command="predict"), ("{d}/p.jsonl:1: field 'text'",)),
    Case("inspect-not-checkpoint", lambda r, d: ["inspect", "--checkpoint", str(d)], ("{d}: not a ptune checkpoint",)),
    Case("inspect-edited", lambda r, d: ["inspect", "--checkpoint", str(_flip_byte(_ckpt(r, d) / "prompt.safetensors").parent)],
         ("{d}/ck/prompt.safetensors: its content differs",)),
    # ------------------------------------------------------------ generate, export, import, serve, bench, inspect
    Case("generate-not-checkpoint", lambda r, d: ["generate", "--checkpoint", str(d), "--text", "hi"],
         ("{d}: not a ptune checkpoint",)),
    Case("generate-no-input", lambda r, d: ["generate", "--checkpoint", str(r / "run")], ("--data",)),
    Case("generate-max-new-tokens-zero", lambda r, d: ["generate", "--checkpoint", str(r / "run"), "--text", "hi",
                                                       "--max-new-tokens", "0"], ("max_new_tokens",)),
    Case("generate-data-not-utf8", lambda r, d: ["generate", "--checkpoint", str(r / "run"), "--data",
                                                 str(_w(d, "g.jsonl", b'{"text": "\xfe"}\n'))], ("{d}/g.jsonl:1: not UTF-8",)),
    Case("generate-edited-checkpoint", lambda r, d: ["generate", "--checkpoint", str(_flip_byte(
        _ckpt(r, d) / "prompt.safetensors").parent), "--text", "hi"], ("{d}/ck/prompt.safetensors: its content",)),
    Case("export-not-checkpoint", lambda r, d: ["export", "--checkpoint", str(d), "--format", "embeddings", "--output",
                                                str(d / "x")], ("{d}: not a ptune checkpoint",)),
    Case("export-edited-template", lambda r, d: ["export", "--checkpoint", str(_edit_config(ck := _ckpt(r, d), lambda m: m[
        "prompt"].update(template="[P*2] {text} [MASK]")) or ck), "--format", "embeddings", "--output", str(d / "x")],
         ("{d}/ck/ptune_config.json", "changed after the checkpoint was saved")),
    Case("export-output-is-file", lambda r, d: ["export", "--checkpoint", str(r / "run"), "--format", "embeddings",
                                                "--output", str(_w(d, "x", "keep"))], ("{d}/x: is not a folder",)),
    Case("export-output-is-link", lambda r, d: ["export", "--checkpoint", str(r / "run"), "--format", "embeddings",
                                                "--output", str(_link(d / "x", (d / "real").mkdir() or d / "real"))],
         ("{d}/x: is a symbolic link",)),
    Case("import-no-adapter", lambda r, d: ["import", "--peft", str(d / "none"), "--output", str(d / "o"), "--template",
                                            "{text}[MASK]", "--verbalizer", VERB], ("{d}/none: not a PEFT adapter",)),
    Case("import-adapter-syntax", lambda r, d: ["import", "--peft", str(_w(d, "p/adapter_config.json", "{x").parent),
                                                "--output", str(d / "o"), "--template", "{text}[MASK]", "--verbalizer",
                                                VERB], ("{d}/p/adapter_config.json",)),
    Case("serve-prompts-missing", lambda r, d: ["serve", "--base", str(r / "gpt2"), "--prompts", str(d / "none")],
         ("{d}/none",)),
    Case("serve-port-out-of-range", lambda r, d: ["serve", "--base", str(r / "gpt2"), "--prompts", str(r / "run"),
                                                  "--port", "70000"], ("port",)),
    Case("serve-base-missing", lambda r, d: ["serve", "--base", str(d / "none"), "--prompts", str(r / "run")],
         ("cannot load", "{d}/none")),
    Case("bench-batch-zero", lambda r, d: ["bench", "--batch", "0"], ("--batch", "invalid positive integer value: '0'")),
    Case("bench-steps-text", lambda r, d: ["bench", "--steps", "ten"], ("--steps",)),
    Case("inspect-top-zero", lambda r, d: ["inspect", "--checkpoint", str(r / "run"), "--top", "0"], ("--top",)),
    Case("inspect-top-negative", lambda r, d: ["inspect", "--checkpoint", str(r / "run"), "--top", "-3"], ("--top",)),
    # ------------------------------------------------------------ outputs and run folders
    Case("output-is-folder", lambda r, d: _eval(r / "run", r, "--output", str((d / "o").mkdir() or d / "o")),
         ("{d}/o: is a folder",)),
    Case("output-read-only", lambda r, d: _eval(r / "run", r, "--output", str(_read_only(_w(d, "o.json", "keep")))),
         ("{d}/o.json: is read-only",)),
    Case("output-parent-is-file", lambda r, d: _eval(r / "run", r, "--output", str(_w(d, "f", "x") / "o.json")),
         ("{d}/f",)),
    Case("predict-output-is-folder", lambda r, d: _eval(r / "run", r, "--output", str((d / "o").mkdir() or d / "o"),
                                                         command="predict"), ("{d}/o: is a folder",)),
    Case("train-output-is-file", lambda r, d: _train(r, d, "--output", str(_w(d, "o", "x"))),
         ("{d}/o: exists and is not a folder",)),
    Case("train-output-holds-run", lambda r, d: _train(r, d, "--output", str(_copy_run(r, d))),
         ("{d}/run already holds a run",)),
    Case("train-resume-nothing", lambda r, d: _train(r, d, "--resume"), ("holds no run to resume",)),
    Case("train-resume-other-template", lambda r, d: _train(r, d, "--resume", "--output", str(_copy_run(r, d)),
                                                            "--template", "{text} [P*3] [MASK]"), ("was started with",)),
    Case("train-resume-state-garbage", lambda r, d: _train(r, d, "--resume", "--encoder", "mlp", "--output",
                                                           str(_copy_run(r, d, state='{"step": "two"}'))),
         ("{d}/run/last/trainer_state.json: step",)),
    Case("train-resume-state-nan", lambda r, d: _train(r, d, "--resume", "--encoder", "mlp", "--output",
                                                       str(_copy_run(r, d, state='{"step": 2, "best": NaN}'))),
         ("{d}/run/last/trainer_state.json", "NaN is not JSON")),
    Case("train-resume-state-list", lambda r, d: _train(r, d, "--resume", "--encoder", "mlp", "--output",
                                                        str(_copy_run(r, d, state="[]"))),
         ("{d}/run/last/trainer_state.json: expected an object",)),
    Case("train-resume-accelerate-damaged", lambda r, d: _train(r, d, "--resume", "--encoder", "mlp", "--output",
                                                                str(_copy_run(r, d, accelerate=True))),
         ("{d}/run/last/accelerate: damaged resume state",)),
    Case("train-locked", lambda r, d: _hold_lock(d / "out") or _train(r, d),
         ("{d}/out: in use by another ptune run (pid 4242 on otherhost",)),
    Case("probe-locked", lambda r, d: _hold_lock(d / "out") or _probe(r, d), ("{d}/out: in use by another ptune run",)),
    Case("superglue-locked", lambda r, d: _hold_lock(d / "out") or _glue(r, d), ("{d}/out: in use by another",)),
    Case("demo-locked", lambda r, d: _hold_lock(d / "out") or ["demo", "--output", str(d / "out")],
         ("{d}/out: in use by another",)),
    Case("probe-output-is-file", lambda r, d: _w(d, "out", "x") and _probe(r, d), ("{d}/out: exists and is not a folder",)),
    Case("superglue-output-is-file", lambda r, d: _w(d, "out", "x") and _glue(r, d), ("{d}/out: exists and is not a folder",)),
    Case("demo-output-is-file", lambda r, d: ["demo", "--output", str(_w(d, "out", "x"))], ("{d}/out: exists and is not",)),
    Case("world-build-non-empty", lambda r, d: ["world", "build", "--output", str(_w(d, "w/x", "x").parent)],
         ("{d}/w exists and is not empty",)),
    Case("world-check-other-seed", lambda r, d: ["world", "build", "--output", str(d / "w"), "--check", "--seed", "3"],
         ("--check", "--seed 3")),
    # ------------------------------------------------------------ LAMA probing
    Case("probe-no-relations", lambda r, d: _probe(r, d, data_dir=d), ("{d}/relations.jsonl: no such file",)),
    Case("probe-relations-syntax", lambda r, d: _probe(r, d, data_dir=_w(_lama_copy(d), "relations.jsonl", "{x\n").parent),
         ("{d}/lama/relations.jsonl:1: invalid JSON",)),
    Case("probe-relations-not-utf8", lambda r, d: _probe(r, d, data_dir=_w(_lama_copy(d), "relations.jsonl",
                                                                              b'{"relation": "\xff"}\n').parent),
         ("{d}/lama/relations.jsonl:1: not UTF-8",)),
    Case("probe-unknown-relation", lambda r, d: _probe(r, d, "--relations", "P999"), ("P999 not in",)),
    Case("probe-unknown-method", lambda r, d: _probe(r, d, "--methods", "guess"), ("--methods", "guess")),
    Case("probe-vocab-missing", lambda r, d: _probe(r, d, "--vocab", "29k"), ("29k: no 29k-vocab.json",)),
    Case("probe-vocab-not-utf8", lambda r, d: _probe(r, d, data_dir=_w(_lama_copy(d), "common_vocab_cased.txt",
                                                                          b"a\n\xff\n").parent),
         ("{d}/lama/common_vocab_cased.txt:2: not UTF-8",)),
    Case("probe-results-syntax", lambda r, d: _w(d, "out/results.json", "{oops") and _probe(r, d),
         ("{d}/out/results.json: invalid JSON",)),
    Case("probe-results-nan", lambda r, d: _w(d, "out/results.json", '{"relations": {}, "x": NaN}') and _probe(r, d),
         ("{d}/out/results.json", "NaN is not JSON")),
    Case("probe-results-other-settings", lambda r, d: _w(d, "out/results.json", '{"settings": {"model": "x"}, '
                                                         '"relations": {}}') and _probe(r, d),
         ("{d}/out holds a run with other settings",)),
    Case("probe-template-bad", lambda r, d: _probe(r, d, "--template", "[X] [P*3 [MASK]"), ("column",)),
    Case("probe-batch-size-zero", lambda r, d: _probe(r, d, "--batch-size", "0"), ("batch_size",)),
    # ------------------------------------------------------------ SuperGLUE
    Case("superglue-unknown-task", lambda r, d: _glue(r, d, task="MNLI"), ("MNLI",)),
    Case("superglue-no-data-dir", lambda r, d: _glue(r, d, data_dir=d / "none"), ("{d}/none: no such folder",)),
    Case("superglue-data-syntax", lambda r, d: _glue(r, d, data_dir=_glue_data(d, "RTE", "train", lambda ls: ls[:1] + ["{x"])),
         ("{d}/fewglue/RTE/train.jsonl:2: invalid JSON",)),
    Case("superglue-data-label", lambda r, d: _glue(r, d, data_dir=_glue_data(
        d, "RTE", "train", lambda ls: [json.dumps({**json.loads(ls[0]), "label": "perhaps"})])),
         ("{d}/fewglue/RTE/train.jsonl:1", "label")),
    Case("superglue-data-not-utf8", lambda r, d: _glue(r, d, data_dir=_append(_glue_data(
        d, "RTE", "val", lambda ls: ls[:2]), "RTE/val.jsonl", b'{"premise": "\xff"}\n')),
         ("{d}/fewglue/RTE/val.jsonl:3: not UTF-8",)),
    Case("superglue-seeds-text", lambda r, d: _glue(r, d, "--seeds", "one"), ("--seeds", "expected an integer")),
    Case("superglue-max-length-over-positions", lambda r, d: _glue(r, d, "--max-length", "100000"),
         ("max_length: 100000 is more than the",)),
    Case("superglue-result-damaged", lambda r, d: _w(d, "out/runs/RTE/seed1/result.json", '{"val": NaN}') and _glue(r, d),
         ("{d}/out/runs/RTE/seed1/result.json", "NaN is not JSON")),
    Case("superglue-results-syntax", lambda r, d: _w(d, "out/results.json", "[") and _glue(r, d),
         ("{d}/out/results.json: invalid JSON",)),
]


def _damaged_model(r: Path, d: Path) -> Path:
    shutil.copytree(r / "gpt2", d / "m")
    weights = next((d / "m").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    return d / "m"


def _remote_code_model(d: Path) -> Path:
    """A model folder whose config asks for its own modelling code (which would leave a mark)."""
    folder = d / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "ptune-custom", "architectures": ["Custom"],
                                                    "auto_map": {"AutoConfig": "custom_code.CustomConfig"}}))
    (folder / "custom_code.py").write_text(f"open({str(d / 'RAN')!r}, 'w').write('ran')\n"
                                           "from transformers import PretrainedConfig\n"
                                           "class CustomConfig(PretrainedConfig):\n    model_type = 'ptune-custom'\n")
    return folder


def _flip_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    return path


def _unlink(path: Path) -> Path:
    path.unlink()
    return path


def _rewrite(ck: Path, change: Callable[[bytes], bytes]) -> None:
    """Damage the weights file and record the damaged file's hash (the reader must refuse it)."""
    import hashlib

    f = ck / "prompt.safetensors"
    f.write_bytes(change(f.read_bytes()))
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    _edit_config(ck, lambda m: m["sha256"].update({"prompt.safetensors": digest}))


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _read_only(path: Path) -> Path:
    path.chmod(0o444)
    return path


def _copy_run(r: Path, d: Path, state: str | None = None, accelerate: bool = False) -> Path:
    shutil.copytree(r / "run", d / "run", ignore=shutil.ignore_patterns(LOCK_NAME))
    if state is not None:
        (d / "run" / "last" / "trainer_state.json").write_text(state)
    if accelerate:
        for f in (d / "run" / "last" / "accelerate").iterdir():
            f.write_bytes(b"garbage")
    return d / "run"


def test_the_corpus_is_large_and_its_names_unique():
    assert len(CASES) >= 120 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(root, case, capsys):
    d = root / "cases" / case.id
    d.mkdir()
    try:
        argv = case.build(root, d)
        before = _snapshot(root)
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err.strip()
    finally:
        while _HELD:
            os.close(_HELD.pop())
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("ptune: error: "), err
    for part in case.says:
        assert part.replace("{d}", str(d)).replace("{r}", str(root)) in err, err
    after = _snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
    assert not (d / "RAN").exists(), "a model folder's own code ran"
