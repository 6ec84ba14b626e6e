"""The search engine's exceptions (defined natively in ``glora._engine``).

Each carries ``kind`` (a short name of the problem) and ``details`` (a dict of its figures), for example an
:class:`ImpossibleBudgetError` has ``details["smallest"]`` and ``details["largest"]``. All derive from
:class:`SearchError`, itself a ``ValueError``.
"""

from glora._engine import DivergenceError, ImpossibleBudgetError, LogError, ScoreError, SearchError

__all__ = ["DivergenceError", "ImpossibleBudgetError", "LogError", "ScoreError", "SearchError", "score_error"]


def score_error(message: str, kind: str, **details: object) -> ScoreError:
    """A :class:`ScoreError` raised from Python, with the same ``kind`` / ``details`` as the native ones."""
    err = ScoreError(message)
    err.kind = kind
    err.details = details
    return err
