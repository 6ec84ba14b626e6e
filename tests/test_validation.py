"""Calls that change a model change nothing when they fail; choice names are parsed strictly; arguments are checked
where they enter, with messages naming the argument, the value and what is allowed."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

import glora
import glora.tuner.wrapping as wrapping
from glora.layers.choices import GENES
from glora.tuner.wrapping import glora_layers
from models import MLP, TinyTransformer

NONE = {g: "none" for g in GENES}


def _config(**changes: Any) -> glora.GLoRAConfig:
    return glora.GLoRAConfig(**{"target_modules": ["fc1", "fc2"], **changes})


def _wrapped(**changes: Any) -> nn.Module:
    return glora.wrap(MLP(), _config(**changes))


def _full(first: dict[str, str], second: dict[str, str] = NONE) -> dict[str, dict[str, str]]:
    return {"fc1": dict(first), "fc2": dict(second)}


def _state(model: nn.Module) -> dict[str, Any]:
    """Everything a call may change: module types, parameters and their flags, hooks and the GLoRA state."""
    config = getattr(model, "glora_config", None)
    return {
        "modules": [(name, type(module)) for name, module in model.named_modules()],
        "params": {
            name: (p.detach().clone(), p.requires_grad, p.dtype, p.device) for name, p in model.named_parameters()
        },
        "hooks": list(model._forward_pre_hooks.values()),
        "config": None if config is None else config.to_dict(),
        "layers": {name: (layer.fixed_plan, layer.sampler) for name, layer in glora_layers(model)},
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["modules"] == after["modules"]
    assert before["params"].keys() == after["params"].keys()
    for name, (value, *facts) in before["params"].items():
        assert torch.equal(value, after["params"][name][0]), name
        assert tuple(facts) == after["params"][name][1:], name
    assert before["hooks"] == after["hooks"]
    assert before["config"] == after["config"]
    assert before["layers"] == after["layers"]


def _refused(model: nn.Module, call: Callable[[], Any], error: type[BaseException], message: str) -> None:
    before = _state(model)
    with pytest.raises(error, match=message):
        call()
    _assert_same(before, _state(model))


# ------------------------------------------------------------------------------------------- all or nothing
def test_wrap_with_unmatched_modules_to_save_changes_nothing() -> None:
    model = MLP()
    model.head.weight.requires_grad_(False)
    _refused(
        model,
        lambda: glora.wrap(model, _config(modules_to_save=["classifier"])),
        ValueError,
        r"modules_to_save=\['classifier'\] matched no module of MLP",
    )
    glora.wrap(model, _config(modules_to_save=["head"]))  # the corrected call is not refused as "already wrapped"
    assert isinstance(model.fc1, glora.layers.layer.GLoRALayer) and model.head.weight.requires_grad


@pytest.mark.parametrize(
    "config, error, message",
    [
        (glora.GLoRAConfig(target_modules=["query"]), ValueError, "target_modules=.*matched no module"),
        (glora.GLoRAConfig(target_modules=r"layer\.\d+"), ValueError, "matched no module"),
        (glora.GLoRAConfig(target_modules=["up", "norm1"]), TypeError, "'norm1' is a LayerNorm"),
    ],
)
def test_wrap_with_bad_targets_changes_nothing(config, error, message) -> None:
    model = TinyTransformer()
    _refused(model, lambda: glora.wrap(model, config), error, message)


def test_wrap_failing_while_replacing_puts_everything_back(monkeypatch) -> None:
    model = MLP()
    model.fc2.bias.requires_grad_(False)
    real, calls = wrapping.wrap_layer, []

    def fail_on_second(*args: Any) -> nn.Module:
        calls.append(args)
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("out of memory")
        return real(*args)

    monkeypatch.setattr(wrapping, "wrap_layer", fail_on_second)
    _refused(
        model,
        lambda: glora.wrap(model, _config(modules_to_save=["head"])),
        torch.cuda.OutOfMemoryError,
        "out of memory",
    )
    monkeypatch.setattr(wrapping, "wrap_layer", real)
    glora.wrap(model, _config())


@pytest.mark.parametrize("model", ["model", None, {"fc1": nn.Linear(2, 2)}, nn.Linear])
def test_wrap_names_what_it_needs_for_a_non_module(model) -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module .*got "):
        glora.wrap(model, _config())


@pytest.mark.parametrize(
    "call",
    [glora.set_subnet, glora.count_params, glora.merge, glora.merge_and_unload],
    ids=["set_subnet", "count_params", "merge", "merge_and_unload"],
)
def test_non_module_models_are_named(call) -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module .*got str"):
        call("model", _full(NONE))


@pytest.mark.parametrize(
    "subnet, error, message",
    [
        (_full(NONE, {**NONE, "A": "lora_9"}), glora.ChoiceError, "layer 'fc2'.*maximum rank 4"),
        (_full(NONE, {**NONE, "A": "lora_02"}), glora.ChoiceError, "layer 'fc2'.*'lora_02'"),
        ({"fc1": NONE}, KeyError, "missing"),
        ([NONE, NONE], TypeError, "must be a dict"),
    ],
)
@pytest.mark.parametrize("fixed", [True, False], ids=["fixed", "sampling"])
def test_set_subnet_merge_and_unload_refused_change_nothing(subnet, error, message, fixed) -> None:
    model = _wrapped()
    if fixed:
        glora.set_subnet(model, _full({**NONE, "A": "lora_4"}))
    else:
        glora.supernet_mode(model, 0)
    _refused(model, lambda: glora.set_subnet(model, subnet), error, message)
    _refused(model, lambda: glora.merge_and_unload(model, subnet), error, message)


def test_set_batched_weights_refused_changes_nothing() -> None:
    model = _wrapped()
    _refused(model, lambda: glora.set_batched_weights(model, "sometimes"), ValueError, "batched_weights.*'sometimes'")
    _refused(model, lambda: glora.set_batched_weights(model, ["always"]), ValueError, "batched_weights")
    with pytest.raises(ValueError, match="call glora.wrap"):
        glora.set_batched_weights(MLP(), "always")


@pytest.mark.parametrize(
    "generator, error, message",
    [
        ("seed", TypeError, "generator must be a torch.Generator, an int seed or None, got str"),
        (1.5, TypeError, "got float"),
        (True, TypeError, "got bool"),
        (2**64, ValueError, r"generator seed must be an integer in \[-2\*\*63, 2\*\*64\), got 18446744073709551616"),
    ],
)
def test_supernet_mode_refused_changes_nothing(generator, error, message) -> None:
    model = _wrapped()
    glora.set_subnet(model, _full({**NONE, "B": "vector"}))
    _refused(model, lambda: glora.supernet_mode(model, generator), error, message)
    with pytest.raises(error, match=message):
        glora.sample_subnet(model, generator)


def test_supernet_mode_takes_every_torch_seed() -> None:
    model = _wrapped()
    for seed in (-(2**63), -1, 0, 2**64 - 1):
        glora.supernet_mode(model, seed)
    assert glora.get_subnet(model) is None


# ------------------------------------------------------------------------------------------- strict choices
BAD_NAMES = ["lora_02", "lora_+2", "lora_2 ", " lora_2", "LORA_2", "lora_2\n", "lora_\u0662", "lora_2.0", "Vector"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    "call", [glora.set_subnet, glora.count_params, glora.merge], ids=["set_subnet", "count_params", "merge"]
)
def test_misspelt_choices_are_refused_by_every_call(name, call) -> None:
    model = _wrapped(ranks=[2, 4])
    with pytest.raises(glora.ChoiceError) as info:
        call(model, _full({**NONE, "A": name}))
    message = str(info.value)
    assert "layer 'fc1'" in message and "gene A" in message and repr(name) in message
    assert "offered: lora_2, lora_4, vector, scalar, none" in message
    assert info.value.details == {
        "layer": "fc1",
        "gene": "A",
        "choice": name,
        "offered": ["lora_2", "lora_4", "vector", "scalar", "none"],
    }


@pytest.mark.parametrize("name", BAD_NAMES)
def test_layer_validation_and_search_space_agree(name) -> None:
    model = _wrapped(ranks=[2, 4])
    with pytest.raises(glora.ChoiceError, match=re.escape(repr(name))):
        model.fc1.validate({**NONE, "A": name})
    with pytest.raises(glora.SearchError, match="(?s)layer 'fc1': choice .* for gene A is not in the search space"):
        glora.search_space(model).count(_full({**NONE, "A": name}))


def test_a_rank_that_is_not_offered_is_refused_as_the_search_space_does() -> None:
    model = _wrapped(ranks=[2, 4])
    subnet = _full({**NONE, "A": "lora_3"})
    with pytest.raises(glora.ChoiceError, match="layer 'fc1': gene A offers only lora_2, lora_4, vector") as info:
        glora.set_subnet(model, subnet)
    assert info.value.details["offered"] == ["lora_2", "lora_4", "vector", "scalar", "none"]
    with pytest.raises(glora.SearchError, match="'lora_3'"):
        glora.search_space(model).count(subnet)
    assert model.fc1.validate({**NONE, "A": "lora_3"})[0].rank == 3  # a layer slices any rank up to its maximum
    for rank in (2, 4):
        glora.set_subnet(model, _full({**NONE, "A": f"lora_{rank}", "B": f"lora_{rank}", "C": f"lora_{rank}"}))


def test_every_offered_choice_is_accepted() -> None:
    model = _wrapped(ranks=[1, 3])
    for gene in GENES:
        for name in model.fc1.choices[gene]:
            subnet = _full({**NONE, gene: name})
            glora.set_subnet(model, subnet)
            assert glora.get_subnet(model) == subnet
            assert glora.count_params(model, subnet) == glora.search_space(model).count(subnet)


# ------------------------------------------------------------------------------------------- GLoRAConfig
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rank": True}, "rank must be a positive integer, got True"),
        ({"rank": 2.0}, "rank must be a positive integer, got 2.0"),
        ({"rank": "4"}, "rank must be a positive integer, got '4'"),
        ({"rank": 0}, "rank must be a positive integer, got 0"),
        ({"ranks": 4}, "ranks must be a list of positive integers or None, got 4"),
        ({"ranks": "24"}, "ranks must be a list of positive integers or None, got '24'"),
        ({"ranks": []}, "ranks must not be empty"),
        ({"ranks": [2, "4"]}, r"ranks must be positive integers, got '4' in \[2, '4'\]"),
        ({"ranks": [2, 0]}, "ranks must be positive integers, got 0"),
        ({"ranks": [True, 2]}, "ranks must be positive integers, got True"),
        ({"ranks": [2, None]}, "ranks must be positive integers, got None"),
        ({"target_modules": "fc["}, r"target_modules='fc\[' is not a valid regular expression: unterminated"),
        ({"target_modules": "fc1|(fc2"}, r"target_modules='fc1\|\(fc2' is not a valid regular expression: missing \)"),
        ({"exclude_modules": "*"}, r"exclude_modules='\*' is not a valid regular expression: nothing to repeat"),
        ({"target_modules": 5}, "target_modules must be a string, a list of strings or None, got int"),
        ({"target_modules": []}, "target_modules must be a non-empty list of non-empty strings, got"),
        ({"target_modules": ["fc1", ""]}, "target_modules must be a non-empty list of non-empty strings"),
        ({"exclude_modules": [3]}, "exclude_modules must be a non-empty list of non-empty strings"),
        ({"add_bias": 1}, "add_bias must be True or False, got 1"),
        ({"add_bias": "yes"}, "add_bias must be True or False, got 'yes'"),
        ({"add_bias": None}, "add_bias must be True or False, got None"),
        (
            {"modules_to_save": "head"},
            "modules_to_save must be a list of module names or suffixes, or None, got 'head'",
        ),
        ({"modules_to_save": ["head", 2]}, "modules_to_save must be a list of module names"),
        ({"init": "normal"}, "init must be 'kaiming' or 'xavier', got 'normal'"),
        ({"init": None}, "init must be 'kaiming' or 'xavier', got None"),
        ({"init": ["kaiming"]}, "init must be 'kaiming' or 'xavier', got"),
        ({"choices": ["A"]}, "choices must map genes .* got list"),
        ({"choices": {"A": "lora"}}, r"choices\['A'\] must be a non-empty list of kinds, got 'lora'"),
        ({"choices": {"F": ["none"]}}, "choices names unknown gene 'F'"),
        ({"choices": {"D": ["lora"]}}, r"choices\['D'\] has unknown kind\(s\) \['lora'\]"),
        ({"choices": {"A": ["lora_2"]}}, r"choices\['A'\] has unknown kind\(s\) \['lora_2'\]"),
        ({"batched_weights": "off"}, "batched_weights: batched weights mode must be one of .* got 'off'"),
        ({"batched_weights": None}, "batched_weights: .* got None"),
        ({"batched_weights": ["auto"]}, "batched_weights: .* got"),
    ],
)
def test_glora_config_names_the_bad_argument(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def test_glora_config_keeps_valid_forms() -> None:
    config = _config(ranks=(8, 2, 2), exclude_modules=("head",), modules_to_save=("head",), target_modules=r"fc\d")
    assert (config.ranks, config.exclude_modules, config.modules_to_save) == ([2, 8], ["head"], ["head"])
    assert _config(target_modules="all-linear").target_modules == "all-linear"
    assert glora.GLoRAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TypeError, match="a GLoRAConfig dict must be a dict, got list"):
        glora.GLoRAConfig.from_dict([("rank", 4)])


# ------------------------------------------------------------------------------------------- TrainConfig
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"steps": True}, "steps must be a positive integer, got True"),
        ({"steps": 10.0}, "steps must be a positive integer, got 10.0"),
        ({"batch_size": "32"}, "batch_size must be a positive integer, got '32'"),
        ({"grad_accum": 0}, "grad_accum must be a positive integer, got 0"),
        ({"warmup_steps": -1}, r"warmup_steps must be an integer in \[0, steps\], got -1"),
        ({"warmup_steps": 11}, r"warmup_steps must be an integer in \[0, steps\], got 11"),
        ({"warmup_steps": 1.0}, r"warmup_steps must be an integer in \[0, steps\], got 1.0"),
        ({"warmup_steps": False}, r"warmup_steps must be an integer in \[0, steps\], got False"),
        ({"seed": -1}, r"seed must be an integer in \[0, 17592186044415\], got -1"),
        ({"seed": 2**64}, r"seed must be an integer in \[0, 17592186044415\], got 18446744073709551616"),
        ({"seed": True}, "seed must be an integer .* got True"),
        ({"seed": 1.5}, "seed must be an integer .* got 1.5"),
        ({"lr": "1e-3"}, "lr must be a finite positive number, got '1e-3'"),
        ({"lr": 0}, "lr must be a finite positive number, got 0"),
        ({"lr": -1e-3}, "lr must be a finite positive number, got -0.001"),
        ({"lr": math.nan}, "lr must be a finite positive number, got nan"),
        ({"lr": math.inf}, "lr must be a finite positive number, got inf"),
        ({"lr": True}, "lr must be a finite positive number, got True"),
        ({"lr": None}, "lr must be a finite positive number, got None"),
        ({"lr": torch.tensor(1e-3)}, "lr must be a finite positive number, got tensor"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite non-negative number, got -0.1"),
        ({"weight_decay": math.nan}, "weight_decay must be a finite non-negative number, got nan"),
        ({"weight_decay": "0"}, "weight_decay must be a finite non-negative number, got '0'"),
        ({"max_grad_norm": 0}, "max_grad_norm must be a finite positive number or None for no clipping, got 0"),
        ({"max_grad_norm": math.inf}, "max_grad_norm must be a finite positive number or None .* got inf"),
        ({"max_grad_norm": "1"}, "max_grad_norm must be a finite positive number or None .* got '1'"),
        ({"distill_temperature": 0.0}, "distill_temperature must be a finite positive number, got 0.0"),
        ({"distill_temperature": math.nan}, "distill_temperature must be a finite positive number, got nan"),
        ({"precision": "fp8"}, r"precision must be one of \['fp32', 'bf16', 'fp16'\], got 'fp8'"),
        ({"precision": None}, "precision must be one of .* got None"),
        ({"precision": ["fp32"]}, r"precision must be one of .* got \['fp32'\]"),
        ({"sampling": "random"}, "sampling must be one of .* got 'random'"),
        ({"sampling": ["uniform"]}, "sampling must be one of .* got"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be True or False, got 'yes'"),
        ({"distill": 1}, "distill must be True or False, got 1"),
        ({"progress": None}, "progress must be True or False, got None"),
        ({"sampling": "fixed", "subnet": "fc1"}, "subnet must be a dict of layer names to gene choices or None"),
        ({"sampling": "budget", "budget": math.nan}, "budget maximum must be a non-negative whole number"),
    ],
)
def test_train_config_names_the_bad_argument(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        glora.TrainConfig(**{"steps": 10, **changes})


def test_train_config_keeps_valid_forms() -> None:
    config = glora.TrainConfig(
        steps=10, lr=np.float32(1e-3), weight_decay=0, max_grad_norm=1, warmup_steps=10, seed=2**44 - 1
    )
    assert (config.lr, config.weight_decay, config.max_grad_norm) == (np.float32(1e-3), 0, 1)
    assert glora.TrainConfig(steps=1, sampling="budget", budget=[0, 700]).budget == (0, 700)


# ------------------------------------------------------------------------------------------- SubnetEvaluator
@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"metric": "f1"}, ValueError, r"metric must be one of \['accuracy', 'neg_loss'\] or a callable.*got 'f1'"),
        ({"metric": 3}, TypeError, "metric must be a name or a callable, got int"),
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer or None \(the whole data\), got 0"),
        ({"batch_size": -4}, ValueError, "batch_size must be a positive integer or None .* got -4"),
        ({"batch_size": True}, ValueError, "batch_size must be a positive integer or None .* got True"),
        ({"batch_size": 8.0}, ValueError, "batch_size must be a positive integer or None .* got 8.0"),
        ({"precision": "fp8"}, ValueError, r"precision must be one of \['fp32', 'bf16', 'fp16'\] or None, got 'fp8'"),
        ({"precision": "FP32"}, ValueError, "precision must be one of .* got 'FP32'"),
        ({"subnets_per_pass": 0}, ValueError, "subnets_per_pass must be a positive integer, got 0"),
        ({"subnets_per_pass": True}, ValueError, "subnets_per_pass must be a positive integer, got True"),
        ({"device": "nope"}, ValueError, "device='nope' is not a device torch knows"),
        ({"device": 3.5}, ValueError, "device must be a str, a torch.device or None, got float"),
        ({"device": "cuda:99"}, ValueError, r"device='cuda:99': this machine has \d+ CUDA device"),
        ({"distributed": "yes"}, ValueError, "distributed must be True, False or None, got 'yes'"),
    ],
)
def test_subnet_evaluator_names_the_bad_argument(changes, error, message) -> None:
    model = _wrapped()
    data = (torch.randn(16, 12), torch.randint(0, 3, (16,)))
    _refused(model, lambda: glora.SubnetEvaluator(model, data, **changes), error, message)
