"""The prompts a server offers: checkpoints in a folder or a list, loaded into a
:class:`ptune.multi.PromptBank` and kept in step with the files.

``source`` is either a folder, each of whose subfolders holding a checkpoint (or a run
folder with ``best/``) is one prompt named after the subfolder, or a comma-separated list
of checkpoint paths, each optionally ``name=path`` (default name: the folder's, or the
run's for a ``best/`` folder). :meth:`PromptRegistry.refresh` loads checkpoints that
appeared, reloads those whose files changed and drops those that disappeared; a
checkpoint that cannot be served (trained on another base, damaged, a classifier) is
listed as refused with the reason and retried when its files change. Folders whose name
starts with ``.`` (checkpoints being written) are skipped.

Example:
    >>> reg = PromptRegistry(bank, "runs/prompts")                     # doctest: +SKIP
    >>> reg.refresh()                                                  # doctest: +SKIP
    >>> reg.describe()["prompts"][0]["name"]                           # doctest: +SKIP
    'sentiment'
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .checkpoint import CONFIG_NAME, resolve
from .errors import CheckpointError, ConfigError, PtuneError
from .model import PTunedModel
from .multi import PromptBank

__all__ = ["PromptRegistry"]


class PromptRegistry:
    """The checkpoints of ``source`` served by ``bank``.

    Args:
        bank: the bank of the base model.
        source: a folder of checkpoints, or ``path,path`` / ``name=path,...``.
        min_interval_s: a refresh asked for sooner than this after the last one does nothing.
    """

    def __init__(self, bank: PromptBank, source: str, *, min_interval_s: float = 0.5) -> None:
        self.bank, self.source, self.min_interval_s = bank, source, min_interval_s
        self.folder: Path | None = Path(source) if Path(source).is_dir() and not _is_checkpoint(Path(source)) else None
        self.listed: dict[str, Path] = {} if self.folder is not None else _parse_list(source)
        self.paths: dict[str, Path] = {}
        self.refused: dict[str, tuple[str, str]] = {}  # path -> (stamp, reason)
        self._stamps: dict[str, str] = {}  # name -> stamp of the loaded files
        self._last = float("-inf")

    @property
    def age_s(self) -> float:
        """Seconds since the last refresh."""
        return time.monotonic() - self._last

    def candidates(self) -> dict[str, Path]:
        """Prompt name -> checkpoint path, as the files stand now."""
        if self.folder is None:
            return dict(self.listed)
        if not self.folder.is_dir():
            return {}
        return {p.name: p for p in sorted(self.folder.iterdir())
                if p.is_dir() and not p.name.startswith(".") and _is_checkpoint(p)}

    def refresh(self, force: bool = False) -> bool:
        """Bring the bank in step with the files; False when skipped (asked too soon)."""
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return False
        self._last = now
        found = self.candidates()
        for name in [n for n in self.bank if n not in found]:
            self.bank.remove(name)
            self.paths.pop(name, None)
            self._stamps.pop(name, None)
        for name, path in found.items():
            stamp = _stamp(path)
            if self._stamps.get(name) == stamp or self.refused.get(str(path), ("",))[0] == stamp:
                continue
            try:
                self.bank.add(name, path)
            except PtuneError as e:
                self.bank.remove(name)
                self._stamps.pop(name, None)
                self.refused[str(path)] = (stamp, str(e))
                continue
            self.refused.pop(str(path), None)
            self.paths[name], self._stamps[name] = path, stamp
        return True

    def get(self, name: str) -> PTunedModel:
        """The prompt ``name``, looking at the files again if it is not loaded.

        Raises:
            KeyError: no such prompt (with the known names).
        """
        if name not in self.bank:
            self.refresh()
        if name not in self.bank:
            why = next((reason for path, (_, reason) in self.refused.items() if Path(path).name == name), None)
            raise KeyError(f"unknown prompt {name!r}" + (f" (refused: {why})" if why else "") +
                           f"; known: {', '.join(sorted(self.bank)) or 'none'}")
        return self.bank[name]

    def describe(self) -> dict[str, Any]:
        """The base model, the prompts served (template, labels or candidates field, input
        fields, encoder) and the refused checkpoints with their reasons."""
        prompts = []
        for name in sorted(self.bank):
            m = self.bank[name]
            prompts.append({"name": name, "path": str(self.paths.get(name, "")), "template": m.config.template,
                            "fields": list(m.template.fields), "n_pseudo": m.compiled.n_pseudo,
                            "encoder": m.config.encoder.type,
                            **({"labels": list(m.answers.labels)} if m.answers is not None
                               else {"candidates_field": m.config.candidates_field})})
        refused = [{"path": path, "reason": reason} for path, (_, reason) in sorted(self.refused.items())]
        return {"base": self.bank.base_model, "kind": self.bank.runner.kind.name, "prompts": prompts,
                "refused": refused}


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() or (path / "best" / CONFIG_NAME).is_file()


def _stamp(path: Path) -> str:
    """What changes when a checkpoint is written again (its folder is replaced atomically)."""
    try:
        folder = resolve(path)
        st = (folder / CONFIG_NAME).stat()
    except (OSError, CheckpointError):
        return "missing"
    return f"{folder}:{st.st_ino}:{st.st_mtime_ns}"


def _parse_list(source: str) -> dict[str, Path]:
    """``name=path`` or ``path`` entries, comma-separated."""
    out: dict[str, Path] = {}
    for entry in (e.strip() for e in source.split(",")):
        if not entry:
            continue
        name, _, path = entry.partition("=") if "=" in entry else ("", "", entry)
        p = Path(path)
        name = name or (p.parent.name if p.name == "best" else p.name)
        if name in out:
            raise ConfigError("--prompts", f"two prompts named {name!r}; name them: name=path,...")
        if not _is_checkpoint(p):
            raise ConfigError("--prompts", f"{path}: neither a folder of checkpoints nor a checkpoint")
        out[name] = p
    if not out:
        raise ConfigError("--prompts", "names no checkpoint")
    return out
