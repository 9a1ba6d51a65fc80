"""Command-line options generated from the config dataclasses, and ``--config FILE``.

A config dataclass is the one place where an option is declared. Each field gives one
command-line option with

* its name: ``batch_size`` -> ``--batch-size`` (a nested config's fields are prefixed:
  ``PromptConfig.encoder.lstm_dropout`` -> ``--encoder-lstm-dropout``);
* its type: integers, numbers and text; true/false fields are flags with a ``--no-``
  form; ``Literal`` fields accept their values; tuples take a comma-separated list;
  optional fields also accept ``none``;
* its default (a harness's own where it has one) and its help: the docstring written
  under the field.

Config files
------------
Every command also takes ``--config FILE``: JSON (``.json``), YAML (``.yaml``, ``.yml``)
or TOML (``.toml``) holding one mapping. Its keys are the command's long options without
the leading ``--`` (``batch_size`` and ``batch-size`` are the same key). The fields of the
training config may be grouped under ``train``, those of the prompt config under
``prompt`` (its encoder as ``encoder: mlp`` or ``encoder: {type: mlp, lstm_dropout: 0.1}``).
Where a command also has a ``--train`` data file, ``train`` with a text value is the file
and with a mapping the group. Options given on the command line override the file. A
``ptune train`` file, for example::

    model: bert-base-cased
    train: data/train.jsonl
    dev: data/dev.jsonl
    output: runs/rte
    prompt:
      template: "{premise} ? [P*3] [MASK] , {hypothesis}"
      verbalizer: {entailment: "Yes", not_entailment: "No"}
      encoder: lstm
    steps: 300
    lr: 1.0e-3

An unknown key is an error naming the file and the key, with the closest valid key; so is
a value of the wrong type or out of range. Paths in a file are read relative to the
working directory, as on the command line.
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import contextlib
import dataclasses
import difflib
import functools
import inspect
import json
import math
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence, Union

from .config_file import read_config_file
from .errors import ConfigError
from .files import loads_json

__all__ = ["field_docs", "Parser", "CommandOptions", "Resolved", "read_config_file", "CONFIG_HELP"]

CONFIG_HELP = ("JSON, YAML or TOML file of options: keys are the long options without '--' (TrainConfig "
               "fields may be grouped under 'train', PromptConfig fields under 'prompt'); options given "
               "here override the file")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", dict: "a mapping"}


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are :class:`ConfigError` (one line, exit 2)."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(self.prog, message)


# ----------------------------------------------------------------------------- docs and types
@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written right under the field in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # pragma: no cover - classes made at run time
            continue
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef)).body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _help(doc: str, default: str | None, note: str | None = None) -> str:
    """A docstring's first paragraph as one line of help, a note, and the default."""
    text = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text).replace("``", "")
    if note:
        text = f"{text} {note}" if text else note
    if default is not None:
        text = f"{text} (default: {default})" if text else f"default: {default}"
    return text.replace("%", "%%")


@dataclasses.dataclass(frozen=True)
class _Kind:
    """The values a field takes."""

    base: type  # bool, int, float, str or dict; for a tuple, the type of its items
    optional: bool = False
    choices: tuple = ()
    many: bool = False  # a tuple: comma-separated on the command line, a list in a file
    flag_or_choice: bool = False  # ``bool | Literal[...]``: a flag with an optional value


def _kind(tp: Any) -> _Kind:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) == 2 and bool in rest:
            other = _kind(next(a for a in rest if a is not bool))
            return _Kind(bool, optional, other.choices, flag_or_choice=True)
        if len(rest) != 1:
            raise TypeError(f"no command-line option for the type {tp}")
        inner = _kind(rest[0])
        return dataclasses.replace(inner, optional=optional or inner.optional)
    if origin is Literal:
        values = tuple(a for a in args if a is not None)
        return _Kind(type(values[0]), None in args, values)
    if origin is tuple:
        return dataclasses.replace(_kind(args[0]), many=True)
    if origin in (dict, collections.abc.Mapping) or tp in (dict, Mapping):
        return _Kind(dict)
    if tp in (bool, int, float, str):
        return _Kind(tp)
    raise TypeError(f"no command-line option for the type {tp}")


def _metavar(kind: _Kind) -> str:
    one = "{" + ",".join(map(str, kind.choices)) + "}" if kind.choices else {
        int: "N", float: "X", str: "TEXT", dict: "JSON", bool: "BOOL"}[kind.base]
    return f"{one},..." if kind.many else one


def _finite(value: Any) -> float:
    if not math.isfinite(number := float(value)):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _one_from_text(kind: _Kind, text: str) -> Any:
    low = text.lower()
    if kind.base is bool and (low in _TRUE or low in _FALSE):
        return low in _TRUE
    try:
        value: Any = {int: int, float: _finite}.get(kind.base, str)(text)
        if kind.base is dict:
            value = loads_json(text, "--option")
            if not isinstance(value, dict):
                raise ValueError
    except ValueError:
        if not kind.choices:
            raise ValueError(f"expected {_TYPE_NAMES[kind.base]}, got {text!r}") from None
        value = text
    if kind.choices and value not in kind.choices:
        raise ValueError(f"{text!r}; accepted: {', '.join(map(str, kind.choices))}")
    return value


def _from_text(kind: _Kind, text: str) -> Any:
    """The value of a command-line word (or of a text value in a config file)."""
    text = text.strip()
    if kind.optional and text.lower() in ("none", "null"):
        return None
    if kind.many:
        return tuple(_one_from_text(kind, part.strip()) for part in text.split(",") if part.strip())
    return _one_from_text(kind, text)


def _from_file(kind: _Kind, value: Any) -> Any:
    """A config file's value, checked (and text parsed) as the option's type."""
    if value is None:
        if kind.optional:
            return None
        raise ValueError(f"expected {_TYPE_NAMES[kind.base]}, got null")
    if kind.many and isinstance(value, (list, tuple)):
        return tuple(_from_file(dataclasses.replace(kind, many=False, optional=False), v) for v in value)
    if isinstance(value, str) and (kind.base is not str or kind.many):
        return _from_text(kind, value)
    ok = {bool: isinstance(value, bool), str: isinstance(value, str), dict: isinstance(value, Mapping),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool)}[kind.base]
    if not ok:
        raise ValueError(f"expected {_TYPE_NAMES[kind.base]}, got {type(value).__name__} {value!r:.60}")
    value = _finite(value) if kind.base is float else dict(value) if kind.base is dict else value
    if kind.choices and not isinstance(value, bool) and value not in kind.choices:
        raise ValueError(f"{value!r}; accepted: {', '.join(map(str, kind.choices))}")
    return value


def _argtype(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:  # ptune's errors are ValueErrors too
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name
    return convert


def _plain_check(action: argparse.Action) -> Callable[[Any], Any]:
    """How a config file's value is checked for an option written with ``add_argument``."""
    def check(value: Any) -> Any:
        if action.nargs == 0:
            return _from_file(_Kind(bool), value)
        if action.const is not None and isinstance(value, bool):
            return action.const if value else action.default
        if isinstance(value, str) and callable(action.type):
            try:
                value = action.type(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise ValueError(f"invalid value {value!r}: {e}") from None
        elif action.type in (int, float) or action.type is None:
            value = _from_file(_Kind(action.type or str), value)
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"{value!r}; accepted: {', '.join(map(str, action.choices))}")
        return value

    return check


# ----------------------------------------------------------------------------- one command
@dataclasses.dataclass(frozen=True)
class _Option:
    key: str  # "model", "train.lr", "prompt.encoder.type"
    flags: tuple[str, ...]
    check: Callable[[Any], Any]  # a config file's value -> the value; ValueError with a message
    default: Any = None  # a plain option's default, applied when nothing gives the option
    required: bool = False
    plain: bool = False  # added with add_argument (its default applies), not from a config field


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A command's options: the command line over the config file over the defaults.

    ``values`` maps option keys (``"model"``, ``"train.lr"``) to values; field options are
    present only when given, so the config's own defaults apply to the others.
    """

    values: dict[str, Any]
    file: str | None = None
    from_file: frozenset[str] = frozenset()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def section(self, name: str = "", only: type | None = None) -> dict[str, Any]:
        """The given values of a section (``"train"``: ``{"lr": ...}``; nested configs as
        mappings), or with ``name=""`` the top-level values of the fields of ``only``."""
        if not name:
            names = {f.name for f in dataclasses.fields(only)} if only is not None else None
            return {k: v for k, v in self.values.items() if "." not in k and (names is None or k in names)}
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            if key.startswith(name + "."):
                *parents, leaf = key[len(name) + 1:].split(".")
                node = out
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
        return out

    @contextlib.contextmanager
    def blame(self) -> Iterator[None]:
        """A ConfigError about a value that came from the config file names the file and key."""
        try:
            yield
        except ConfigError as e:
            field = e.field.removeprefix("--").replace("-", "_")
            key = next((k for k in sorted(self.from_file) if k == field or k.endswith("." + field)), None)
            if key is None:
                raise
            raise ConfigError(f"{self.file}: {key}", str(e)[len(e.field) + 2:]) from None


class CommandOptions:
    """The options of one subcommand: fields of config dataclasses, plain options, and
    ``--config FILE``; :meth:`resolve` merges them (see the module doc)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.options: dict[str, _Option] = {}
        self.names: dict[str, tuple[str, bool]] = {}  # config file key -> (option key, negated)
        self.prefixes: set[str] = set()  # config file keys that hold a group
        self.exclusive: list[tuple[str, str]] = []
        parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
        parser.add_argument("--trust-remote-code", action="store_true",
                            help="let model folders run their own modelling code (off: such a model is refused)")
        parser.set_defaults(_options=self)

    def _register(self, option: _Option) -> None:
        self.options[option.key] = option
        parts = option.key.split(".")
        section = parts[0] if len(parts) > 1 else ""
        spellings = {option.key, ".".join(parts[1:])} if section else {option.key}
        for flag in option.flags:
            name = flag.lstrip("-").replace("-", "_")
            spellings |= {name, f"{section}.{name}"} if section else {name}
        for name in spellings:
            if self.names.get(name, (option.key,))[0] != option.key:
                raise ValueError(f"{self.parser.prog}: {name!r} names both {self.names[name][0]} and {option.key}")
            self.names[name] = (option.key, False)
        for i in range(1, len(parts)):
            self.prefixes.add(".".join(parts[:i]))
            if i > 1:
                self.prefixes.add(".".join(parts[1:i]))

    def adopt(self) -> None:
        """Make the options added so far with ``add_argument`` keys of a config file too;
        their defaults and ``required`` apply after the file is read."""
        for action in self.parser._actions:
            if (not action.option_strings or action.dest in ("help", "config", "_options")
                    or action.dest in self.options or isinstance(action, argparse._HelpAction)):
                continue
            self._register(_Option(action.dest, tuple(action.option_strings), _plain_check(action),
                                   action.default, action.required, plain=True))
            if action.required and action.help:
                action.help += " (required)"
            action.required, action.default = False, argparse.SUPPRESS

    def fields(self, cls: type, section: str = "", *, only: Sequence[str] | None = None, skip: Sequence[str] = (),
               required: Sequence[str] = (), defaults: Mapping[str, Any] | None = None,
               default_text: Mapping[str, str] | None = None, flags: Mapping[str, Sequence[str]] | None = None,
               parse: Mapping[str, Callable[[str], Any]] | None = None, notes: Mapping[str, str] | None = None,
               title: str | None = None) -> None:
        """Add one option per field of the dataclass ``cls`` (nested dataclasses: their fields).

        Args:
            section: the option keys' group (``"train"`` -> ``train.lr``); ``""``: top level.
            only, skip: which fields (by name).
            required: fields that must be given (on the command line or in the file).
            defaults: field -> the default this command shows (the config's own otherwise).
            default_text: field -> how the default is described in the help.
            flags: field (``"encoder.type"`` for nested) -> extra spellings, listed first.
            parse: field -> how text (command line, or text in a file) becomes a value.
            notes: field -> words added to the docstring in the help.
        """
        group = self.parser.add_argument_group(title or f"{cls.__name__} options")
        self._fields(group, cls, section, "", only, skip, required, defaults or {}, default_text or {},
                     flags or {}, parse or {}, notes or {})

    def _fields(self, group: Any, cls: type, section: str, prefix: str, only: Sequence[str] | None,
                skip: Sequence[str], required: Sequence[str], defaults: Mapping[str, Any],
                default_text: Mapping[str, str], flags: Mapping[str, Sequence[str]],
                parse: Mapping[str, Callable[[str], Any]], notes: Mapping[str, str]) -> None:
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            if (only is not None and f.name not in only) or f.name in skip:
                continue
            path, tp = prefix + f.name, hints[f.name]
            if dataclasses.is_dataclass(tp):
                self._fields(group, tp, section, path + ".", None, (), (), defaults, default_text, flags, parse, notes)
                continue
            own = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
            default = defaults.get(path, own)
            shown = default_text.get(path, _show(default))
            doc = docs.get(f.name, "")
            if path in default_text or default != own:  # this command's default replaces the docstring's
                doc = re.sub(r"\s*\(default[^)]*\)", "", doc)
            elif "default" in doc.lower():
                shown = None  # the docstring says it
            self._field_option(group, f"{section}.{path}" if section else path, path, _kind(tp),
                               _help(doc, shown, notes.get(path) or ("(required)" if path in required else None)),
                               [*flags.get(path, ())], parse.get(path), path in required)

    def _field_option(self, group: Any, key: str, path: str, kind: _Kind, helptext: str, extra: list[str],
                      parse: Callable[[str], Any] | None, required: bool) -> None:
        names = extra + ["--" + path.replace(".", "-").replace("_", "-")]
        text_parse = parse or functools.partial(_from_text, kind)
        common = dict(dest=key, default=argparse.SUPPRESS, help=helptext)
        if kind.flag_or_choice:
            group.add_argument(*names, nargs="?", const=True, metavar="MODE",
                               type=_argtype(text_parse, path), **common)
        elif kind.base is bool and not kind.many:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        else:
            group.add_argument(*names, metavar=_metavar(kind), type=_argtype(text_parse, path), **common)

        def check(value: Any) -> Any:
            return parse(value) if parse is not None and isinstance(value, str) else _from_file(kind, value)

        self._register(_Option(key, tuple(names), check, required=required))

    def negated_flag(self, flag: str, key: str, helptext: str) -> None:
        """``flag`` sets the true/false option ``key`` to false (``--frozen``: not ``finetune_lm``)."""
        self.parser.add_argument(flag, dest=key, action="store_false", default=argparse.SUPPRESS, help=helptext)
        self.names[flag.lstrip("-").replace("-", "_")] = (key, True)

    def resolve(self, args: argparse.Namespace) -> Resolved:
        """The command line over ``--config FILE`` over the defaults.

        Raises:
            ConfigError: a bad config file (naming it and the key) or a missing required option.
        """
        given = {k: v for k, v in vars(args).items() if k in self.options}
        path = getattr(args, "config", None)
        from_file = self._read(path) if path else {}
        for a, b in self.exclusive:  # e.g. --steps on the command line replaces the file's epochs
            for one, other in ((a, b), (b, a)):
                if one in given and other in from_file and other not in given:
                    del from_file[other]
        values = {k: o.default for k, o in self.options.items() if o.plain}
        values.update(from_file)
        values.update(given)
        missing = [o.flags[0] for o in self.options.values() if o.required and values.get(o.key) is None]
        if missing:
            raise ConfigError(self.parser.prog, f"the following options are required: {', '.join(missing)} "
                              "(on the command line or in --config)")
        return Resolved(values, str(path) if path else None, frozenset(set(from_file) - set(given)))

    def _read(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        self._walk(read_config_file(path), "", path, out, spelled)
        return out

    def _walk(self, data: Mapping[str, Any], prefix: str, path: str, out: dict[str, Any],
              spelled: dict[str, str]) -> None:
        for raw, value in data.items():
            name = prefix + str(raw).replace("-", "_")
            if isinstance(value, Mapping) and name in self.prefixes:
                self._walk(value, name + ".", path, out, spelled)
                continue
            if name not in self.names:
                near = difflib.get_close_matches(name, sorted(set(self.names) | self.prefixes), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ConfigError(f"{path}: {name}", f"unknown key{hint}")
            key, negated = self.names[name]
            if key in out:
                raise ConfigError(f"{path}: {name}", f"given twice (also as {spelled[key]!r})")
            try:
                checked = self.options[key].check(value)
            except ValueError as e:
                raise ConfigError(f"{path}: {name}", str(e)) from None
            out[key], spelled[key] = (not checked) if negated else checked, name


def _show(default: Any) -> str | None:
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return None if default is None or default == {} else json.dumps(default) if isinstance(default, dict) else str(default)
