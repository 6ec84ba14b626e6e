"""The GLoRA layers' gradients equal plain autograd through the formulas of docs/method.md, on random configurations."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glora.layers.choices import GENES
from glora.layers.layer import ConvNd, GLoRALayer, HFConv1D, wrap_layer

FACTORS = ("Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E")


def _reference(layer: GLoRALayer, config: dict, x: torch.Tensor) -> torch.Tensor:
    """W' = W0 + W0*A + B, b' = b0 + b0*D + E + W0 @ C, with full-size zeros for 'none' (the reference's way)."""
    base = layer.base_layer
    w0 = base.weight.t() if isinstance(layer, HFConv1D) else base.weight.reshape(layer.out_features, -1)
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
    if isinstance(layer, ConvNd):
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


def _below(value: torch.Tensor, bound: float) -> None:
    assert value.item() < bound


def _assert_gradients_close(got: dict, layer: GLoRALayer, config: dict, check) -> None:
    """Each factor's gradient against the reference's (now in ``.grad``): absent where the factor takes no part."""
    for n, g in got.items():
        ref = getattr(layer, n).grad
        if ref is None or not ref.abs().sum():
            assert g is None or not g.abs().sum(), f"{n} got a gradient but takes no part in {config}"
        else:
            try:
                check(g, ref)
            except AssertionError as err:
                raise AssertionError(f"{n} for {config}: {err}") from None


@pytest.mark.parametrize("name, make, make_x", _layers(), ids=[n for n, _, _ in _layers()])
@pytest.mark.parametrize("seed", range(24))
def test_gradients_match_plain_autograd(name, make, make_x, seed) -> None:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    layer = wrap_layer(make().double(), max_rank=4, ranks=(1, 2, 4), add_bias=rng.random() < 0.7)
    with torch.no_grad():
        for n in FACTORS:
            p = getattr(layer, n, None)
            if p is not None:
                p.copy_(torch.randn_like(p) * 0.3)
    config = {
        g: rng.choice(layer.choices[g] + (("lora_3",) if g in "ABC" and layer.choices[g] != ("none",) else ()))
        for g in GENES
    }
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
    _assert_gradients_close(
        got, layer, config, lambda g, ref: torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
    )
    if x.requires_grad:
        torch.testing.assert_close(got_x, x.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("base", ["float32_autocast", "bfloat16_frozen"])
def test_low_precision_matches_float32_reference(seed: int, base: str) -> None:
    """bf16 autocast over a float32 model, and a frozen bf16 base (an LLM's weights) with float32 factors: outputs
    and factor gradients stay close to the float32 reference on random configurations."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    make = rng.choice([lambda: nn.Linear(32, 48), lambda: nn.Linear(32, 48, bias=False)])
    layer = wrap_layer(make(), max_rank=4, ranks=(2, 4), add_bias=rng.random() < 0.8)
    with torch.no_grad():
        for n in FACTORS:
            p = getattr(layer, n, None)
            if p is not None:
                p.copy_(torch.randn_like(p) * 0.1)
    config = {g: rng.choice(layer.choices[g]) for g in GENES}
    layer.set_config(config)
    x = torch.randn(16, 32, requires_grad=True)
    weights = torch.randn(16, 48).bfloat16().float()  # the upstream gradient reaches the layer in bf16
    if base == "bfloat16_frozen":
        layer.base_layer.to(torch.bfloat16)
        rounded = {n: t.detach().float() for n, t in layer.base_layer.named_parameters()}
        y = layer(x.to(torch.bfloat16))
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
    assert y.dtype == torch.bfloat16
    (y.float() * weights).sum().backward()
    got = {n: getattr(layer, n).grad for n in FACTORS if hasattr(layer, n)}
    layer.zero_grad()
    if base == "bfloat16_frozen":
        layer.base_layer.to(torch.float32)
        with torch.no_grad():
            for n, t in layer.base_layer.named_parameters():
                t.copy_(rounded[n])
    expected = _reference(layer, config, x)
    assert ((y.float() - expected).norm() / expected.norm()).item() < 2e-2
    (expected * weights).sum().backward()
    _assert_gradients_close(got, layer, config, lambda g, ref: _below((g - ref).norm() / ref.norm(), 3e-2))


@pytest.mark.parametrize("seed", range(6))
def test_no_weight_sized_copy_is_kept_over_a_compute_dtype_base(seed: int) -> None:
    """Over a bf16 base (an LLM's frozen weights) the backward rebuilds W' instead of keeping it: apart from
    the base weight itself, nothing weight-sized is saved for the backward."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    layer = wrap_layer(nn.Linear(24, 40, bias=False).to(torch.bfloat16), max_rank=4, ranks=(4,))
    config = {g: rng.choice([c for c in layer.choices[g] if c != "none"] or ["none"]) for g in GENES}
    layer.set_config(config)
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    x = torch.randn(8, 24, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    weight_sized = [t for t in saved if t.numel() == 24 * 40 and t.data_ptr() != layer.base_layer.weight.data_ptr()]
    assert not weight_sized, f"{config}: a weight-sized copy is kept for the backward"
    y.float().sum().backward()
    assert x.grad is not None and layer.Ad.grad is not None


@pytest.mark.parametrize("seed", range(12))
def test_rounded_weight_and_bias_lose_nothing_over_a_low_precision_base(seed: int) -> None:
    """W', b' over a bf16 base equal those computed from the same base widened to float32 first, bit for bit:
    every term (scalar forms included) runs in the factors' precision and is rounded once."""
    from glora.layers.functional import effective_bias, effective_weight

    torch.manual_seed(seed)
    rng = random.Random(seed)
    layer = wrap_layer(nn.Linear(20, 12), max_rank=4, ranks=(2, 4))
    with torch.no_grad():
        for n in FACTORS:
            getattr(layer, n).normal_()
    plan = layer.validate({g: rng.choice(layer.choices[g]) for g in GENES})
    w0 = layer.base_layer.weight.detach().to(torch.bfloat16)
    b0 = layer.base_layer.bias.detach().to(torch.bfloat16)
    factors = [getattr(layer, n).detach() for n in FACTORS]
    with torch.no_grad():
        got_w = effective_weight(plan, w0, *factors[:4], dtype=torch.bfloat16)
        want_w = effective_weight(plan, w0.float(), *factors[:4], dtype=torch.bfloat16)
        got_b = effective_bias(plan, w0.float(), b0, *factors[4:], dtype=torch.bfloat16)
        want_b = effective_bias(plan, w0.float(), b0.float(), *factors[4:], dtype=torch.bfloat16)
    assert torch.equal(got_w, want_w), plan
    assert torch.equal(got_b, want_b), plan


class _Outputs(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the number of elements of every new tensor an aten op makes (views and in-place results, which
    share an input's storage, are not work and are left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {
            t.untyped_storage().data_ptr()
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        out = func(*args, **kwargs)
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.sizes.append(t.numel())
        return out


def _step_outputs(layer: nn.Module, x: torch.Tensor) -> list[int]:
    with _Outputs() as seen:
        layer(x).sum().backward()
    return seen.sizes


@pytest.mark.parametrize("seed", range(12))
def test_absent_terms_do_no_work(seed: int) -> None:
    """A fixed configuration's step does nothing for its absent terms: with A and B absent no weight-sized tensor
    is made, forward or backward; with every gene absent the step is exactly the plain layer's."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    layer = wrap_layer(nn.Linear(24, 40), max_rank=4, ranks=(2, 4))
    config = {g: rng.choice(layer.choices[g]) for g in GENES} | {"A": "none", "B": "none"}
    layer.set_config(config)
    x = torch.randn(3, 24, requires_grad=True)
    assert 24 * 40 not in _step_outputs(layer, x), f"{config}: a weight-sized tensor was made"
    layer.set_config({g: "none" for g in GENES})
    plain = nn.Linear(24, 40)
    plain.requires_grad_(False)
    assert _step_outputs(layer, x) == _step_outputs(plain, x)


@pytest.mark.parametrize("seed", range(6))
def test_an_unfrozen_base_gets_its_gradients(seed: int) -> None:
    """A user may unfreeze a wrapped layer's base weight and bias: they then get plain autograd's gradients."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    layer = wrap_layer(nn.Linear(7, 5).double(), max_rank=4, ranks=(2, 4))
    with torch.no_grad():
        for n in FACTORS:
            getattr(layer, n).normal_()
    config = {g: rng.choice(layer.choices[g]) for g in GENES}
    layer.set_config(config)
    layer.base_layer.requires_grad_(True)
    x = torch.randn(3, 7, dtype=torch.float64)
    layer(x).sum().backward()
    got = (layer.base_layer.weight.grad.clone(), layer.base_layer.bias.grad.clone())
    layer.zero_grad()
    _reference(layer, config, x).sum().backward()
    torch.testing.assert_close(got[0], layer.base_layer.weight.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], layer.base_layer.bias.grad, rtol=1e-10, atol=1e-12)


def test_each_base_kind_gets_its_layer_class() -> None:
    """One class per base kind, all GLoRA layers; the kind strings adapter files record stay as they were."""
    from transformers.pytorch_utils import Conv1D

    from glora.layers.layer import Linear

    for base, cls, kind in (
        (nn.Linear(4, 3), Linear, "linear"),
        (Conv1D(3, 4), HFConv1D, "hf_conv1d"),
        (nn.Conv1d(4, 3, 2), ConvNd, "conv"),
        (nn.Conv3d(4, 3, 1), ConvNd, "conv"),
    ):
        layer = wrap_layer(base, max_rank=2, ranks=(2,))
        assert type(layer) is cls and isinstance(layer, GLoRALayer) and layer.kind == kind
        assert (layer.out_features, layer.in_features) == (3, 4 * (2 if isinstance(base, nn.Conv1d) else 1))
    with pytest.raises(TypeError, match="GLoRA supports nn.Linear"):
        wrap_layer(nn.LayerNorm(4), max_rank=2, ranks=(2,))
    with pytest.raises(TypeError, match="core of the layer family"):
        GLoRALayer(nn.Linear(4, 3), max_rank=2, ranks=(2,))
