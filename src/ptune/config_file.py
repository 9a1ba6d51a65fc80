"""Reading a ``--config FILE``: one mapping in JSON, YAML or TOML (see :mod:`ptune.options`).

Example:
    >>> read_config_file("rte.yaml")                                  # doctest: +SKIP
    {'model': 'bert-base-cased', 'prompt': {...}, 'steps': 300}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError
from .files import loads_json, read_text

__all__ = ["read_config_file"]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON, YAML or TOML file (chosen by the file's extension).

    Raises:
        ConfigError: naming the file: missing, unknown extension, a syntax error (with
            its line), a key given twice in one mapping (with its lines), or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(path), "no such config file")
    suffix, text = p.suffix.lower(), read_text(p)
    if suffix == ".json":
        try:
            data = loads_json(text, str(path))
        except DataError as e:
            raise ConfigError(str(path), e.reason) from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.load(text, Loader=_strict_yaml_loader())  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(str(path), f"invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(path), f"invalid TOML: {e}") from None
    else:
        raise ConfigError(str(path), f"unknown config format {suffix!r}; accepted: .json, .yaml, .yml, .toml")
    if data is None:  # an empty YAML file
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping of option names to values, got {type(data).__name__}")
    return data


def _strict_yaml_loader() -> type:
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last value; JSON and TOML files are refused the same way)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" merges another mapping
                    continue
                key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error names it
                    break
                if first is not None:
                    where = f"lines {first} and {line}" if first != line else f"line {line}"
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice ({where})", key_node.start_mark)
                seen[key] = line
            return super().construct_mapping(node, deep)

    return StrictLoader
