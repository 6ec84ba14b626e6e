"""Adapter files: the supernet's tensors in safetensors, a JSON config beside them (PEFT's folder layout)."""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from glora.tuner.config import GLoRAConfig
from glora.tuner.subnets import Subnet, set_subnet, validate_subnet
from glora.tuner.wrapping import adapter_parameters, describe, wrap
from glora.version import __version__

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT_VERSION = 1


class AdapterMismatchError(ValueError):
    """An adapter file does not fit the model it is loaded onto; ``layer`` names the first offending layer."""

    def __init__(self, message: str, layer: Optional[str] = None) -> None:
        super().__init__(message)
        self.layer = layer


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    adapter = dict(adapter_parameters(model))
    extra = {n: p for n, p in model.named_parameters() if p.requires_grad and n not in adapter}
    return {n: p.detach().contiguous().cpu() for n, p in {**adapter, **extra}.items()}


def save_adapter(model: nn.Module, path: Union[str, os.PathLike], subnet: Optional[Subnet] = None) -> None:
    """Write the GLoRA tensors (and trainable extra modules) of ``model`` into the folder ``path``."""
    from glora.tuner.wrapping import config_of

    config = config_of(model)
    if subnet is not None:
        validate_subnet(model, subnet)
    os.makedirs(path, exist_ok=True)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "glora_version": __version__,
        "config": config.to_dict(),
        "layers": describe(model),
        "subnet": subnet,
    }
    save_file(
        _trainable_state(model),
        os.path.join(path, WEIGHTS_NAME),
        metadata={"format": "pt", "glora_version": __version__},
    )
    with open(os.path.join(path, CONFIG_NAME), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)


def read_adapter_config(path: Union[str, os.PathLike]) -> dict[str, Any]:
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no GLoRA adapter config at {file}")
    with open(file, encoding="utf-8") as fh:
        try:
            meta = json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON: {err}") from None
    for key in ("format_version", "config", "layers"):
        if key not in meta:
            raise ValueError(f"{file} lacks the field {key!r}; is it a glora adapter?")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{file} has format version {meta['format_version']}, this glora reads {FORMAT_VERSION}")
    return meta


def load_adapter(model: nn.Module, path: Union[str, os.PathLike]) -> nn.Module:
    """Load an adapter folder onto ``model`` (wrapping it first if it is a plain base model); returns it.

    A subnet stored with the adapter is set on the model. Any mismatch of layers or shapes raises
    :class:`AdapterMismatchError` naming the layer.
    """
    meta = read_adapter_config(path)
    if getattr(model, "glora_config", None) is None:
        try:
            wrap(model, GLoRAConfig.from_dict(meta["config"]))
        except (ValueError, TypeError) as err:
            raise AdapterMismatchError(f"cannot wrap the model as the adapter at {path} was: {err}") from None
    _check_layers(meta["layers"], describe(model))
    state = load_file(os.path.join(path, WEIGHTS_NAME))
    params = dict(model.named_parameters())
    expected = set(_trainable_state(model))
    for key in sorted(set(state) | expected):
        if key not in state:
            raise AdapterMismatchError(f"adapter file lacks tensor {key!r} that the model has", _layer_of(key))
        if key not in params:
            raise AdapterMismatchError(f"adapter tensor {key!r} has no counterpart in the model", _layer_of(key))
        if tuple(state[key].shape) != tuple(params[key].shape):
            raise AdapterMismatchError(
                f"adapter tensor {key!r} has shape {tuple(state[key].shape)}, "
                f"the model's has {tuple(params[key].shape)}",
                _layer_of(key),
            )
    with torch.no_grad():
        for key, tensor in state.items():
            params[key].copy_(tensor)
    if meta.get("subnet") is not None:
        set_subnet(model, meta["subnet"])
    return model


def _layer_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _check_layers(saved: dict[str, Any], current: dict[str, Any]) -> None:
    for name in saved:
        if name not in current:
            raise AdapterMismatchError(f"adapter layer {name!r} does not exist (or is not wrapped) in the model", name)
    for name in current:
        if name not in saved:
            raise AdapterMismatchError(f"model layer {name!r} is wrapped but the adapter has no tensors for it", name)
    for name, facts in saved.items():
        if facts["weight_shape"] != current[name]["weight_shape"] or facts["type"] != current[name]["type"]:
            raise AdapterMismatchError(
                f"layer {name!r}: adapter was made for a {facts['type']} with weight {facts['weight_shape']}, "
                f"the model has a {current[name]['type']} with weight {current[name]['weight_shape']}",
                name,
            )
        if facts["has_bias"] != current[name]["has_bias"]:
            raise AdapterMismatchError(f"layer {name!r}: bias presence differs between adapter and model", name)
