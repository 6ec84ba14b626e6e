"""Matching module names against target / exclude specifications, as PEFT does."""

from __future__ import annotations

import re
from typing import Optional, Union

from torch import nn

from glora.layers.layer import is_hf_conv1d, is_supported

Spec = Union[str, list[str], None]


def name_matches(name: str, spec: Spec) -> bool:
    """A string spec is a regular expression matched against the whole name; a list holds names or suffixes."""
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == s or name.endswith("." + s) for s in spec)


def select_targets(
    model: nn.Module, target_modules: Spec, exclude_modules: Spec, modules_to_save: Optional[list[str]]
) -> list[str]:
    """Names of the modules to wrap; raises when the spec matches nothing."""

    chosen = []
    for name, module in model.named_modules():
        if not name or name_matches(name, exclude_modules) or name_matches(name, modules_to_save):
            continue
        if _inside(name, modules_to_save, model):
            continue
        reads_weight_directly = _owned_by_multihead_attention(model, name)
        if target_modules == "all-linear":
            if (isinstance(module, nn.Linear) or is_hf_conv1d(module)) and not reads_weight_directly:
                chosen.append(name)
        elif name_matches(name, target_modules):
            if reads_weight_directly:
                raise TypeError(
                    f"target module {name!r} belongs to nn.MultiheadAttention, which reads its weight directly "
                    f"instead of calling it; GLoRA cannot wrap it (exclude it from target_modules)"
                )
            if not is_supported(module):
                raise TypeError(
                    f"target module {name!r} is a {type(module).__name__}; GLoRA wraps nn.Linear, nn.Conv1d/2d/3d "
                    f"and transformers' Conv1D (narrow target_modules so it matches only such layers)"
                )
            chosen.append(name)
    if not chosen:
        sample = [n for n, m in model.named_modules() if n][:12]
        raise ValueError(
            f"target_modules={target_modules!r} matched no module of {type(model).__name__}; "
            f"some module names are: {sample}"
        )
    return chosen


def _owned_by_multihead_attention(model: nn.Module, name: str) -> bool:
    if "." not in name:
        return False
    return isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.MultiheadAttention)


def _inside(name: str, modules_to_save: Optional[list[str]], model: nn.Module) -> bool:
    if not modules_to_save:
        return False
    parts = name.split(".")
    return any(name_matches(".".join(parts[:i]), modules_to_save) for i in range(1, len(parts)))
