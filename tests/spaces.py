"""Synthetic search spaces and fitness functions with known optima, for the search tests (no torch)."""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

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


class PerExampleAdditiveFitness(AdditiveFitness):
    """The additive fitness seen through ``examples`` noisy examples, as a validation set shows a model: a subnet's
    score on example i is its additive value, plus the example's difficulty (shared by every subnet), plus noise of
    its own (fixed per subnet and example). Its whole-data score is the mean over the examples; ``per_example``
    serves a raced search and counts the examples it scores."""

    def __init__(self, space: SearchSpace, seed: int, examples: int = 200, noise: float = 1.0) -> None:
        super().__init__(space, seed)
        rng = random.Random(seed + 1)
        self.examples = examples
        self.noise = noise
        self.difficulty = [rng.gauss(0.0, 2.0) for _ in range(examples)]
        self.examples_scored = 0

    def row(self, subnet: dict) -> list[float]:
        own = random.Random(zlib.crc32(json.dumps(subnet, sort_keys=True).encode()))
        base = self.score(subnet)
        return [base + d + own.gauss(0.0, self.noise) for d in self.difficulty]

    def __call__(self, batch: list[dict]) -> list[float]:
        self.examples_scored += len(batch) * self.examples
        return [sum(r) / len(r) for r in map(self.row, batch)]

    def per_example(self, batch: list[dict], examples: list[int]) -> list[list[float]]:
        self.examples_scored += len(batch) * len(examples)
        return [[r[i] for i in examples] for r in map(self.row, batch)]


def cut_logs(full: Path, folder: Path, count: int, seed: int) -> Iterator[tuple[Path, int]]:
    """``count`` copies of the log ``full`` in ``folder``, each cut at a random byte after its header (seeded), with
    the cut's offset: what a search killed mid-write leaves behind."""
    data = full.read_bytes()
    header_end = data.index(b"\n") + 1
    rng = random.Random(seed)
    for trial in range(count):
        cut = rng.randrange(header_end, len(data))
        log = folder / f"cut{trial}.jsonl"
        log.write_bytes(data[:cut])
        yield log, cut
