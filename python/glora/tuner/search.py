"""``glora.search``: the search of a wrapped model's (or a search space's) layer configurations."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from torch import nn

from glora._engine import SearchConfig, SearchResult
from glora.engine.evolution import Fitness
from glora.engine.evolution import search as search_space_under_budget
from glora.engine.space import Budget, SearchSpace
from glora.tuner.space import search_space

__all__ = ["search"]


def search(
    space_or_model: Union[SearchSpace, nn.Module],
    fitness: Fitness,
    budget: Budget,
    *,
    seed: int = 0,
    log: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    config: Optional[SearchConfig] = None,
    progress: bool = True,
    **settings: Any,
) -> SearchResult:
    """Search each GLoRA layer's configuration under ``budget``; see :func:`glora.engine.search` for the
    arguments. ``space_or_model`` is a :class:`SearchSpace` or a wrapped model (whose space is taken)."""
    space = space_or_model if isinstance(space_or_model, SearchSpace) else search_space(space_or_model)
    return search_space_under_budget(
        space, fitness, budget, seed=seed, log=log, resume=resume, config=config, progress=progress, **settings
    )
