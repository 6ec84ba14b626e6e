"""Folding a subnet into plain layers (structural re-parameterisation, ``docs/method.md``, "Merging")."""

from __future__ import annotations

import copy
import warnings
from typing import Optional

import torch
from torch import nn

from glora.layers import batched_weights
from glora.tuner.subnets import Subnet, get_subnet, validate_subnet
from glora.tuner.wrapping import glora_layers

Tensor = torch.Tensor


class BiasAddedWarning(UserWarning):
    """A merge gave a bias-free layer a bias (add_bias=True and a subnet with C or E active there)."""


def merge(model: nn.Module, subnet: Subnet) -> nn.Module:
    """A copy of the base architecture with ``W'``, ``b'`` of ``subnet`` folded in; ``model`` is left unchanged.

    Every term is computed from the original ``W0`` in float32 (or wider) and stored in the base weight's dtype.
    """
    merged = _merged_tensors(model, subnet)
    memo = {id(layer): _carrying(copy.deepcopy(layer.base_layer), *merged[name]) for name, layer in glora_layers(model)}
    copied = copy.deepcopy(model, memo)
    _unload(copied)
    return copied


def merge_and_unload(model: nn.Module, subnet: Optional[Subnet] = None) -> nn.Module:
    """Fold ``subnet`` (default: the model's fixed subnet) into ``model`` in place, as PEFT's method of that name
    does: every GLoRA layer is replaced by its base layer carrying ``W'`` and ``b'``, the model's GLoRA state is
    removed, and the model (now the base architecture) is returned. :func:`merge` leaves the wrapped model intact."""
    if subnet is None:
        subnet = get_subnet(model)
        if subnet is None:
            raise ValueError(
                "merge_and_unload needs a subnet: pass one, or fix it first with glora.set_subnet(model, subnet)"
            )
    merged = _merged_tensors(model, subnet)  # every layer's, before any is replaced: an error leaves the model whole
    for name, layer in list(glora_layers(model)):
        parent_name, _, attr = name.rpartition(".")
        setattr(
            model.get_submodule(parent_name) if parent_name else model, attr, _carrying(layer.base_layer, *merged[name])
        )
    _unload(model)
    return model


def _merged_tensors(model: nn.Module, subnet: Subnet) -> dict[str, tuple[Tensor, Optional[Tensor]]]:
    """Each GLoRA layer's ``W'`` and ``b'`` for ``subnet`` in its base layer's layout, by layer name; warns when
    a bias-free layer gains a bias."""
    plans = validate_subnet(model, subnet)
    merged = {name: layer.merged_tensors(plans[name]) for name, layer in glora_layers(model)}
    gained = [
        name for name, layer in glora_layers(model) if layer.base_layer.bias is None and merged[name][1] is not None
    ]
    if gained:
        warnings.warn(
            f"merge adds a bias to {len(gained)} layer(s) that had none (add_bias=True and C or E active): "
            f"{gained[:5]}{' ...' if len(gained) > 5 else ''}; set add_bias=False to keep the base architecture",
            BiasAddedWarning,
            stacklevel=3,
        )
    return merged


def _carrying(base: nn.Module, weight: Tensor, bias: Optional[Tensor]) -> nn.Module:
    """``base`` with ``weight`` and ``bias`` (when not None) as its frozen parameters."""
    base.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        base.bias = nn.Parameter(bias, requires_grad=False)
    return base


def _unload(model: nn.Module) -> None:
    """Remove the GLoRA state of a model whose GLoRA layers are gone, and freeze it."""
    if hasattr(model, "glora_config"):
        del model.glora_config
    batched_weights.uninstall(model)
    for p in model.parameters():
        p.requires_grad_(False)
