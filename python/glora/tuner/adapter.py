"""Adapter files: the supernet's tensors in safetensors, a JSON config beside them (PEFT's folder layout).

Each file is written atomically. Loading reads and checks everything (the config's fields, the tensors' names,
shapes and dtypes, the stored subnet) before it changes the model, so a refused adapter leaves it as it was."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any, Optional, Union

import torch
from torch import nn

from glora.files.atomic import write_json
from glora.files.errors import AdapterFileError, AdapterMismatchError, MissingFileError
from glora.files.tensors import read_tensors, write_tensors
from glora.layers import batched_weights
from glora.tuner.config import GLoRAConfig
from glora.tuner.subnets import Subnet, set_subnet, validate_subnet
from glora.tuner.wrapping import adapter_parameters, config_of, describe, glora_layers, wrap
from glora.version import __version__

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT_VERSION = 1
LAYER_FIELDS = {"type": str, "weight_shape": list, "has_bias": bool}  # what loading compares with the model

__all__ = ["AdapterMismatchError", "load_adapter", "read_adapter_config", "save_adapter"]

PathLike = Union[str, os.PathLike]


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    adapter = dict(adapter_parameters(model))
    extra = {n: p for n, p in model.named_parameters() if p.requires_grad and n not in adapter}
    return {**adapter, **extra}


def save_adapter(model: nn.Module, path: PathLike, subnet: Optional[Subnet] = None) -> None:
    """Write the GLoRA tensors (and trainable extra modules) of ``model`` into the folder ``path``."""
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
    write_tensors(
        os.path.join(path, WEIGHTS_NAME),
        _trainable_state(model),
        {"format": "pt", "glora_format": "adapter", "glora_version": __version__},
    )
    write_json(os.path.join(path, CONFIG_NAME), meta, indent=2, sort_keys=True)


def read_adapter_config(path: PathLike) -> dict[str, Any]:
    """The adapter config of the folder ``path``, checked field by field: a missing or malformed field raises
    :class:`~glora.files.errors.AdapterFileError` naming the field and the file."""
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(file):
        raise MissingFileError(f"no GLoRA adapter config at {file}", path=file)
    with open(file, encoding="utf-8") as fh:
        try:
            meta = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AdapterFileError(f"{file} is not valid JSON: {err}", path=file) from None
    if not isinstance(meta, dict):
        raise AdapterFileError(f"{file} holds a JSON {type(meta).__name__}, not an adapter config", path=file)
    for key in ("format_version", "config", "layers"):
        if key not in meta:
            raise AdapterFileError(f"{file} lacks the field {key!r}; is it a glora adapter?", path=file)
    if meta["format_version"] != FORMAT_VERSION:
        raise AdapterFileError(
            f"{file} has format version {meta['format_version']!r}, this glora reads {FORMAT_VERSION}", path=file
        )
    _check_config_fields(file, meta)
    return meta


def _check_config_fields(file: str, meta: dict[str, Any]) -> None:
    try:
        GLoRAConfig.from_dict(meta["config"])
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise AdapterFileError(f"{file}: the field 'config' is not a valid GLoRAConfig: {err}", path=file) from None
    if not isinstance(meta["layers"], dict):
        raise AdapterFileError(f"{file}: the field 'layers' is not a mapping of layer names", path=file)
    for name, facts in meta["layers"].items():
        for key, kind in LAYER_FIELDS.items():
            if not isinstance(facts, dict) or key not in facts:
                raise AdapterFileError(f"{file}: layer {name!r} lacks the field {key!r}", path=file)
            if not isinstance(facts[key], kind):
                raise AdapterFileError(
                    f"{file}: layer {name!r} field {key!r} is a {type(facts[key]).__name__}, not a {kind.__name__}",
                    path=file,
                )
    subnet = meta.get("subnet")
    if subnet is not None and not (
        isinstance(subnet, dict)
        and all(
            isinstance(genes, dict) and all(isinstance(v, str) for v in genes.values()) for genes in subnet.values()
        )
    ):
        raise AdapterFileError(f"{file}: the field 'subnet' is not a mapping of layers to gene choices", path=file)


def load_adapter(model: nn.Module, path: PathLike) -> nn.Module:
    """Load an adapter folder onto ``model`` (wrapping it first if it is a plain base model); returns it.

    A subnet stored with the adapter is set on the model. A mismatch of layers, tensor names, shapes or dtypes, or
    a stored subnet the model does not offer, raises :class:`AdapterMismatchError` naming the layer; an unreadable
    file raises :class:`~glora.files.errors.AdapterFileError` naming it. Either way the model is left as it was.
    """
    meta = read_adapter_config(path)
    state, _ = read_tensors(os.path.join(path, WEIGHTS_NAME), "GLoRA adapter weights", AdapterFileError)
    with _wrapped_unless_done(model, meta["config"], path):
        _check_layers(meta["layers"], describe(model))
        params = _check_tensors(state, _trainable_state(model))
        if meta.get("subnet") is not None:
            try:
                validate_subnet(model, meta["subnet"])
            except (KeyError, ValueError, TypeError) as err:
                raise AdapterMismatchError(f"the subnet stored in {path} does not fit the model: {err}") from None
        with torch.no_grad():
            for key, tensor in state.items():
                params[key].copy_(tensor)
        if meta.get("subnet") is not None:
            set_subnet(model, meta["subnet"])
    return model


def _check_same_space(saved: GLoRAConfig, current: GLoRAConfig, path: PathLike) -> None:
    """Refuse an adapter whose search space (ranks, bias terms, offered kinds) differs from the wrapped model's."""
    fields = ("offered_ranks", "add_bias", "choices")
    differ = [
        f"{f} {getattr(saved, f)!r} (adapter) vs {getattr(current, f)!r} (model)"
        for f in fields
        if getattr(saved, f) != getattr(current, f)
    ]
    if differ:
        raise AdapterMismatchError(f"the adapter at {path} was saved for another search space: " + "; ".join(differ))


@contextlib.contextmanager
def _wrapped_unless_done(model: nn.Module, config: dict[str, Any], path: PathLike) -> Iterator[None]:
    """Wrap a plain ``model`` as the adapter was for the block; if the block (or wrapping) fails, put back the
    original modules, trainability flags and hooks, so the model is as it was."""
    current = getattr(model, "glora_config", None)
    if current is not None:
        _check_same_space(GLoRAConfig.from_dict(config), current, path)
        yield
        return
    modules = dict(model.named_modules())
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    try:
        try:
            wrap(model, GLoRAConfig.from_dict(config))
        except (ValueError, TypeError) as err:
            raise AdapterMismatchError(f"cannot wrap the model as the adapter at {path} was: {err}") from None
        yield
    except BaseException:
        for name, _ in list(glora_layers(model)):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, modules[name])
        for p, flag in trainable:
            p.requires_grad_(flag)
        batched_weights.uninstall(model)
        if "glora_config" in vars(model):
            del model.glora_config
        raise


def _check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor the model trains must be in the file with its shape, and a dtype it converts to without
    changing kind (floating point stays floating point); returns the parameters by name."""
    for key in sorted(set(state) | set(expected)):
        if key not in state:
            raise AdapterMismatchError(f"adapter file lacks tensor {key!r} that the model has", _layer_of(key))
        if key not in expected:
            raise AdapterMismatchError(f"adapter tensor {key!r} has no counterpart in the model", _layer_of(key))
        got, want = state[key], expected[key]
        if tuple(got.shape) != tuple(want.shape):
            raise AdapterMismatchError(
                f"adapter tensor {key!r} has shape {tuple(got.shape)}, the model's has {tuple(want.shape)}",
                _layer_of(key),
            )
        if got.dtype != want.dtype and not (got.dtype.is_floating_point and want.dtype.is_floating_point):
            raise AdapterMismatchError(
                f"adapter tensor {key!r} is {got.dtype}, the model's parameter is {want.dtype}", _layer_of(key)
            )
    return expected


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
