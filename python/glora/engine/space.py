"""The search space of a wrapped model: per layer, each gene's choices and their parameter cost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from numbers import Real
from typing import Any, Iterator, Union

from glora.layers.choices import GENES

Budget = Union[int, tuple[int, int]]


@dataclass(frozen=True)
class LayerSpace:
    """One GLoRA layer: its shape as a matrix and, for each gene, the offered choices with their costs."""

    name: str
    out_features: int
    in_features: int
    choices: dict[str, tuple[str, ...]]
    costs: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "out_features": self.out_features,
            "in_features": self.in_features,
            "genes": [{"gene": g, "choices": list(self.choices[g]), "costs": [self.costs[g][c] for c in self.choices[g]]} for g in GENES],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LayerSpace":
        genes = {g["gene"]: g for g in data["genes"]}
        return cls(
            name=data["name"],
            out_features=int(data["out_features"]),
            in_features=int(data["in_features"]),
            choices={g: tuple(genes[g]["choices"]) for g in GENES},
            costs={g: dict(zip(genes[g]["choices"], map(int, genes[g]["costs"]))) for g in GENES},
        )


@dataclass(frozen=True)
class SearchSpace:
    """All layers of a wrapped model, in module order."""

    layers: tuple[LayerSpace, ...]

    def __iter__(self) -> Iterator[LayerSpace]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> LayerSpace:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no GLoRA layer named {name!r} in the search space")

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def min_params(self) -> int:
        return sum(sum(min(layer.costs[g].values()) for g in GENES) for layer in self.layers)

    @property
    def max_params(self) -> int:
        return sum(sum(max(layer.costs[g].values()) for g in GENES) for layer in self.layers)

    def count(self, subnet: dict[str, dict[str, str]]) -> int:
        """Parameter count of a subnet whose choices are all offered by this space."""
        check_subnet_layers(subnet, self.names)
        total = 0
        for layer in self.layers:
            config = subnet[layer.name]
            for g in GENES:
                if g not in config:
                    raise ValueError(f"layer {layer.name!r}: configuration lacks gene {g}")
                if config[g] not in layer.costs[g]:
                    raise ValueError(
                        f"layer {layer.name!r}: choice {config[g]!r} for gene {g} is not in the search space "
                        f"(offered: {list(layer.choices[g])})"
                    )
                total += layer.costs[g][config[g]]
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.to_dict() for layer in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        return cls(tuple(LayerSpace.from_dict(layer) for layer in data["layers"]))


def check_subnet_layers(subnet: Any, names: list[str]) -> None:
    """Raise naming the unknown and the missing layers when ``subnet`` does not cover exactly ``names``."""
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


def budget_bounds(budget: Budget) -> tuple[int, int]:
    """``(min, max)`` parameters from a maximum or a ``(min, max)`` pair; raises on anything else."""
    def whole(v: Any, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, Real) or v != int(v) or v < 0:
            raise ValueError(f"budget {what} must be a non-negative whole number of parameters, got {v!r}")
        return int(v)

    if isinstance(budget, (tuple, list)):
        if len(budget) != 2:
            raise ValueError(f"budget must be a maximum or a (min, max) pair, got {budget!r}")
        lo, hi = whole(budget[0], "minimum"), whole(budget[1], "maximum")
        if lo > hi:
            raise ValueError(f"budget minimum {lo} exceeds its maximum {hi}")
        return lo, hi
    return 0, whole(budget, "maximum")
