"""Errors that ptune raises on bad user input.

Every error says *where* (file and line, template column, or config field),
*what* was received and *what* is accepted, in one line. Each class also
subclasses the matching builtin so callers can catch ``ValueError`` etc.
"""

from __future__ import annotations

__all__ = ["PtuneError", "TemplateError", "DataError", "ConfigError", "CheckpointError", "OutputError",
           "TrainingError"]


class PtuneError(Exception):
    """Base class of every error ptune raises on bad input."""


class TemplateError(PtuneError, ValueError):
    """A template that cannot be parsed or does not fit the model.

    The message quotes the template and points at the offending column with a caret.
    """

    def __init__(self, template: str, column: int | None, message: str):
        self.template = template
        self.column = column
        self.reason = message
        where = f"column {column + 1}" if column is not None else "template"
        super().__init__(f"template {template!r}, {where}: {message}")

    def __reduce__(self) -> tuple:  # picklable, e.g. from a worker process
        return type(self), (self.template, self.column, self.reason)

    def pretty(self) -> str:
        """The message with the template and a caret under the offending column."""
        if self.column is None:
            return str(self)
        return f"{self}\n  {self.template}\n  {' ' * self.column}^"


class DataError(PtuneError, ValueError):
    """A data file (or an in-memory example) that does not match what the task needs.

    ``source`` is ``file:line`` for file data, or ``example N`` for in-memory data.
    """

    def __init__(self, source: str, message: str, field: str | None = None):
        self.source = source
        self.field = field
        self.reason = message
        where = f"{source}: field {field!r}: " if field else f"{source}: "
        super().__init__(where + message)

    def __reduce__(self) -> tuple:
        return type(self), (self.source, self.reason, self.field)


class ConfigError(PtuneError, ValueError):
    """A configuration value that is not accepted; names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self) -> tuple:
        return type(self), (self.field, self.reason)


class CheckpointError(PtuneError, ValueError):
    """A checkpoint folder that is missing, damaged, or does not fit the base model."""


class OutputError(PtuneError, ValueError):
    """A destination ptune will not write: a folder where a file goes, a block device, a
    read-only file, or a run folder that another process is using."""


class TrainingError(PtuneError, ArithmeticError):
    """Training that cannot go on: a non-finite loss or non-finite weights (names the step)."""
