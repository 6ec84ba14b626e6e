"""A one-line account of a wrapped model's parameters, in the spirit of PEFT's ``print_trainable_parameters``."""

from __future__ import annotations

from torch import nn

from glora.tuner.subnets import count_params, get_subnet
from glora.tuner.wrapping import adapter_parameters, glora_layers


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
