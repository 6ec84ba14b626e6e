"""Wrapping a model: target layers replaced by GLoRA layers, the rest frozen; the model's GLoRA layers, support
tensors and runtime options."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Optional

from torch import nn

from glora.layers import batched_weights
from glora.layers.layer import GLoRALayer, wrap_layer
from glora.tuner.config import GLoRAConfig, check_batched_weights
from glora.tuner.targeting import name_matches, select_targets


def wrap(model: nn.Module, config: GLoRAConfig) -> nn.Module:
    """Replace the target layers of ``model`` by GLoRA layers, in place; freeze everything else.

    Modules named in ``config.modules_to_save`` stay trainable. The model keeps its own copy of ``config``
    (``model.glora_config``), so runtime options changed on it reach this model only. Returns ``model``.
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
        setattr(
            parent,
            attr,
            wrap_layer(base, config.max_rank, config.offered_ranks, config.add_bias, config.init, config.choices),
        )
    _unfreeze_modules_to_save(model, config.modules_to_save)
    own = dataclasses.replace(config)
    model.glora_config = own  # type: ignore[assignment]
    batched_weights.install(model, [layer for _, layer in glora_layers(model)], own)
    return model


_MISSING: Any = object()


def set_batched_weights(model: nn.Module, mode: str = _MISSING) -> None:
    """Set ``GLoRAConfig.batched_weights`` (``"auto"`` or ``"always"``; see there) on a wrapped model."""
    if mode is _MISSING:
        raise TypeError(
            "set_batched_weights takes the wrapped model and the mode: glora.set_batched_weights(model, "
            "mode), or GLoRAConfig(batched_weights=mode) when wrapping"
        )
    config_of(model).batched_weights = check_batched_weights(mode)


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


NOT_WRAPPED = "model has no GLoRA layers: call glora.wrap(model, config) first"


def config_of(model: nn.Module) -> GLoRAConfig:
    """The config ``model`` was wrapped with."""
    config = getattr(model, "glora_config", None)
    if config is None:
        raise ValueError(NOT_WRAPPED)
    return config


def glora_layers(model: nn.Module) -> Iterator[tuple[str, GLoRALayer]]:
    """(name, layer) for every GLoRA layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, GLoRALayer):
            yield name, module


def layers_or_raise(model: nn.Module) -> list[tuple[str, GLoRALayer]]:
    """:func:`glora_layers` as a list; raises when the model has none."""
    layers = list(glora_layers(model))
    if not layers:
        raise ValueError(NOT_WRAPPED)
    return layers


FACTOR_GENES = {"Ad": "A", "Au": "A", "Bd": "B", "Bu": "B", "Cd": "C", "Cu": "C", "D": "D", "E": "E"}


def adapter_gene(name: str) -> Optional[str]:
    """The support tensor (``"A"`` .. ``"E"``) that a parameter named ``name`` stores, or None for any other."""
    return None if ".base_layer." in name else FACTOR_GENES.get(name.rsplit(".", 1)[-1])


def _is_adapter_param(name: str) -> bool:
    return adapter_gene(name) is not None


def adapter_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The stored GLoRA support tensors (the supernet's trainable adapter state)."""
    for name, param in model.named_parameters():
        if param.requires_grad and _is_adapter_param(name):
            yield name, param


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
        for name, layer in layers_or_raise(model)
    }
