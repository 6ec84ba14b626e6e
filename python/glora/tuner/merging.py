"""Folding a subnet into plain layers (structural re-parameterisation, METHOD.md section 6)."""

from __future__ import annotations

import copy
import warnings

from torch import nn

from glora.layers import batched_weights
from glora.tuner.wrapping import glora_layers
from glora.tuner.subnets import Subnet, validate_subnet


class BiasAddedWarning(UserWarning):
    """A merge gave a bias-free layer a bias (add_bias=True and a subnet with C or E active there)."""


def merge(model: nn.Module, subnet: Subnet) -> nn.Module:
    """A copy of the base architecture with ``W'``, ``b'`` of ``subnet`` folded in; ``model`` is left unchanged.

    Every term is computed from the original ``W0`` in float32 (or wider) and stored in the base weight's dtype.
    """
    plans = validate_subnet(model, subnet)
    merged_layers = {}
    gained = []
    for name, layer in glora_layers(model):
        weight, bias = layer.merged_tensors(plans[name])
        base = copy.deepcopy(layer.base_layer)
        base.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            if base.bias is None:
                gained.append(name)
            base.bias = nn.Parameter(bias, requires_grad=False)
        merged_layers[name] = base
    if gained:
        warnings.warn(
            f"merge adds a bias to {len(gained)} layer(s) that had none (add_bias=True and C or E active): "
            f"{gained[:5]}{' ...' if len(gained) > 5 else ''}; set add_bias=False to keep the base architecture",
            BiasAddedWarning,
            stacklevel=2,
        )
    memo = {id(layer): merged_layers[name] for name, layer in glora_layers(model)}
    merged = copy.deepcopy(model, memo)
    if hasattr(merged, "glora_config"):
        del merged.glora_config
    batched_weights.uninstall(merged)
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def merge_and_unload(model: nn.Module, subnet: Subnet) -> nn.Module:
    """PEFT-style name for :func:`merge`: returns the plain merged model (the wrapped one is left intact)."""
    return merge(model, subnet)
