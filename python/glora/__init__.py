"""glora: Generalized LoRA for PyTorch (supernet, evolutionary search under a parameter budget, exact merge).

Names load lazily, so that torch-free parts (the search engine, ``glora-replay``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glora.version import __version__

_EXPORTS = {
    "AdapterMismatchError": ".files.adapter",
    "load_adapter": ".files.adapter",
    "read_adapter_config": ".files.adapter",
    "save_adapter": ".files.adapter",
    "GENES": ".layers.choices",
    "ChoiceError": ".layers.choices",
    "set_batched_weights": ".layers.batched_weights",
    "GLoRAConfig": ".tuner.config",
    "GLoRALayer": ".layers.layer",
    "BiasAddedWarning": ".tuner.merging",
    "merge": ".tuner.merging",
    "merge_and_unload": ".tuner.merging",
    "count_params": ".tuner.subnets",
    "get_subnet": ".tuner.subnets",
    "glora_layers": ".tuner.wrapping",
    "sample_subnet": ".tuner.subnets",
    "search_space": ".tuner.space",
    "set_subnet": ".tuner.subnets",
    "supernet_mode": ".tuner.subnets",
    "trainable_parameters_summary": ".tuner.summary",
    "wrap": ".tuner.wrapping",
    "adapter_parameters": ".tuner.wrapping",
    "LayerSpace": ".engine.space",
    "SearchSpace": ".engine.space",
    "search": ".engine.evolution",
    "SubnetEvaluator": ".training.evaluator",
    "SupernetTrainer": ".training.trainer",
    "TrainConfig": ".training.trainer",
    "TrainResult": ".training.trainer",
    "train_supernet": ".training.trainer",
    "SearchResult": ".engine.evolution",
    "ParetoPoint": ".engine.evolution",
    "SearchError": ".errors",
    "ImpossibleBudgetError": ".errors",
    "ScoreError": ".errors",
    "LogError": ".errors",
    "DivergenceError": ".errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'glora' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from glora.files.adapter import AdapterMismatchError, load_adapter, read_adapter_config, save_adapter
    from glora.layers.batched_weights import set_batched_weights
    from glora.layers.choices import GENES, ChoiceError
    from glora.tuner.config import GLoRAConfig
    from glora.errors import DivergenceError, ImpossibleBudgetError, LogError, ScoreError, SearchError
    from glora.layers.layer import GLoRALayer
    from glora.tuner.merging import BiasAddedWarning, merge, merge_and_unload
    from glora.tuner.space import search_space
    from glora.tuner.subnets import count_params, get_subnet, sample_subnet, set_subnet, supernet_mode
    from glora.tuner.summary import trainable_parameters_summary
    from glora.tuner.wrapping import adapter_parameters, glora_layers, wrap
    from glora.training.evaluator import SubnetEvaluator
    from glora.engine.evolution import ParetoPoint, SearchResult, search
    from glora.training.trainer import SupernetTrainer, TrainConfig, TrainResult, train_supernet
    from glora.engine.space import LayerSpace, SearchSpace
