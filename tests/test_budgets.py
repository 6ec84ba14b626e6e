"""Budget specs: parsing, and LoRA's parameter count checked against PEFT's own adapters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import glora
from glora.errors import ConfigError
from glora.tuner.budgets import BudgetSpec, describe, lora_param_count, parse_budget, resolve_budget
from models import MLP, ConvNet, bert_tiny, gpt2_tiny

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _peft_count(model: nn.Module, rank: int, modules: list[str]) -> int:
    """PEFT's trainable LoRA parameters for this rank and these target modules."""
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=rank, target_modules=modules))
    return sum(p.numel() for n, p in wrapped.named_parameters() if p.requires_grad and "lora_" in n)


# ---- parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (73728, BudgetSpec("count", count=73728)),
        ("73728", BudgetSpec("count", count=73728)),
        (" 512 ", BudgetSpec("count", count=512)),
        (0, BudgetSpec("count", count=0)),
        ("lora:8", BudgetSpec("lora", rank=8)),
        ("LoRA:4", BudgetSpec("lora", rank=4)),
        ("lora:8:query,value", BudgetSpec("lora", rank=8, modules=["query", "value"])),
        ("lora:2: query , key ", BudgetSpec("lora", rank=2, modules=["query", "key"])),
        ("0.5%", BudgetSpec("share", percent=0.5)),
        ("1%", BudgetSpec("share", percent=1.0)),
        ("100%", BudgetSpec("share", percent=100.0)),
    ],
)
def test_parse(spec, expected) -> None:
    assert parse_budget(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "lora:0",
        "lora:x",
        "lora:",
        "lora",
        "lora:8:",
        "lora:8:q,,v",
        "lora:-2",
        "-5",
        -5,
        "0%",
        "150%",
        "100.5%",
        "%",
        "abc",
        "",
        "73_728",
        "1e5",
        "7.5",
        1.5,
        True,
        None,
    ],
)
def test_malformed_specs_name_the_text(spec) -> None:
    with pytest.raises(ConfigError, match="budget") as info:
        parse_budget(spec)
    assert repr(spec) in str(info.value)
    assert info.value.details["setting"] == "budget"


def test_describe() -> None:
    assert describe(parse_budget("lora:8:query,value")) == "LoRA r=8 on query, value"
    assert describe(parse_budget("lora:8")) == "LoRA r=8 on the run's target modules"
    assert describe(parse_budget(73728)) == "73,728 parameters"
    assert describe(parse_budget("0.5%")) == "0.5% of the base model's parameters"


# ---- LoRA's count against PEFT's


BERT_MODULES = [
    ["query"],
    ["query", "value"],
    ["query", "key", "value", "attention.output.dense"],
    ["intermediate.dense", "output.dense"],
    ["dense"],
]


@pytest.mark.parametrize("rank", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("modules", BERT_MODULES, ids=lambda m: "+".join(m))
def test_bert_count_equals_peft(rank: int, modules: list[str]) -> None:
    model = bert_tiny()
    assert lora_param_count(model, rank, modules) == _peft_count(model, rank, modules)


@pytest.mark.parametrize("rank", [1, 3, 8])
@pytest.mark.parametrize("modules", [["c_attn"], ["c_attn", "c_proj"], ["c_fc", "mlp.c_proj"], ["attn.c_proj"]])
def test_gpt2_conv1d_count_equals_peft(rank: int, modules: list[str]) -> None:
    model = gpt2_tiny()
    # c_attn is 32 -> 96: the transposed weight must still count in + out
    assert lora_param_count(model, rank, modules) == _peft_count(model, rank, modules)


@pytest.mark.parametrize("rank", [4, 8, 12])
@pytest.mark.parametrize(
    "modules", [["c1"], ["c1", "c3"], ["c2"], ["c4"], ["c5"], ["c1", "c2", "c3", "c4", "c5", "head"]]
)
def test_conv_count_equals_peft(rank: int, modules: list[str]) -> None:
    model = ConvNet()  # c2 is grouped (groups=4), c4 a Conv1d, c5 a Conv3d with a (1, 3, 3) kernel
    assert lora_param_count(model, rank, modules) == _peft_count(model, rank, modules)


def test_grouped_conv_needs_a_rank_divisible_by_groups_as_in_peft() -> None:
    with pytest.raises(ConfigError, match="groups=4"):
        lora_param_count(ConvNet(), 3, ["c2"])
    with pytest.raises(ValueError):
        _peft_count(ConvNet(), 3, ["c2"])


@pytest.mark.parametrize(
    ("make", "targets", "modules"),
    [
        (bert_tiny, ["query", "value"], ["query", "key", "value"]),
        (gpt2_tiny, ["c_attn"], ["c_attn", "c_fc"]),
        (ConvNet, ["c1", "c3"], ["c1", "c2", "c3", "head"]),
        (MLP, ["fc1", "fc2"], ["fc1", "head"]),
    ],
)
def test_wrapped_model_counts_as_its_base(make, targets, modules) -> None:
    torch.manual_seed(0)
    base = make()
    expected = {r: lora_param_count(base, r, modules) for r in (4, 8)}
    wrapped = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(rank=4, target_modules=targets))
    assert {r: lora_param_count(wrapped, r, modules) for r in (4, 8)} == expected
    assert expected[8] == _peft_count(base, 8, modules)


def test_modules_matching_nothing_list_module_names() -> None:
    with pytest.raises(ConfigError, match=r"matched no layer of BertModel; some module names are: \['embeddings'"):
        lora_param_count(bert_tiny(), 8, ["qkv"])


def test_modules_matching_an_unsupported_layer() -> None:
    with pytest.raises(ConfigError, match="is a LayerNorm"):
        lora_param_count(bert_tiny(), 8, ["LayerNorm"])


def test_regex_and_all_linear_targets() -> None:
    model = MLP()
    assert lora_param_count(model, 2, r"fc\d") == 2 * (12 + 24) + 2 * (24 + 16)
    assert lora_param_count(model, 2, "all-linear") == 2 * (12 + 24 + 24 + 16 + 16 + 3)


# ---- resolving


def test_resolve_each_kind() -> None:
    model = bert_tiny()
    total = sum(p.numel() for p in model.parameters())
    targets = ["query", "value"]
    assert resolve_budget(parse_budget("1234"), model, targets) == 1234
    assert resolve_budget(parse_budget("lora:8"), model, targets) == _peft_count(model, 8, targets)
    assert resolve_budget(parse_budget("lora:8:dense"), model, targets) == _peft_count(model, 8, ["dense"])
    assert resolve_budget(parse_budget("1%"), model, targets) == total // 100
    assert resolve_budget(parse_budget("0.3%"), model, targets) == total * 3 // 1000
    assert resolve_budget(parse_budget("100%"), model, targets) == total


def test_share_of_a_wrapped_model_leaves_the_adapter_out() -> None:
    base = bert_tiny()
    total = sum(p.numel() for p in base.parameters())
    wrapped = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(rank=4, target_modules=["query", "value"]))
    assert sum(p.numel() for p in wrapped.parameters()) > total
    assert resolve_budget(parse_budget("2.5%"), wrapped, ["query"]) == total * 25 // 1000
    assert resolve_budget(parse_budget("lora:4"), wrapped, ["query", "value"]) == _peft_count(
        base, 4, ["query", "value"]
    )
