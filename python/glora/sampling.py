"""Subnet samplers for supernet training: uniform per layer (the reference), budget-aware (the engine's
construction, every draw within a parameter budget), and the extremes used by the sandwich rule."""

from __future__ import annotations

import json
from . import _engine
from .choices import GENES
from .genomes import Subnet, to_subnet
from .space import SearchSpace


class BudgetSampler:
    """Draws subnets whose parameter count lies in ``[min, max]``; draw ``i`` is a fixed function of ``(seed, i)``."""

    def __init__(self, space: SearchSpace, budget: tuple[int, int], seed: int) -> None:
        self.space = space
        self.budget = budget
        self.seed = seed
        self._spec = json.dumps(space.to_dict())
        _engine.sample_genomes(self._spec, budget[0], budget[1], 0, seed)  # refuses impossible budgets now

    def draw(self, index: int, n: int = 1) -> list[Subnet]:
        genomes = _engine.sample_genomes(self._spec, self.budget[0], self.budget[1], n, self.seed, index * n)
        return [to_subnet(self.space, g) for g in genomes]

    def largest(self) -> Subnet:
        """The dearest subnet within budget: every gene at its dearest choice, cheapened only as the budget needs."""
        return _extreme(self.space, self.budget, largest=True)

    def smallest(self) -> Subnet:
        return _extreme(self.space, self.budget, largest=False)


def _extreme(space: SearchSpace, budget: tuple[int, int], largest: bool) -> Subnet:
    """Start from every gene's dearest (cheapest) choice and step one gene at a time to its next cheaper (dearer)
    choice, always the dearest (cheapest) gene, until the count is within the budget. Deterministic."""
    lo, hi = budget
    pick = max if largest else min
    config = {layer.name: {g: pick(layer.costs[g], key=layer.costs[g].get) for g in GENES} for layer in space}
    total = space.count(config)
    while (total > hi) if largest else (total < lo):
        best = None
        for layer in space:
            for g in GENES:
                current = layer.costs[g][config[layer.name][g]]
                steps = [c for c in layer.choices[g] if (layer.costs[g][c] < current if largest else layer.costs[g][c] > current)]
                if not steps:
                    continue
                nxt = (max if largest else min)(steps, key=layer.costs[g].get)
                key = current if largest else -current
                if best is None or key > best[0]:
                    best = (key, layer.name, g, nxt, layer.costs[g][nxt] - current)
        if best is None:
            break
        _, name, g, nxt, delta = best
        config[name][g] = nxt
        total += delta
    if not lo <= total <= hi:
        raise ValueError(f"no {'largest' if largest else 'smallest'} subnet fits the budget [{lo}, {hi}] (reached {total})")
    return config
