"""Subnet samplers for supernet training: uniform per layer (the reference), budget-aware (the engine's
construction, every draw within a parameter budget), and the extremes used by the sandwich rule."""

from __future__ import annotations

import json

import numpy as np

from glora import _engine
from glora.layers.choices import GENES
from glora.engine.genomes import Subnet, to_subnet
from glora.engine.space import SearchSpace


_SPREAD_ATTEMPTS = 8
_SPREAD_STREAM = 1 << 48  # the engine's draw indices used by spread draws, apart from those of plain draws
_PROBE_STREAM = 1 << 40  # the draws that find which end of a window the construction piles up at


class BudgetSampler:
    """Draws subnets whose parameter count lies in ``[min, max]``; draw ``i`` is a fixed function of ``(seed, i)``.

    The engine's construction visits genes in a random order and draws each uniformly among the choices that keep
    the total reachable, so its counts pile up at one end of the window (just under ``max`` when the budget is a
    small part of the space's largest count, the usual case). With ``spread`` every draw first takes a target count
    uniformly in ``[min, max]`` and is built in a narrow window around it: the counts spread over the whole budget,
    and a supernet trained on them has seen the sizes the search will compare.
    """

    def __init__(self, space: SearchSpace, budget: tuple[int, int], seed: int, spread: bool = False) -> None:
        self.space = space
        self.budget = budget
        self.seed = seed
        self.spread = spread
        self._spec = json.dumps(space.to_dict())
        _engine.sample_genomes(self._spec, budget[0], budget[1], 0, seed)  # refuses impossible budgets now
        if spread:
            # each gene's costs in genome order: a genome's count without building its subnet
            self._costs = [[layer.costs[g][c] for c in layer.choices[g]] for layer in space for g in GENES]
            self._step = max(map(_largest_step, self._costs))
            probe = _engine.sample_genomes(self._spec, budget[0], budget[1], 8, seed, _PROBE_STREAM)
            self._piles_at_top = sum(map(self._count, probe)) >= 4 * (budget[0] + budget[1])

    def draw(self, index: int, n: int = 1) -> list[Subnet]:
        if not self.spread:
            genomes = _engine.sample_genomes(self._spec, self.budget[0], self.budget[1], n, self.seed, index * n)
        else:
            genomes = [self._spread_genome(index * n + j) for j in range(n)]
        return [to_subnet(self.space, g) for g in genomes]

    def _spread_genome(self, i: int) -> list[int]:
        """A draw in the narrowest window the engine accepts (one gene's largest step between choices) that ends at
        a count taken uniformly in the budget when the construction piles up at a window's top (else starts there);
        the window may reach past the budget, so a draw that lands outside it is redrawn (a few times, seeded)."""
        lo, hi = self.budget
        rng = np.random.default_rng([self.seed, i])
        for attempt in range(_SPREAD_ATTEMPTS):
            target = lo + int(rng.integers(0, hi - lo + 1))
            start = target - self._step if self._piles_at_top else target
            start = min(max(start, self.space.min_params), self.space.max_params - self._step)
            genome = _engine.sample_genomes(self._spec, start, start + self._step, 1, self.seed, (i << 8) + attempt + _SPREAD_STREAM)[0]
            if lo <= self._count(genome) <= hi:
                return genome
        return _engine.sample_genomes(self._spec, lo, hi, 1, self.seed, i)[0]

    def _count(self, genome: list[int]) -> int:
        return sum(costs[choice] for costs, choice in zip(self._costs, genome))

    def largest(self) -> Subnet:
        """The dearest subnet within budget: every gene at its dearest choice, cheapened only as the budget needs."""
        return _extreme(self.space, self.budget, largest=True)

    def smallest(self) -> Subnet:
        return _extreme(self.space, self.budget, largest=False)


def _largest_step(costs: list[int]) -> int:
    """The largest gap between two consecutive costs of one gene (the narrowest window the engine accepts)."""
    ordered = sorted(set(costs))
    return max((b - a for a, b in zip(ordered, ordered[1:])), default=0)


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
