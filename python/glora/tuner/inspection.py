"""What a wrapped model's search space holds (``glora inspect``): its layers and their choices, the smallest and
largest adapters, the base model's size, and what LoRA of common ranks would cost on the same layers."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from torch import nn

from glora.errors import ConfigError
from glora.tuner.budgets import base_param_count, lora_param_count
from glora.tuner.space import search_space
from glora.tuner.wrapping import layers_or_raise

__all__ = ["LORA_RANKS", "format_space", "inspect_space"]

LORA_RANKS = (1, 2, 4, 8, 16, 32, 64)
LISTED = 12
"""Spaces with at most this many layers are listed layer by layer; larger ones by shape."""


def inspect_space(model: nn.Module) -> dict[str, Any]:
    """The search space of a wrapped model as plain data.

    Keys: ``layers`` (per layer ``name``, ``kind``, ``in_features``, ``out_features``, ``choices`` per gene, and
    ``min_params`` / ``max_params`` of that layer), ``n_layers``, ``min_params`` / ``max_params`` (the smallest and
    largest adapters of the space), ``base_params`` (the base model's parameters, GLoRA tensors left out), and
    ``lora``: for each rank of :data:`LORA_RANKS`, ``params`` (LoRA of that rank on the wrapped layers, as PEFT
    counts it; None where PEFT cannot build it, a grouped convolution whose groups do not divide the rank) and
    ``within`` (whether that count lies in ``[min_params, max_params]``, so it can serve as a budget)."""
    layers = layers_or_raise(model)
    space = search_space(model)
    names = [name for name, _ in layers]
    info_layers = []
    for (name, layer), layer_space in zip(layers, space.layers):
        costs = layer_space.costs
        info_layers.append(
            {
                "name": name,
                "kind": layer.kind,
                "in_features": layer.in_features,
                "out_features": layer.out_features,
                "choices": {gene: list(offered) for gene, offered in layer_space.choices.items()},
                "min_params": sum(min(c.values()) for c in costs.values()),
                "max_params": sum(max(c.values()) for c in costs.values()),
            }
        )
    low, high = space.min_params, space.max_params
    lora = []
    for rank in LORA_RANKS:
        params: Optional[int]
        try:
            params = lora_param_count(model, rank, names)
        except ConfigError:
            params = None
        lora.append({"rank": rank, "params": params, "within": params is not None and low <= params <= high})
    return {
        "layers": info_layers,
        "n_layers": len(info_layers),
        "min_params": low,
        "max_params": high,
        "base_params": base_param_count(model),
        "lora": lora,
    }


def _shape(layer: dict[str, Any]) -> str:
    return f"{layer['in_features']} -> {layer['out_features']}"


def _choices(choices: dict[str, list[str]]) -> str:
    return "; ".join(f"{gene}: {', '.join(offered)}" for gene, offered in choices.items())


def _share(params: int, base: int) -> str:
    return f"{100 * params / base:.3g}%" if base else "-"


def format_space(info: dict[str, Any]) -> str:
    """:func:`inspect_space`'s data as a readable text: the layers (one line each for a small space; grouped by
    shape for a larger one, as ``36 layers; 384 -> 384 (x24), 384 -> 1536 (x6), ...``), the choices offered,
    the adapter sizes and the LoRA comparison."""
    layers = info["layers"]
    base = info["base_params"]
    lines = []
    shapes = Counter(_shape(layer) for layer in layers)
    grouped = ", ".join(f"{shape} (x{n})" for shape, n in shapes.most_common())
    lines.append(f"{info['n_layers']} layers; {grouped}")
    if len(layers) <= LISTED:
        width = max(len(layer["name"]) for layer in layers)
        for layer in layers:
            lines.append(
                f"  {layer['name']:<{width}}  {layer['kind']:<9} {_shape(layer):>14}  "
                f"{layer['min_params']:>10,} .. {layer['max_params']:,} parameters"
            )
    offered = Counter(_choices(layer["choices"]) for layer in layers)
    lines.append("choices offered:")
    for text, n in offered.most_common():
        suffix = "" if len(offered) == 1 else f" ({n} layers)"
        lines.append(f"  {text}{suffix}")
    lines.append(
        f"adapter size: smallest {info['min_params']:,}, largest {info['max_params']:,} parameters "
        f"({_share(info['max_params'], base)} of the base model)"
    )
    lines.append(f"base model: {base:,} parameters")
    lines.append("LoRA on the same layers (as a budget: lora:R):")
    lines.append(f"  {'rank':>4} {'parameters':>12} {'of base':>8}  in the space")
    for row in info["lora"]:
        if row["params"] is None:
            lines.append(f"  {row['rank']:>4} {'-':>12} {'-':>8}  no (PEFT needs a rank divisible by groups)")
            continue
        if row["within"]:
            where = "yes"
        else:
            where = "no: above the largest" if row["params"] > info["max_params"] else "no: below the smallest"
        lines.append(f"  {row['rank']:>4} {row['params']:>12,} {_share(row['params'], base):>8}  {where}")
    return "\n".join(lines)
