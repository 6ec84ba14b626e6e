"""The settings of supernet training and what a run reports; every setting is checked when the config is made."""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps <= self.steps):
            raise ValueError(f"warmup_steps must be an integer in [0, steps], got {self.warmup_steps!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {list(AUTOCAST_DTYPES)}, got {self.precision!r}")
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {list(SAMPLING)}, got {self.sampling!r}")
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
        if not self.distill_temperature > 0:
            raise ValueError(f"distill_temperature must be positive, got {self.distill_temperature!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")


@dataclass
class TrainResult:
    """What one ``train`` call did: the optimizer step reached, each step's loss, wall time and throughput."""

    steps: int
    losses: list[float]
    seconds: float
    samples_per_second: float
