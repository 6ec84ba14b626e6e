"""Budget specifications: a parameter count, the count LoRA of some rank would train, or a share of the model.

``glora run --budget`` takes one of

- ``N``: a parameter count (digits only, ``73728``);
- ``lora:R[:MODULES]``: the parameters LoRA of rank ``R`` would train on ``MODULES`` of this model (comma-separated
  names or suffixes, matched as a :class:`~glora.GLoRAConfig` ``target_modules`` list is); without ``MODULES``,
  on the run's target modules. The count is PEFT's: ``r * (in + out)`` for ``nn.Linear`` and transformers'
  ``Conv1D``, and for ``nn.Conv1d/2d/3d`` ``r * in_channels * prod(kernel)`` (``lora_A``, a convolution with the
  base kernel) plus ``out_channels * r / groups`` (``lora_B``, a grouped 1x1 convolution);
- ``P%``: ``P`` percent (``0 < P <= 100``, decimals allowed) of the base model's parameter count, rounded down.

:func:`parse_budget` reads a spec, :func:`resolve_budget` turns it into a count for a model, :func:`describe`
says it in words. Malformed specs raise :class:`glora.errors.ConfigError` naming the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Union, cast

from torch import Tensor, nn

from glora.errors import ConfigError
from glora.layers.layer import GLoRALayer, is_hf_conv1d
from glora.tuner.targeting import name_matches

__all__ = ["BudgetSpec", "describe", "lora_param_count", "parse_budget", "resolve_budget"]

KINDS = ("count", "lora", "share")
FORMS = "N (a parameter count), lora:R[:MODULES] (LoRA rank R's count) or P% (a share of the model, 0 < P <= 100)"

_COUNT = re.compile(r"[0-9]+")
_LORA = re.compile(r"lora:([^:]*)(?::(.*))?", re.IGNORECASE | re.DOTALL)
_SHARE = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*%")
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class BudgetSpec:
    """A parsed budget: ``kind`` is ``"count"`` (``count`` set), ``"lora"`` (``rank`` set, ``modules`` the
    module names or None for the run's targets) or ``"share"`` (``percent`` set, in (0, 100])."""

    kind: str
    count: Optional[int] = None
    rank: Optional[int] = None
    modules: Optional[list[str]] = None
    percent: Optional[float] = None


def _bad(spec: object, why: str) -> ConfigError:
    return ConfigError(
        f"budget {spec!r}: {why}; expected {FORMS}", kind="bad_budget", details={"setting": "budget", "value": spec}
    )


def parse_budget(spec: Union[int, str]) -> BudgetSpec:
    """Read a budget spec (an int, or the text of ``--budget``); raise :class:`ConfigError` naming it otherwise."""
    if isinstance(spec, BudgetSpec):
        return spec
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise _bad(spec, f"a budget is an int or a text, not {type(spec).__name__}")
    if isinstance(spec, int):
        if spec < 0:
            raise _bad(spec, "a parameter count cannot be negative")
        return BudgetSpec("count", count=spec)
    text = spec.strip()
    if _COUNT.fullmatch(text):
        return BudgetSpec("count", count=int(text))
    lora = _LORA.fullmatch(text)
    if lora:
        rank_text, modules_text = lora.group(1).strip(), lora.group(2)
        if not _COUNT.fullmatch(rank_text) or int(rank_text) < 1:
            raise _bad(spec, f"the LoRA rank must be a positive integer, got {rank_text!r}")
        modules: Optional[list[str]] = None
        if modules_text is not None:
            modules = [m.strip() for m in modules_text.split(",")]
            if not all(modules):
                raise _bad(spec, "MODULES must be comma-separated module names (none empty)")
        return BudgetSpec("lora", rank=int(rank_text), modules=modules)
    share = _SHARE.fullmatch(text)
    if share:
        percent = Fraction(share.group(1))
        if not 0 < percent <= 100:
            raise _bad(spec, "a share must be above 0% and at most 100%")
        return BudgetSpec("share", percent=float(share.group(1)))
    if text.startswith("-") and _COUNT.fullmatch(text[1:]):
        raise _bad(spec, "a parameter count cannot be negative")
    raise _bad(spec, "not a budget")


def _base_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module, with a GLoRA layer standing for its base layer under its own name."""
    inside: Optional[str] = None
    for name, module in model.named_modules():
        if inside is not None and name.startswith(inside):
            continue
        inside = None
        if isinstance(module, GLoRALayer):
            inside = name + "."
            yield name, module.base_layer
        else:
            yield name, module


def _layer_count(name: str, module: nn.Module, rank: int) -> Optional[int]:
    """LoRA's trainable parameters at ``rank`` on ``module`` as PEFT builds them, None for an unsupported kind."""
    if isinstance(module, nn.Linear):
        return rank * (module.in_features + module.out_features)
    if is_hf_conv1d(module):
        rows, cols = cast(Tensor, module.weight).shape  # (in, out): transposed against nn.Linear
        return rank * (int(rows) + int(cols))
    if isinstance(module, _CONV_TYPES):
        if rank % module.groups:
            raise ConfigError(
                f"LoRA rank {rank} on {name!r} ({type(module).__name__} with groups={module.groups}): PEFT needs a "
                f"rank divisible by groups",
                kind="bad_budget",
                details={"setting": "budget", "module": name},
            )
        a = rank * module.in_channels * math.prod(module.kernel_size)
        return a + module.out_channels * rank // module.groups
    return None


def _spec(modules: Union[str, Sequence[str]]) -> Union[str, list[str]]:
    return modules if isinstance(modules, str) else list(modules)


def lora_param_count(model: nn.Module, rank: int, modules: Union[str, Sequence[str]]) -> int:
    """The parameters LoRA of ``rank`` trains on the layers of ``model`` that ``modules`` matches (names or
    suffixes; a single string is a regular expression of the whole name, or ``"all-linear"``), as PEFT counts them.

    ``model`` is a base model or a GLoRA-wrapped one (a GLoRA layer counts as its base layer). Raises
    :class:`ConfigError` when ``modules`` matches no layer, or matches one LoRA cannot adapt."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}", details={"setting": "budget"})
    spec = _spec(modules)
    total, matched = 0, 0
    for name, module in _base_layers(model):
        if not name:
            continue
        if spec == "all-linear":
            if not (isinstance(module, nn.Linear) or is_hf_conv1d(module)):
                continue
        elif not name_matches(name, spec):
            continue
        count = _layer_count(name, module, rank)
        if count is None:
            raise ConfigError(
                f"module {name!r} matched by {spec!r} is a {type(module).__name__}; LoRA adapts nn.Linear, "
                f"nn.Conv1d/2d/3d and transformers' Conv1D (name those layers)",
                kind="bad_budget",
                details={"setting": "budget", "module": name},
            )
        total += count
        matched += 1
    if not matched:
        sample = [n for n, _ in _base_layers(model) if n][:12]
        raise ConfigError(
            f"LoRA modules {spec!r} matched no layer of {type(model).__name__}; some module names are: {sample}",
            kind="bad_budget",
            details={"setting": "budget", "modules": spec},
        )
    return total


def base_param_count(model: nn.Module) -> int:
    """The model's parameters without the GLoRA layers' own tensors (its base parameters when wrapped)."""
    adapter = {id(p) for _, layer in _glora_layers(model) for p in layer.parameters(recurse=False)}
    return sum(p.numel() for p in model.parameters() if id(p) not in adapter)


def _glora_layers(model: nn.Module) -> Iterator[tuple[str, GLoRALayer]]:
    for name, module in model.named_modules():
        if isinstance(module, GLoRALayer):
            yield name, module


def resolve_budget(spec: BudgetSpec, model: nn.Module, targets: Union[str, Sequence[str]]) -> int:
    """``spec`` as a parameter count for ``model``; ``targets`` (the run's target modules) serve a ``lora`` spec
    without modules. A share is of the base model's parameters (a wrapped model's GLoRA tensors left out)."""
    if spec.kind == "count" and spec.count is not None:
        return spec.count
    if spec.kind == "lora" and spec.rank is not None:
        return lora_param_count(model, spec.rank, targets if spec.modules is None else spec.modules)
    if spec.kind == "share" and spec.percent is not None:
        return math.floor(base_param_count(model) * Fraction(repr(spec.percent)) / 100)
    raise ConfigError(f"not a complete budget spec: {spec!r}", kind="bad_budget", details={"setting": "budget"})


def describe(spec: BudgetSpec) -> str:
    """The spec in words: ``"73,728 parameters"``, ``"LoRA r=8 on query, value"``, ``"0.5% of the base model"``."""
    if spec.kind == "count":
        return f"{spec.count:,} parameters"
    if spec.kind == "lora":
        on = "the run's target modules" if spec.modules is None else ", ".join(spec.modules)
        return f"LoRA r={spec.rank} on {on}"
    return f"{spec.percent:g}% of the base model's parameters"
