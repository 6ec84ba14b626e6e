"""glora: Generalized LoRA for PyTorch (supernet, evolutionary search under a parameter budget, exact merge).

The names users call, loaded lazily so that the torch-free parts (the search engine, ``glora-replay``) import
without torch. The packages below hold the rest: ``glora.engine`` (the search domain), ``glora.layers`` (the
layer family), ``glora.tuner`` (wrapping, subnets, merging), ``glora.training``, ``glora.files``, ``glora.tasks``,
``glora.cli``; ``docs/architecture.md`` maps them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glora.version import __version__

_EXPORTS = {
    # wrapping and steering a model
    "GLoRAConfig": "glora.tuner.config",
    "wrap": "glora.tuner.wrapping",
    "adapter_parameters": "glora.tuner.wrapping",
    "trainable_parameters_summary": "glora.tuner.summary",
    "search_space": "glora.tuner.space",
    "set_subnet": "glora.tuner.subnets",
    "get_subnet": "glora.tuner.subnets",
    "sample_subnet": "glora.tuner.subnets",
    "supernet_mode": "glora.tuner.subnets",
    "count_params": "glora.tuner.subnets",
    "set_batched_weights": "glora.tuner.wrapping",
    # training and evaluation
    "TrainConfig": "glora.training.config",
    "TrainResult": "glora.training.config",
    "SupernetTrainer": "glora.training.trainer",
    "train_supernet": "glora.training.trainer",
    "SubnetEvaluator": "glora.training.evaluator",
    # search
    "search": "glora.tuner.search",
    "SearchConfig": "glora.engine",
    "SearchResult": "glora.engine",
    "ParetoPoint": "glora.engine",
    "SearchSpace": "glora.engine",
    # merging and files
    "merge": "glora.tuner.merging",
    "merge_and_unload": "glora.tuner.merging",
    "BiasAddedWarning": "glora.tuner.merging",
    "save_adapter": "glora.tuner.adapter",
    "load_adapter": "glora.tuner.adapter",
    "read_adapter_config": "glora.tuner.adapter",
    # errors
    "GLoRAError": "glora.errors",
    "SearchError": "glora.errors",
    "ImpossibleBudgetError": "glora.errors",
    "ScoreError": "glora.errors",
    "LogError": "glora.errors",
    "DivergenceError": "glora.errors",
    "ChoiceError": "glora.layers.choices",
    "AdapterMismatchError": "glora.files.errors",
    "FileFormatError": "glora.files.errors",
    "CheckpointError": "glora.files.errors",
    "AdapterFileError": "glora.files.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'glora' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from glora.engine import ParetoPoint, SearchConfig, SearchResult, SearchSpace
    from glora.errors import DivergenceError, GLoRAError, ImpossibleBudgetError, LogError, ScoreError, SearchError
    from glora.files.errors import AdapterFileError, AdapterMismatchError, CheckpointError, FileFormatError
    from glora.layers.choices import ChoiceError
    from glora.training.config import TrainConfig, TrainResult
    from glora.training.evaluator import SubnetEvaluator
    from glora.training.trainer import SupernetTrainer, train_supernet
    from glora.tuner.adapter import load_adapter, read_adapter_config, save_adapter
    from glora.tuner.config import GLoRAConfig
    from glora.tuner.merging import BiasAddedWarning, merge, merge_and_unload
    from glora.tuner.search import search
    from glora.tuner.space import search_space
    from glora.tuner.subnets import count_params, get_subnet, sample_subnet, set_subnet, supernet_mode
    from glora.tuner.summary import trainable_parameters_summary
    from glora.tuner.wrapping import adapter_parameters, set_batched_weights, wrap
