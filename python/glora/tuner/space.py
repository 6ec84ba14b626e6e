"""The search space of a wrapped model."""

from __future__ import annotations

from torch import nn

from glora.engine.space import LayerSpace, SearchSpace
from glora.tuner.wrapping import layers_or_raise


def search_space(model: nn.Module) -> SearchSpace:
    """Each layer's offered choices and the parameter cost of each (METHOD.md section 2)."""
    return SearchSpace(
        tuple(
            LayerSpace(name, layer.out_features, layer.in_features, dict(layer.choices), layer.choice_costs())
            for name, layer in layers_or_raise(model)
        )
    )
