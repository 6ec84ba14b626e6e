"""A direct re-implementation of the reference GLoRA layer (Arnav0400/ViT-Slim, GLoRA/), used as a baseline.

It materialises every support tensor per forward, with full-size zero tensors for ``none``, and forms
``W' = W0 + W0*A + B`` and ``b' = b0 + b0*D + E + W0 @ C`` exactly as the authors' code does. In supernet mode
every layer draws its own configuration from one generator shared by the model's layers (``replace_linears``), so the
layers' paths are independent, as with the authors' ``random.choice``.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceGLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int = 4, rng: random.Random | None = None) -> None:
        super().__init__()
        out, inn = base.weight.shape
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(base.bias.detach().clone(), requires_grad=False) if base.bias is not None else None
        self.rank = rank
        f = {"device": base.weight.device}
        self.Ad, self.Au = nn.Parameter(torch.zeros(out, rank, **f)), nn.Parameter(torch.empty(rank, inn, **f))
        self.Bd, self.Bu = nn.Parameter(torch.zeros(out, rank, **f)), nn.Parameter(torch.empty(rank, inn, **f))
        self.Cd, self.Cu = nn.Parameter(torch.zeros(inn, rank, **f)), nn.Parameter(torch.empty(rank, 1, **f))
        self.D, self.E = nn.Parameter(torch.zeros(out, **f)), nn.Parameter(torch.zeros(out, **f))
        for p in (self.Au, self.Bu, self.Cu):
            nn.init.kaiming_uniform_(p, a=5**0.5)
        self.config: dict[str, str] | None = None
        self.rng = rng or random.Random(0)

    def _path(self, choice: str, down: torch.Tensor, up: torch.Tensor | None, n: int, m: int) -> torch.Tensor:
        if choice.startswith("lora"):
            return down[:, : self.rank] @ up[: self.rank, :]
        if choice == "vector":
            return down[:, :1] if up is not None else down
        if choice == "constant":
            return down[:1, :1] if up is not None else down[:1]
        return torch.zeros(n, m, device=down.device, dtype=down.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config or {
            "A": self.rng.choice(["lora", "vector", "constant", "none"]),
            "B": self.rng.choice(["lora", "vector", "constant", "none"]),
            "C": self.rng.choice(["lora", "vector", "none"]),
            "D": self.rng.choice(["vector", "constant", "none"]),
            "E": self.rng.choice(["vector", "constant", "none"]),
        }
        out, inn = self.weight.shape
        a = self._path(cfg["A"], self.Ad, self.Au, out, inn)
        b = self._path(cfg["B"], self.Bd, self.Bu, out, inn)
        c = self._path(cfg["C"], self.Cd, self.Cu, inn, 1)
        d = self._path(cfg["D"], self.D, None, out, 1).reshape(-1)
        e = self._path(cfg["E"], self.E, None, out, 1).reshape(-1)
        weight = self.weight + self.weight * a + b
        b0 = (
            self.bias if self.bias is not None else torch.zeros(out, device=self.weight.device, dtype=self.weight.dtype)
        )
        bias = b0 + b0 * d + e + torch.matmul(self.weight, c).squeeze()
        return F.linear(x, weight, bias)


def set_config(model: nn.Module, config: dict[str, str] | None) -> None:
    """Fix every reference layer to one configuration (the reference's way of evaluating a subnet), or None."""
    for module in model.modules():
        if isinstance(module, ReferenceGLoRALinear):
            module.config = config


def replace_linears(model: nn.Module, pattern, rank: int = 4) -> nn.Module:
    """``model`` with its linear layers matching ``pattern`` replaced by reference layers drawing from one generator
    (seeded 0): a generator per layer with one seed would give all layers the same path at every step."""
    import re

    rng = random.Random(0)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and re.fullmatch(pattern, name):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], ReferenceGLoRALinear(module, rank, rng))
    for n, p in model.named_parameters():
        p.requires_grad_(any(n.endswith(s) for s in (".Ad", ".Au", ".Bd", ".Bu", ".Cd", ".Cu", ".D", ".E")))
    return model
