"""Wrapping a model and steering its GLoRA layers: fixed subnets, supernet sampling, search space, counting."""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Union

import torch
from torch import nn

from glora.layers import batched_weights
from glora.layers.choices import GENES, Choice
from glora.tuner.config import GLoRAConfig
from glora.layers.layer import GLoRALayer
from glora.engine.space import LayerSpace, SearchSpace, check_subnet_layers
from glora.tuner.targeting import name_matches, select_targets

Subnet = dict[str, dict[str, str]]
GeneratorLike = Union[torch.Generator, int, None]


def wrap(model: nn.Module, config: GLoRAConfig) -> nn.Module:
    """Replace the target layers of ``model`` by GLoRA layers, in place; freeze everything else.

    Modules named in ``config.modules_to_save`` stay trainable. Returns ``model``.
    """
    if not isinstance(config, GLoRAConfig):
        raise TypeError(f"config must be a glora.GLoRAConfig, got {type(config).__name__}")
    if any(True for _ in glora_layers(model)):
        raise ValueError("model is already wrapped with GLoRA layers")
    targets = select_targets(model, config.target_modules, config.exclude_modules, config.modules_to_save)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targets:
        parent, attr = _parent(model, name)
        base = getattr(parent, attr)
        setattr(parent, attr, GLoRALayer(base, config.max_rank, config.offered_ranks, config.add_bias, config.init, config.choices))
    _unfreeze_modules_to_save(model, config.modules_to_save)
    model.glora_config = config  # type: ignore[assignment]
    batched_weights.install(model, [layer for _, layer in glora_layers(model)])
    return model


def _unfreeze_modules_to_save(model: nn.Module, names: Optional[list[str]]) -> None:
    if not names:
        return
    found = [n for n, _ in model.named_modules() if n and name_matches(n, names)]
    if not found:
        raise ValueError(f"modules_to_save={names!r} matched no module")
    for n in found:
        for p in model.get_submodule(n).parameters():
            p.requires_grad_(True)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    if "." in name:
        parent_name, attr = name.rsplit(".", 1)
        return model.get_submodule(parent_name), attr
    return model, name


def config_of(model: nn.Module) -> GLoRAConfig:
    config = getattr(model, "glora_config", None)
    if config is None:
        raise ValueError("model has no GLoRA layers: call glora.wrap(model, config) first")
    return config


def glora_layers(model: nn.Module) -> Iterator[tuple[str, GLoRALayer]]:
    """(name, layer) for every GLoRA layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, GLoRALayer):
            yield name, module


def _layers_or_raise(model: nn.Module) -> list[tuple[str, GLoRALayer]]:
    layers = list(glora_layers(model))
    if not layers:
        raise ValueError("model has no GLoRA layers: call glora.wrap(model, config) first")
    return layers


def search_space(model: nn.Module) -> SearchSpace:
    """Each layer's offered choices and the parameter cost of each (METHOD.md section 2)."""
    return SearchSpace(
        tuple(
            LayerSpace(name, layer.out_features, layer.in_features, dict(layer.choices), layer.choice_costs())
            for name, layer in _layers_or_raise(model)
        )
    )


def validate_subnet(model: nn.Module, subnet: Subnet) -> dict[str, tuple[Choice, ...]]:
    """Raise a clear error unless ``subnet`` configures exactly the model's GLoRA layers with valid choices;
    return each layer's plan."""
    layers = _layers_or_raise(model)
    check_subnet_layers(subnet, [n for n, _ in layers])
    plans = {}
    for name, layer in layers:
        try:
            plans[name] = layer.validate(subnet[name])
        except (ValueError, TypeError) as err:
            raise type(err)(f"layer {name!r}: {err}") from None
    return plans


def set_subnet(model: nn.Module, subnet: Subnet) -> nn.Module:
    """Fix every GLoRA layer to its configuration in ``subnet``; returns ``model``."""
    plans = validate_subnet(model, subnet)
    for name, layer in glora_layers(model):
        layer.set_plan(plans[name])
    return model


def get_subnet(model: nn.Module) -> Optional[Subnet]:
    """The fixed subnet of the model, or None while it samples (supernet mode) or has none set."""
    configs = {name: layer.fixed_config for name, layer in _layers_or_raise(model)}
    if any(c is None for c in configs.values()):
        return None
    return configs  # type: ignore[return-value]


def make_generator(generator: GeneratorLike) -> torch.Generator:
    """A CPU generator from a generator, a seed, or None (seeded from torch's global RNG)."""
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()
    elif isinstance(generator, int) and not isinstance(generator, bool):
        g.manual_seed(generator)
    else:
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    return g


def uniform_layer_config(layer: GLoRALayer, generator: torch.Generator) -> dict[str, str]:
    """One configuration drawn uniformly and independently per gene from the layer's offered choices."""
    return {g: c.name for g, c in zip(GENES, layer.draw(generator))}


def sample_subnet(model: nn.Module, generator: GeneratorLike = None) -> Subnet:
    """A subnet drawn uniformly per layer and gene from the offered choices."""
    g = make_generator(generator)
    return {name: uniform_layer_config(layer, g) for name, layer in _layers_or_raise(model)}


def draw_plans(layers: Sequence[GLoRALayer], generator: torch.Generator) -> list[tuple[Choice, ...]]:
    """``[layer.draw(generator) for layer in layers]`` from one call to the generator: a CPU generator fills a
    tensor in order, so the configurations are the same (a generator on another device draws per layer)."""
    if generator.device.type != "cpu":
        return [layer.draw(generator) for layer in layers]
    rows = torch.randint(0, 1 << 30, (len(layers), len(GENES)), generator=generator).tolist()
    return [layer.plan_of(row) for layer, row in zip(layers, rows)]


class UniformSampler:
    """What ``supernet_mode`` installs on every layer: a uniform draw per layer and forward from one generator.
    The weights built for a whole forward (``batched_weights``) draw for all its layers at once."""

    __slots__ = ("generator",)

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, layer: GLoRALayer) -> tuple[Choice, ...]:
        return layer.draw(self.generator)

    def draw_all(self, layers: Sequence[GLoRALayer]) -> list[tuple[Choice, ...]]:
        return draw_plans(layers, self.generator)


def supernet_mode(model: nn.Module, generator: GeneratorLike = None) -> torch.Generator:
    """Make every GLoRA layer draw a fresh uniform configuration on each forward; returns the generator used.

    Layers whose weights are built for the whole forward (``glora.set_batched_weights``) draw once when the
    model's forward starts, so a forward recomputed under gradient checkpointing reuses the draw; a layer running
    its own node draws when it runs and would draw again in a recomputation: draw per step with ``sample_subnet``
    and ``set_subnet`` there instead (``SupernetTrainer`` does so)."""
    g = make_generator(generator)
    sampler = UniformSampler(g)
    for _, layer in _layers_or_raise(model):
        layer.set_sampler(sampler)
    return g


def count_params(model: nn.Module, subnet: Subnet) -> int:
    """Adapter parameters used by ``subnet`` (the classifier head and other extra modules are not counted)."""
    plans = validate_subnet(model, subnet)
    return sum(layer.cost(plans[name]) for name, layer in glora_layers(model))


def adapter_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The stored GLoRA support tensors (the supernet's trainable adapter state)."""
    for name, param in model.named_parameters():
        if param.requires_grad and _is_adapter_param(name):
            yield name, param


FACTOR_GENES = {"Ad": "A", "Au": "A", "Bd": "B", "Bu": "B", "Cd": "C", "Cu": "C", "D": "D", "E": "E"}


def adapter_gene(name: str) -> Optional[str]:
    """The support tensor (``"A"`` .. ``"E"``) that a parameter named ``name`` stores, or None for any other."""
    return None if ".base_layer." in name else FACTOR_GENES.get(name.rsplit(".", 1)[-1])


def _is_adapter_param(name: str) -> bool:
    return adapter_gene(name) is not None


def trainable_parameters_summary(model: nn.Module) -> str:
    """A one-line summary in the spirit of PEFT's ``print_trainable_parameters``."""
    total = sum(p.numel() for p in model.parameters())
    adapter = sum(p.numel() for _, p in adapter_parameters(model))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen_base = total - adapter - (trainable - adapter)
    parts = [
        f"supernet adapter params: {adapter:,}",
        f"other trainable params: {trainable - adapter:,}",
        f"frozen params: {frozen_base:,}",
        f"all params: {total:,}",
        f"trainable%: {100.0 * trainable / max(total, 1):.4f}",
    ]
    subnet = get_subnet(model) if any(True for _ in glora_layers(model)) else None
    if subnet is not None:
        parts.insert(1, f"current subnet params: {count_params(model, subnet):,}")
    return " || ".join(parts)


def describe(model: nn.Module) -> dict[str, Any]:
    """Per-layer shape facts, used by adapter files to check a base model matches."""
    return {
        name: {
            "kind": layer.kind,
            "type": type(layer.base_layer).__name__,
            "weight_shape": list(layer.base_layer.weight.shape),
            "has_bias": layer.has_bias,
            "out_features": layer.out_features,
            "in_features": layer.in_features,
        }
        for name, layer in _layers_or_raise(model)
    }
