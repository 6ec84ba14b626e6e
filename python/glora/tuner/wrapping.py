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
    All or nothing: the targets and ``modules_to_save`` are resolved before anything changes, and an error while
    replacing (out of memory on a large model) puts back every layer and ``requires_grad`` flag.
    """
    check_model(model)
    if not isinstance(config, GLoRAConfig):
        raise TypeError(f"config must be a glora.GLoRAConfig, got {type(config).__name__}")
    if any(True for _ in glora_layers(model)):
        raise ValueError("model is already wrapped with GLoRA layers")
    targets = select_targets(model, config.target_modules, config.exclude_modules, config.modules_to_save)
    to_save = _modules_to_save(model, config.modules_to_save)
    own = dataclasses.replace(config)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for name in targets:
            parent, attr = _parent(model, name)
            base = getattr(parent, attr)
            layer = wrap_layer(base, own.max_rank, own.offered_ranks, own.add_bias, own.init, own.choices)
            setattr(parent, attr, layer)
            replaced.append((parent, attr, base))
        for module in to_save:
            module.requires_grad_(True)
        batched_weights.install(model, [layer for _, layer in glora_layers(model)], own)
    except BaseException:
        for parent, attr, base in reversed(replaced):
            setattr(parent, attr, base)
        for p, flag in flags:
            p.requires_grad_(flag)
        raise
    model.glora_config = own  # type: ignore[assignment]
    return model


def check_model(model: object) -> None:
    """Raise TypeError unless ``model`` is a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (the model itself), got {type(model).__name__}")


_MISSING: Any = object()


def set_batched_weights(model: nn.Module, mode: str = _MISSING) -> None:
    """Set ``GLoRAConfig.batched_weights`` (``"auto"`` or ``"always"``; see there) on a wrapped model."""
    if mode is _MISSING:
        raise TypeError(
            "set_batched_weights takes the wrapped model and the mode: glora.set_batched_weights(model, "
            "mode), or GLoRAConfig(batched_weights=mode) when wrapping"
        )
    config_of(model).batched_weights = check_batched_weights(mode)


def _modules_to_save(model: nn.Module, names: Optional[list[str]]) -> list[nn.Module]:
    """The modules ``modules_to_save`` names; raises when it names some but matches none."""
    if not names:
        return []
    found = [m for n, m in model.named_modules() if n and name_matches(n, names)]
    if not found:
        sample = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(
            f"modules_to_save={names!r} matched no module of {type(model).__name__}; some module names are: {sample}"
        )
    return found


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    if "." in name:
        parent_name, attr = name.rsplit(".", 1)
        return model.get_submodule(parent_name), attr
    return model, name


NOT_WRAPPED = "model has no GLoRA layers: call glora.wrap(model, config) first"


def config_of(model: nn.Module) -> GLoRAConfig:
    """The config ``model`` was wrapped with."""
    check_model(model)
    config = getattr(model, "glora_config", None)
    if config is None:
        raise ValueError(NOT_WRAPPED)
    return config


def glora_layers(model: nn.Module) -> Iterator[tuple[str, GLoRALayer]]:
    """(name, layer) for every GLoRA layer, in module order."""
    check_model(model)
    for name, module in model.named_modules():
        if isinstance(module, GLoRALayer):
            yield name, module


def layers_or_raise(model: nn.Module) -> list[tuple[str, GLoRALayer]]:
    """:func:`glora_layers` as a list; raises when the model has none."""
    layers = list(glora_layers(model))
    if not layers:
        raise ValueError(NOT_WRAPPED)
    return layers


def adapter_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The stored GLoRA support tensors (the supernet's trainable adapter state): the GLoRA layers' own
    parameters, not their frozen base layers' and nothing outside them."""
    for layer_name, layer in glora_layers(model):
        for name, param in layer.named_parameters(recurse=False):
            if param.requires_grad:
                yield f"{layer_name}.{name}", param


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
