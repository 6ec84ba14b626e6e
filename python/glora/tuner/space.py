"""The search space of a wrapped model."""

from __future__ import annotations

from torch import nn

from glora.engine.space import LayerSpace, SearchSpace
from glora.tuner.wrapping import layers_or_raise


def search_space(model: nn.Module) -> SearchSpace:
    """Each layer's shape and offered choices; the engine computes the choices' costs (docs/method.md, section 2)."""
    return SearchSpace(
        [
            LayerSpace(name, layer.out_features, layer.in_features, dict(layer.choices))
            for name, layer in layers_or_raise(model)
        ]
    )
