"""inspect_space / format_space on a tiny BERT."""

from __future__ import annotations

import copy

import pytest

import glora
from glora.tuner.budgets import lora_param_count
from glora.tuner.inspection import LORA_RANKS, format_space, inspect_space
from models import ConvNet, bert_tiny

TARGETS = ["query", "value", "dense"]


@pytest.fixture(scope="module")
def base():
    return bert_tiny()


@pytest.fixture(scope="module")
def wrapped(base):
    return glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(ranks=[2, 4], target_modules=TARGETS))


def test_inspect_space_facts(base, wrapped) -> None:
    info = inspect_space(wrapped)
    space = glora.search_space(wrapped)
    assert info["n_layers"] == len(info["layers"]) == len(space) == 10
    assert (info["min_params"], info["max_params"]) == (space.min_params, space.max_params)
    assert info["base_params"] == sum(p.numel() for p in base.parameters())
    first = info["layers"][0]
    assert first["name"] == "encoder.layer.0.attention.self.query"
    assert (first["kind"], first["in_features"], first["out_features"]) == ("linear", 32, 32)
    assert first["choices"]["A"] == ["lora_2", "lora_4", "vector", "scalar", "none"]
    assert list(first["choices"]) == ["A", "B", "C", "D", "E"]
    assert sum(layer["max_params"] for layer in info["layers"]) == info["max_params"]
    assert sum(layer["min_params"] for layer in info["layers"]) == info["min_params"]
    assert [row["rank"] for row in info["lora"]] == list(LORA_RANKS)
    for row in info["lora"]:
        assert row["params"] == lora_param_count(base, row["rank"], TARGETS)
        assert row["within"] == (info["min_params"] <= row["params"] <= info["max_params"])
    assert [row["within"] for row in info["lora"]] == [True, True, True, True, False, False, False]


def test_inspect_space_needs_a_wrapped_model(base) -> None:
    with pytest.raises(ValueError, match="no GLoRA layers"):
        inspect_space(base)


def test_format_space_small_lists_layers(wrapped) -> None:
    text = format_space(inspect_space(wrapped))
    assert text.splitlines()[0] == "10 layers; 32 -> 32 (x6), 32 -> 64 (x2), 64 -> 32 (x2)"
    assert "encoder.layer.1.output.dense" in text
    assert "A: lora_2, lora_4, vector, scalar, none" in text
    assert "smallest 0, largest 8,488 parameters" in text
    assert "base model: 35,520 parameters" in text
    assert "     8        6,144" in text and "no: above the largest" in text


def test_format_space_groups_many_layers() -> None:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=128, vocab_size=60)
    model = glora.wrap(
        BertModel(cfg, add_pooling_layer=False),
        glora.GLoRAConfig(rank=4, target_modules="all-linear", choices={"B": ["lora", "none"]}),
    )
    text = format_space(inspect_space(model))
    assert text.splitlines()[0] == "36 layers; 32 -> 32 (x24), 32 -> 128 (x6), 128 -> 32 (x6)"
    assert "encoder.layer.3" not in text  # grouped, not listed
    assert "B: lora_4, none" in text


def test_grouped_conv_ranks_peft_cannot_build() -> None:
    model = glora.wrap(ConvNet(), glora.GLoRAConfig(rank=2, target_modules=["c1", "c2"]))
    info = inspect_space(model)
    rows = {row["rank"]: row for row in info["lora"]}
    assert rows[1]["params"] is None and rows[2]["params"] is None and not rows[1]["within"]
    assert rows[4]["params"] == lora_param_count(model, 4, ["c1", "c2"])
    assert "PEFT needs a rank divisible by groups" in format_space(info)
