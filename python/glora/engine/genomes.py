"""Translation between the engine's genomes (one choice index per gene) and subnet dicts."""

from __future__ import annotations

from glora.layers.choices import GENES
from glora.engine.space import SearchSpace

Subnet = dict[str, dict[str, str]]


def to_subnet(space: SearchSpace, genome: list[int]) -> Subnet:
    subnet: Subnet = {}
    position = 0
    for layer in space:
        config = {}
        for g in GENES:
            config[g] = layer.choices[g][genome[position]]
            position += 1
        subnet[layer.name] = config
    return subnet


def to_genome(space: SearchSpace, subnet: Subnet) -> list[int]:
    space.count(subnet)  # validates layers and choices with clear messages
    return [layer.choices[g].index(subnet[layer.name][g]) for layer in space for g in GENES]
