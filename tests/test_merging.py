"""``glora.merge`` returns a merged copy and leaves the wrapped model intact; ``merge_and_unload`` merges in place
and returns the base architecture (PEFT's meaning)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import glora
from glora.layers.choices import GENES
from glora.layers.layer import GLoRALayer
from glora.tuner.merging import merge_and_unload
from models import CASES, MLP, Case


def _perturbed(case: Case, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    base = case.make().eval()
    model = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(rank=4, ranks=[2, 4], target_modules=case.targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return base, model


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize("seed", range(2))
def test_merge_and_unload_returns_the_base_architecture_in_place(case: Case, seed: int) -> None:
    base, model = _perturbed(case, seed)
    subnet = glora.sample_subnet(model, seed)
    glora.set_subnet(model, subnet)
    inputs = case.make_input(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = case.run(model, inputs)
        copied = glora.merge(model, subnet)
        assert any(isinstance(m, GLoRALayer) for m in model.modules()), "merge altered the wrapped model"
        unloaded = merge_and_unload(model, subnet)
        assert unloaded is model
        torch.testing.assert_close(case.run(unloaded, inputs), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(case.run(copied, inputs), expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, GLoRALayer) for m in model.modules())
    assert not hasattr(model, "glora_config") and not model._forward_pre_hooks
    for (name, merged), (_, original) in zip(model.named_modules(), base.named_modules()):
        assert type(merged) is type(original), name
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in base.parameters())


def test_merge_and_unload_takes_the_fixed_subnet_by_default() -> None:
    _, model = _perturbed(CASES[0], 0)
    x = torch.randn(4, 12)
    with pytest.raises(ValueError, match="merge_and_unload needs a subnet"):
        merge_and_unload(model)
    assert isinstance(model.fc1, GLoRALayer)
    glora.set_subnet(model, glora.sample_subnet(model, 0))
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(merge_and_unload(model)(x), expected, rtol=1e-5, atol=1e-6)
    assert type(model.fc1) is torch.nn.Linear


def test_a_bad_subnet_leaves_the_model_wrapped() -> None:
    _, model = _perturbed(CASES[0], 1)
    with pytest.raises(KeyError, match="missing layer"):
        merge_and_unload(model, {"fc1": {g: "none" for g in GENES}})
    assert isinstance(model.fc1, GLoRALayer) and isinstance(model.fc2, GLoRALayer) and hasattr(model, "glora_config")


def test_merge_and_unload_warns_when_a_bias_is_added() -> None:
    assert issubclass(glora.BiasAddedWarning, UserWarning)
    model = glora.wrap(MLP(bias=False), glora.GLoRAConfig(target_modules=["fc1", "fc2"], add_bias=True))
    subnet = {n: {"A": "none", "B": "none", "C": "vector", "D": "none", "E": "none"} for n in ["fc1", "fc2"]}
    with pytest.warns(glora.BiasAddedWarning, match="fc1"):
        merge_and_unload(model, subnet)
    assert model.fc1.bias is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randn(2, 12))
