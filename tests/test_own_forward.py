"""A base layer whose class overrides its torch class's forward (timm's ``Conv2dSame``, which pads "same" before
convolving) keeps its own forward once wrapped: a fresh adapter computes the base, a merged subnet computes the
unmerged one, and the factors get gradients."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import glora
from glora.layers.layer import ConvNd, GLoRALayer, Linear, has_own_forward
from glora.training.evaluator import SubnetEvaluator
from glora.tuner.wrapping import glora_layers

timm = pytest.importorskip("timm")
from timm.layers.conv2d_same import Conv2dSame  # noqa: E402


class SamePadConv2d(nn.Conv2d):
    """TensorFlow "same" padding computed from the input's size, then the convolution (no padding of its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ScaledLinear(nn.Linear):
    """A linear layer with its own forward (input scaled first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(2 * x, self.weight, self.bias)


class Net(nn.Module):
    def __init__(self, conv: type[nn.Conv2d]) -> None:
        super().__init__()
        self.stem = conv(3, 8, 3, stride=2)
        self.mid = conv(8, 8, 3, stride=2, bias=False)
        self.fc = ScaledLinear(8, 6, bias=False)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.mid(F.relu(self.stem(x)))).mean(dim=(2, 3))
        return self.head(F.relu(self.fc(h)))


CONVS = [SamePadConv2d, Conv2dSame]
TARGETS = ["stem", "mid", "fc"]


def _wrapped(conv: type[nn.Conv2d], seed: int, perturb: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    base = Net(conv).eval()
    config = glora.GLoRAConfig(rank=4, ranks=[2, 4], target_modules=TARGETS, add_bias=True)
    model = glora.wrap(copy.deepcopy(base), config)
    if perturb:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, p in glora.adapter_parameters(model):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return base, model


def test_own_forward_is_recognised() -> None:
    assert has_own_forward(Conv2dSame(3, 4, 3)) and has_own_forward(SamePadConv2d(3, 4, 3))
    assert has_own_forward(ScaledLinear(3, 4))
    assert not any(has_own_forward(m) for m in (nn.Conv2d(3, 4, 3), nn.Conv1d(3, 4, 3), nn.Linear(3, 4)))
    _, model = _wrapped(Conv2dSame, 0, perturb=False)
    assert isinstance(model.stem, ConvNd) and model.stem.own_forward
    assert isinstance(model.fc, Linear) and model.fc.own_forward and not model.fc.stacks_plans


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("seed", range(3))
def test_fresh_adapter_computes_the_base(conv: type[nn.Conv2d], seed: int) -> None:
    base, model = _wrapped(conv, seed, perturb=False)
    x = torch.randn(2, 3, 11, 13)
    glora.set_subnet(model, glora.sample_subnet(model, seed))
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("seed", range(4))
def test_merged_equals_unmerged(conv: type[nn.Conv2d], seed: int) -> None:
    _, model = _wrapped(conv, seed, perturb=True)
    x = torch.randn(2, 3, 11, 13)
    subnet = glora.sample_subnet(model, seed)
    glora.set_subnet(model, subnet)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", glora.BiasAddedWarning)
        expected = model(x)
        merged = glora.merge(model, subnet)
    assert type(merged.stem) is conv and type(merged.fc) is ScaledLinear
    with torch.no_grad():
        torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c.__name__)
def test_factors_get_gradients(conv: type[nn.Conv2d]) -> None:
    _, model = _wrapped(conv, 0, perturb=True)
    richest = {name: {g: layer.choices[g][0] for g in layer.choices} for name, layer in glora_layers(model)}
    glora.set_subnet(model, richest)
    model(torch.randn(2, 3, 11, 13)).square().sum().backward()
    for name, p in glora.adapter_parameters(model):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_several_subnets_per_pass_refuse_a_linear_with_its_own_forward() -> None:
    model = glora.wrap(nn.Sequential(ScaledLinear(4, 3)), glora.GLoRAConfig(target_modules=["0"]))
    data = {"x": torch.randn(4, 4), "labels": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(ValueError, match="nn.Linear's forward"):
        SubnetEvaluator(model, data, metric="accuracy", subnets_per_pass=2)


def test_tf_efficientnet_lite0_merges_exactly() -> None:
    """timm's tf_ models have Conv2dSame stems and strided convolutions; every convolution wrapped, merged equals
    unmerged."""
    torch.manual_seed(0)
    base = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3).eval()
    assert any(isinstance(m, Conv2dSame) for m in base.modules())
    targets = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    model = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(rank=2, ranks=[2], target_modules=targets))
    same = [n for n, m in model.named_modules() if isinstance(m, GLoRALayer) and isinstance(m.base_layer, Conv2dSame)]
    assert same
    x = torch.randn(1, 3, 64, 64)
    glora.set_subnet(model, glora.sample_subnet(model, 0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), rtol=1e-4, atol=1e-5)
        g = torch.Generator().manual_seed(1)
        for _, p in glora.adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        subnet = glora.sample_subnet(model, 1)
        glora.set_subnet(model, subnet)
        expected = model(x)
        merged = glora.merge(model, subnet)
        assert all(type(merged.get_submodule(n)) is Conv2dSame for n in same)
        torch.testing.assert_close(merged(x), expected, rtol=1e-4, atol=1e-4)
