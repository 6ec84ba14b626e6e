"""The search space (native): per layer, each gene's offered choices; the engine computes their parameter costs,
counts subnets, checks budgets, samples within a budget and finds the extremes (docs/method.md, sections 2-4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from glora._engine import LayerSpace, SearchSpace, budget_bounds

Budget = Union[int, tuple[int, int]]
Subnet = dict[str, dict[str, str]]

__all__ = ["Budget", "LayerSpace", "SearchSpace", "Subnet", "budget_bounds", "check_subnet_layers"]


def check_subnet_layers(subnet: Any, names: Sequence[str]) -> None:
    """Raise naming the unknown and the missing layers when ``subnet`` does not cover exactly ``names`` (the
    layers of a wrapped model, which setting a subnet on the model checks without a search space)."""
    if not isinstance(subnet, dict):
        raise TypeError(f"a subnet must be a dict of layer names to gene choices, got {type(subnet).__name__}")
    unknown = sorted(set(subnet) - set(names))
    missing = [n for n in names if n not in subnet]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown layer(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        if missing:
            parts.append(f"missing layer(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        raise KeyError("subnet does not match the model's GLoRA layers: " + "; ".join(parts))
