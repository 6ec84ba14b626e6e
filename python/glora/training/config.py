"""The settings of supernet training and what a run reports; every setting is checked when the config is made."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Union

import torch

from glora.engine.space import budget_bounds

SAMPLING = ("uniform", "budget", "sandwich", "fixed")
AUTOCAST_DTYPES: dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Settings of supernet training (the reference recipe: AdamW, lr 1e-4, weight decay 1e-4, cosine decay).

    ``sampling`` picks the subnets each step trains (``glora.training.paths``): ``"uniform"``; ``"budget"`` and
    ``"sandwich"``, which draw within ``budget`` (a maximum or a ``(min, max)`` pair of adapter parameters, kept as
    the pair); ``"fixed"``, which trains the given ``subnet`` alone. ``distill`` (sandwich only) teaches the other
    paths from the largest subnet's predictions at ``distill_temperature``. ``precision`` is the autocast type.
    ``compile`` runs each path's forward and loss through ``torch.compile`` (one compiled callable, the model alone
    under ``torchrun``; the paths enter it as tensors, so it compiles at most twice, four times with ``distill``,
    whatever paths are drawn; on one GPU with one backward per step it is replayed as a CUDA graph, docs/method.md).
    """

    steps: int
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    grad_accum: int = 1
    max_grad_norm: Optional[float] = None
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    sampling: str = "uniform"
    budget: Optional[Union[int, tuple[int, int]]] = None
    distill: bool = False
    distill_temperature: float = 1.0
    subnet: Optional[dict[str, dict[str, str]]] = None
    seed: int = 0
    progress: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            _check_int(name, getattr(self, name), 1)
        _check_int("warmup_steps", self.warmup_steps, 0, self.steps, "[0, steps]")
        _check_int("seed", self.seed, 0, SEED_MAX)
        _check_real("lr", self.lr, positive=True)
        _check_real("weight_decay", self.weight_decay, positive=False)
        _check_real("distill_temperature", self.distill_temperature, positive=True)
        if self.max_grad_norm is not None:
            _check_real("max_grad_norm", self.max_grad_norm, positive=True, extra="or None for no clipping")
        for name in ("gradient_checkpointing", "distill", "progress", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _check_option("precision", self.precision, list(AUTOCAST_DTYPES))
        _check_option("sampling", self.sampling, list(SAMPLING))
        if self.subnet is not None and not isinstance(self.subnet, dict):
            raise ValueError(f"subnet must be a dict of layer names to gene choices or None, got {self.subnet!r}")
        if (self.sampling == "fixed") != (self.subnet is not None):
            raise ValueError("sampling='fixed' trains the subnet given as subnet=...; give both or neither")
        if self.sampling in ("budget", "sandwich") and self.budget is None:
            raise ValueError(
                f"sampling={self.sampling!r} needs a budget (a maximum or a (min, max) pair of parameters)"
            )
        if self.budget is not None:
            self.budget = budget_bounds(self.budget)  # one form for 700, (0, 700) and [0, 700]
        if self.distill and self.sampling != "sandwich":
            raise ValueError("distill=True needs sampling='sandwich' (the largest subnet is the teacher)")


SEED_MAX = (1 << 44) - 1
"""The largest training seed: the data order seeds each epoch with ``seed * 1_000_003 + epoch``
(``glora.training.batches``), which must stay below torch's limit of 2**64."""


def _check_int(name: str, value: object, low: int, high: Optional[int] = None, shown: str = "") -> None:
    """Raise ValueError naming ``name`` unless ``value`` is an int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        if shown:
            allowed = f"an integer in {shown}"
        elif high is not None:
            allowed = f"an integer in [{low}, {high}]"
        else:
            allowed = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_real(name: str, value: object, *, positive: bool, extra: str = "") -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a finite real number (not a bool), > 0 when
    ``positive``, >= 0 otherwise."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (number > 0 or (number == 0 and not positive)):
            return
    allowed = "a finite positive number" if positive else "a finite non-negative number"
    raise ValueError(f"{name} must be {allowed}{' ' + extra if extra else ''}, got {value!r}")


def _check_option(name: str, value: object, options: list[str]) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


@dataclass
class TrainResult:
    """What one ``train`` call did: the optimizer step reached, each step's loss, wall time and throughput."""

    steps: int
    losses: list[float]
    seconds: float
    samples_per_second: float
