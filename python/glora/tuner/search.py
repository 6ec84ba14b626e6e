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

__all__ = ["fitness_name", "search"]

_NAME_LIMIT = 200


def fitness_name(fitness: object) -> Optional[str]:
    """What a fitness's scores are, for the run log: its ``metric_name`` attribute (``SubnetEvaluator`` has
    one), else its ``__name__``; None for an anonymous callable (a lambda) or a name the log cannot hold."""
    for name in (getattr(fitness, "metric_name", None), getattr(fitness, "__name__", None)):
        if isinstance(name, str) and name and not name.startswith("<"):
            return name if name.isprintable() and len(name) <= _NAME_LIMIT else None
    return None


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
    arguments. ``space_or_model`` is a :class:`SearchSpace` or a wrapped model (whose space is taken).

    The metric recorded in the log (``metric=``, or ``config.metric``) defaults to :func:`fitness_name`
    (``SubnetEvaluator(metric="accuracy")`` records ``"accuracy"``); ``glora-replay`` shows it. Resuming checks
    the metric only when both the log and the search name one."""
    space = space_or_model if isinstance(space_or_model, SearchSpace) else search_space(space_or_model)
    if "metric" not in settings and (config is None or config.metric is None):
        name = fitness_name(fitness)
        if name is not None:
            settings["metric"] = name
    return search_space_under_budget(
        space, fitness, budget, seed=seed, log=log, resume=resume, config=config, progress=progress, **settings
    )
