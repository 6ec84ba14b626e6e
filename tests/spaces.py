"""Synthetic search spaces and fitness functions with known optima, for the search tests (no torch)."""

from __future__ import annotations

import random

from glora.engine.space import LayerSpace, SearchSpace
from glora.layers.choices import GENES, offered_choices


def synthetic_space(shapes: list[tuple[int, int]], rank: int = 4) -> SearchSpace:
    layers = []
    for i, (out, inn) in enumerate(shapes):
        layers.append(LayerSpace(f"layer{i}", out, inn, {g: offered_choices(g, (rank,)) for g in GENES}))
    return SearchSpace(layers)


def vit_like_space() -> SearchSpace:
    return synthetic_space([(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12)


class AdditiveFitness:
    """Each (layer, gene, choice) has a value; a subnet scores the sum. Counts every subnet it is asked for."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        rng = random.Random(seed)
        self.space = space
        self.values = {
            (layer.name, g, c): (0.0 if c == "none" else rng.random() * (3.0 if c.startswith("lora") else 1.0))
            for layer in space
            for g in GENES
            for c in layer.choices[g]
        }
        self.seen: list[str] = []

    def score(self, subnet: dict) -> float:
        return sum(self.values[(name, g, c)] for name, config in subnet.items() for g, c in config.items())

    def __call__(self, batch: list[dict]) -> list[float]:
        import json

        self.seen.extend(json.dumps(s, sort_keys=True) for s in batch)
        return [self.score(s) for s in batch]

    def optimum(self, max_params: int) -> float:
        """Exact best score under the budget: a multiple-choice knapsack over all genes."""
        unit = 1
        capacity = max_params // unit
        best = [0.0] + [float("-inf")] * capacity
        for layer in self.space:
            for g in GENES:
                options = [(-(-layer.costs[g][c] // unit), self.values[(layer.name, g, c)]) for c in layer.choices[g]]
                new = [float("-inf")] * (capacity + 1)
                for w in range(capacity + 1):
                    if best[w] == float("-inf"):
                        continue
                    for cost, value in options:
                        if w + cost <= capacity and best[w] + value > new[w + cost]:
                            new[w + cost] = best[w] + value
                best = new
        return max(best)
