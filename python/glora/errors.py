"""glora's exceptions: one base, :class:`GLoRAError`; the search's errors also keep their builtin base ``ValueError``.

Each carries ``kind`` (a short name of the problem) and ``details`` (a dict of its figures); for example an
:class:`ImpossibleBudgetError` has ``details["smallest"]`` and ``details["largest"]``. The native engine raises
these classes. This module imports nothing heavy (no torch), so ``glora-replay`` can use it.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "ConfigError",
    "DataError",
    "DivergenceError",
    "GLoRAError",
    "ImpossibleBudgetError",
    "LogError",
    "ScoreError",
    "SearchError",
]


class GLoRAError(Exception):
    """The base of every error glora raises on purpose."""

    def __init__(self, message: str = "", *, kind: str = "", details: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.details: dict[str, Any] = {} if details is None else details


class SearchError(GLoRAError, ValueError):
    """A search refused or stopped by bad input; ``kind`` and ``details`` say which."""


class ImpossibleBudgetError(SearchError):
    """No subnet satisfies the budget; ``details`` holds the smallest and largest counts."""


class ScoreError(SearchError):
    """The fitness function returned something else than one finite number per subnet."""


class LogError(SearchError):
    """A run log is unreadable, corrupt, or does not match the search."""


class DivergenceError(LogError):
    """Replaying a log produced other subnets than it records."""


class ConfigError(GLoRAError, ValueError):
    """A run setting or config file that is wrong; ``details["setting"]`` names the setting where one is at fault."""


class DataError(GLoRAError, ValueError):
    """A data file or model that a task cannot use: missing, empty, unreadable, a missing or wrong column, a label
    only in a later split. ``details`` names the ``path`` and, where one is at fault, the ``column``."""
