"""Reading a search log: the engine replays it from its recorded scores and reports what it holds."""

from __future__ import annotations

import os
from typing import Union

from glora._engine import LogReport
from glora._engine import read_log as _read_log

__all__ = ["read_log"]


def read_log(path: Union[str, os.PathLike]) -> LogReport:
    """Replay the log at ``path`` (evaluating nothing): its settings, whether the engine reproduces every logged
    subnet (else where it diverges), the history, the best subnet and the Pareto front."""
    return _read_log(os.fspath(path))
