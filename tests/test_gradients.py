"""The fused GLoRA layer's gradients equal plain autograd through METHOD.md's formulas, on random configurations."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import glora

FACTORS = ("Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E")


def _reference(layer: glora.GLoRALayer, config: dict, x: torch.Tensor) -> torch.Tensor:
    """W' = W0 + W0*A + B, b' = b0 + b0*D + E + W0 @ C, with full-size zeros for 'none' (the reference's way)."""
    base = layer.base_layer
    w0 = base.weight.t() if layer.kind == "hf_conv1d" else base.weight.reshape(layer.out_features, -1)
    out, inn = w0.shape
    b0 = base.bias if base.bias is not None else torch.zeros(out, dtype=w0.dtype)

    def mat(down, up, choice, rows, cols):
        if choice == "none":
            return torch.zeros(rows, cols, dtype=w0.dtype)
        if choice == "scalar":
            return down[0, 0].expand(rows, cols)
        if choice == "vector":
            return down[:, :1].expand(rows, cols)
        r = int(choice[5:])
        return down[:, :r] @ up[:r, :]

    def vec(v, choice):
        if choice == "none":
            return torch.zeros(out, dtype=w0.dtype)
        return v[:1].expand(out) if choice == "scalar" else v

    a = mat(layer.Ad, layer.Au, config["A"], out, inn)
    b = mat(layer.Bd, layer.Bu, config["B"], out, inn)
    c = mat(layer.Cd, layer.Cu, config["C"], inn, 1) if hasattr(layer, "Cd") else torch.zeros(inn, 1, dtype=w0.dtype)
    d = vec(layer.D, config["D"]) if hasattr(layer, "D") else torch.zeros(out, dtype=w0.dtype)
    e = vec(layer.E, config["E"]) if hasattr(layer, "E") else torch.zeros(out, dtype=w0.dtype)
    w = w0 + w0 * a + b
    bias = b0 + b0 * d + e + (w0 @ c).squeeze(1)
    if layer.kind == "conv":
        return base._conv_forward(x, w.reshape(base.weight.shape), bias)
    return F.linear(x, w, bias)


def _layers():
    from transformers.pytorch_utils import Conv1D

    return [
        ("linear", lambda: nn.Linear(7, 5), lambda: torch.randn(3, 4, 7)),
        ("linear_no_bias", lambda: nn.Linear(6, 9, bias=False), lambda: torch.randn(5, 6)),
        ("hf_conv1d", lambda: Conv1D(5, 7), lambda: torch.randn(2, 3, 7)),
        ("conv2d_grouped", lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), lambda: torch.randn(2, 4, 5, 5)),
    ]


@pytest.mark.parametrize("name, make, make_x", _layers(), ids=[n for n, _, _ in _layers()])
@pytest.mark.parametrize("seed", range(12))
def test_gradients_match_plain_autograd(name, make, make_x, seed) -> None:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    layer = glora.GLoRALayer(make().double(), max_rank=4, ranks=(1, 2, 4), add_bias=rng.random() < 0.7)
    with torch.no_grad():
        for n in FACTORS:
            p = getattr(layer, n, None)
            if p is not None:
                p.copy_(torch.randn_like(p) * 0.3)
    config = {g: rng.choice(layer.choices[g] + (("lora_3",) if g in "ABC" and layer.choices[g] != ("none",) else ())) for g in glora.GENES}
    layer.set_config(config)
    x = make_x().double().requires_grad_(rng.random() < 0.8)
    y = layer(x)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    got = {n: getattr(layer, n).grad for n in FACTORS if hasattr(layer, n)}
    got_x = x.grad
    for n in FACTORS:
        if hasattr(layer, n):
            getattr(layer, n).grad = None
    x.grad = None
    expected_y = _reference(layer, config, x)
    torch.testing.assert_close(y, expected_y, rtol=1e-12, atol=1e-12)
    (expected_y * weights).sum().backward()
    for n, g in got.items():
        ref = getattr(layer, n).grad
        if ref is None or not ref.abs().sum():
            assert g is None or not g.abs().sum(), f"{n} got a gradient but takes no part in {config}"
        else:
            torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12, msg=f"{n} for {config}")
    if x.requires_grad:
        torch.testing.assert_close(got_x, x.grad, rtol=1e-10, atol=1e-12)


def test_autocast_matches_float32_reference() -> None:
    torch.manual_seed(0)
    layer = glora.GLoRALayer(nn.Linear(32, 48), max_rank=4, ranks=(4,))
    with torch.no_grad():
        for n in FACTORS:
            getattr(layer, n).copy_(torch.randn_like(getattr(layer, n)) * 0.1)
    x = torch.randn(16, 32, requires_grad=True)
    for config in ({"A": "lora_4", "B": "vector", "C": "lora_4", "D": "scalar", "E": "vector"},
                   {"A": "vector", "B": "scalar", "C": "vector", "D": "vector", "E": "none"}):
        layer.set_config(config)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        assert y.dtype == torch.bfloat16
        y.float().sum().backward()
        fused = {n: getattr(layer, n).grad.clone() for n in FACTORS if getattr(layer, n).grad is not None}
        layer.zero_grad()
        _reference(layer, config, x).sum().backward()
        for n, g in fused.items():
            ref = getattr(layer, n).grad
            assert ((g - ref).norm() / ref.norm()).item() < 2e-2, n
        layer.zero_grad()
