"""glora: Generalized LoRA for PyTorch (supernet, evolutionary search under a parameter budget, exact merge).

Names load lazily, so that torch-free parts (the search engine, ``glora-replay``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

_EXPORTS = {
    "AdapterMismatchError": ".adapter_io",
    "load_adapter": ".adapter_io",
    "read_adapter_config": ".adapter_io",
    "save_adapter": ".adapter_io",
    "GENES": ".choices",
    "ChoiceError": ".choices",
    "set_batched_weights": ".batched_weights",
    "GLoRAConfig": ".config",
    "GLoRALayer": ".layer",
    "BiasAddedWarning": ".merging",
    "merge": ".merging",
    "merge_and_unload": ".merging",
    "count_params": ".model",
    "get_subnet": ".model",
    "glora_layers": ".model",
    "sample_subnet": ".model",
    "search_space": ".model",
    "set_subnet": ".model",
    "supernet_mode": ".model",
    "trainable_parameters_summary": ".model",
    "wrap": ".model",
    "LayerSpace": ".space",
    "SearchSpace": ".space",
    "search": ".evolution",
    "SubnetEvaluator": ".evaluator",
    "SupernetTrainer": ".trainer",
    "TrainConfig": ".trainer",
    "TrainResult": ".trainer",
    "train_supernet": ".trainer",
    "SearchResult": ".evolution",
    "ParetoPoint": ".evolution",
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
    from .adapter_io import AdapterMismatchError, load_adapter, read_adapter_config, save_adapter
    from .batched_weights import set_batched_weights
    from .choices import GENES, ChoiceError
    from .config import GLoRAConfig
    from .errors import DivergenceError, ImpossibleBudgetError, LogError, ScoreError, SearchError
    from .layer import GLoRALayer
    from .merging import BiasAddedWarning, merge, merge_and_unload
    from .model import (
        count_params,
        get_subnet,
        glora_layers,
        sample_subnet,
        search_space,
        set_subnet,
        supernet_mode,
        trainable_parameters_summary,
        wrap,
    )
    from .evaluator import SubnetEvaluator
    from .evolution import ParetoPoint, SearchResult, search
    from .trainer import SupernetTrainer, TrainConfig, TrainResult, train_supernet
    from .space import LayerSpace, SearchSpace
