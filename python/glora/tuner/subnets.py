"""Steering a wrapped model's GLoRA layers: fixed subnets, uniform supernet sampling, counting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import nn

from glora.engine.space import check_subnet_layers
from glora.layers.choices import GENES, Choice, ChoiceError
from glora.layers.layer import GLoRALayer
from glora.tuner.space import search_space
from glora.tuner.wrapping import glora_layers, layers_or_raise

Subnet = dict[str, dict[str, str]]
GeneratorLike = Union[torch.Generator, int, None]


def validate_subnet(
    model: nn.Module, subnet: Subnet, layers: Optional[list[tuple[str, GLoRALayer]]] = None
) -> dict[str, tuple[Choice, ...]]:
    """Raise a clear error unless ``subnet`` configures exactly the model's GLoRA layers with valid choices;
    return each layer's plan. ``layers``: the model's GLoRA layers when the caller holds them already."""
    layers = layers_or_raise(model) if layers is None else layers
    check_subnet_layers(subnet, [n for n, _ in layers])
    plans = {}
    for name, layer in layers:
        try:
            plans[name] = _offered_plan(layer, subnet[name])
        except ChoiceError as err:
            details = {**err.details, "layer": name}
            raise ChoiceError(f"layer {name!r}: {err}", kind=err.kind, details=details) from None
        except (ValueError, TypeError) as err:
            raise type(err)(f"layer {name!r}: {err}") from None
    return plans


def _offered_plan(layer: GLoRALayer, config: dict[str, str]) -> tuple[Choice, ...]:
    """The layer's plan of ``config`` when every choice is one it offers (a lora rank among ``GLoRAConfig``'s
    ranks, as the search space requires); the layer itself takes any rank up to its maximum."""
    plan = layer.validate(config)
    for gene, choice in zip(GENES, plan):
        offered = layer.choices[gene]
        if choice.name not in offered:
            raise ChoiceError(
                f"gene {gene} offers only {', '.join(offered)} on this model (GLoRAConfig rank, ranks and choices); "
                f"got {choice.name!r}",
                kind="choice",
                details={"gene": gene, "choice": choice.name, "offered": list(offered)},
            )
    return plan


def set_subnet(model: nn.Module, subnet: Subnet) -> nn.Module:
    """Fix every GLoRA layer to its configuration in ``subnet``; returns ``model``. The whole subnet is checked
    first: when it is refused, no layer has changed."""
    plans = validate_subnet(model, subnet)
    for name, layer in glora_layers(model):
        layer.set_plan(plans[name])
    return model


def get_subnet(model: nn.Module) -> Optional[Subnet]:
    """The fixed subnet of the model, or None while it samples (supernet mode) or has none set."""
    configs = {name: layer.fixed_config for name, layer in layers_or_raise(model)}
    if any(c is None for c in configs.values()):
        return None
    return configs  # type: ignore[return-value]


SEEDS = range(-(1 << 63), 1 << 64)
"""The seeds ``torch.Generator.manual_seed`` takes."""


def make_generator(generator: GeneratorLike) -> torch.Generator:
    """A CPU generator from a generator, a seed, or None (a fresh non-deterministic seed)."""
    if isinstance(generator, torch.Generator):
        return generator
    if generator is not None and (isinstance(generator, bool) or not isinstance(generator, int)):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if generator is not None and generator not in SEEDS:
        raise ValueError(f"generator seed must be an integer in [-2**63, 2**64), got {generator}")
    g = torch.Generator()
    if generator is None:
        g.seed()
    else:
        g.manual_seed(generator)
    return g


def draw_plans(layers: Sequence[GLoRALayer], generator: torch.Generator) -> list[tuple[Choice, ...]]:
    """The uniform draw, the only one: each layer's configuration drawn uniformly and independently per gene among
    its offered choices. One call fills a tensor in order, one row per layer, so drawing the layers together or
    one by one gives the same configurations and leaves the generator in the same state."""
    rows = torch.randint(0, 1 << 30, (len(layers), len(GENES)), generator=generator, device=generator.device).tolist()
    return [layer.plan_of(row) for layer, row in zip(layers, rows)]


def sample_subnet(model: nn.Module, generator: GeneratorLike = None) -> Subnet:
    """A subnet drawn uniformly per layer and gene from the offered choices."""
    layers = layers_or_raise(model)
    plans = draw_plans([layer for _, layer in layers], make_generator(generator))
    return {name: {g: c.name for g, c in zip(GENES, plan)} for (name, _), plan in zip(layers, plans)}


class UniformSampler:
    """What ``supernet_mode`` installs on every layer: a uniform draw per layer and forward from one generator.
    The weights built for a whole forward (``batched_weights``) draw for all its layers at once."""

    __slots__ = ("generator",)

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, layer: GLoRALayer) -> tuple[Choice, ...]:
        return draw_plans([layer], self.generator)[0]

    def draw_all(self, layers: Sequence[GLoRALayer]) -> list[tuple[Choice, ...]]:
        return draw_plans(layers, self.generator)


def supernet_mode(model: nn.Module, generator: GeneratorLike = None) -> torch.Generator:
    """Make every GLoRA layer draw a fresh uniform configuration on each forward; returns the generator used.

    Layers whose weights are built for the whole forward (``glora.set_batched_weights``) draw once when the
    model's forward starts, so a forward recomputed under gradient checkpointing reuses the draw; a layer running
    its own node draws when it runs and would draw again in a recomputation: draw per step with ``sample_subnet``
    and ``set_subnet`` there instead (``SupernetTrainer`` does so). A refused generator changes no layer."""
    layers = layers_or_raise(model)
    g = make_generator(generator)
    sampler = UniformSampler(g)
    for _, layer in layers:
        layer.set_sampler(sampler)
    return g


def count_params(model: nn.Module, subnet: Subnet) -> int:
    """Adapter parameters used by ``subnet`` (the classifier head and other extra modules are not counted)."""
    validate_subnet(model, subnet)
    return search_space(model).count(subnet)
