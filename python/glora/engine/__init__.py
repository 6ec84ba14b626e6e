"""The search domain, torch-free: the native engine's space, settings, results and run log, behind typed objects.

Nothing here imports torch or the packages above it (``glora.tuner``, ``glora.training``).
"""

from glora._engine import Divergence, Generation, LogReport, ParetoPoint, Racing, SearchConfig, SearchResult
from glora.engine.evolution import check_search_settings, search
from glora.engine.replay import read_log
from glora.engine.space import Budget, LayerSpace, SearchSpace, Subnet, budget_bounds, check_subnet_layers

__all__ = [
    "Budget",
    "Divergence",
    "Generation",
    "LayerSpace",
    "LogReport",
    "ParetoPoint",
    "Racing",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "Subnet",
    "budget_bounds",
    "check_search_settings",
    "check_subnet_layers",
    "read_log",
    "search",
]
