"""glora: Generalized LoRA for PyTorch (supernet, evolutionary search under a parameter budget, exact merge)."""

from .adapter_io import AdapterMismatchError, load_adapter, read_adapter_config, save_adapter
from .choices import GENES, ChoiceError
from .config import GLoRAConfig
from .layer import GLoRALayer
from .merge import BiasAddedWarning, merge, merge_and_unload
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
from .space import LayerSpace, SearchSpace
from .version import __version__

__all__ = [
    "AdapterMismatchError",
    "BiasAddedWarning",
    "ChoiceError",
    "GENES",
    "GLoRAConfig",
    "GLoRALayer",
    "LayerSpace",
    "SearchSpace",
    "__version__",
    "count_params",
    "get_subnet",
    "glora_layers",
    "load_adapter",
    "merge",
    "merge_and_unload",
    "read_adapter_config",
    "sample_subnet",
    "save_adapter",
    "search_space",
    "set_subnet",
    "supernet_mode",
    "trainable_parameters_summary",
    "wrap",
]
