"""Every wrong argument gives a clear exception that names the problem."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import glora
from glora.layers.choices import GENES
from glora.tuner.wrapping import glora_layers
from models import MLP, ConvNet, TinyTransformer


def _mlp(**config) -> nn.Module:
    return glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], **config))


def _full(choice: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"fc1": dict(choice), "fc2": dict(choice)}


NONE = {g: "none" for g in GENES}


@pytest.mark.parametrize(
    "choice, message",
    [
        ({**NONE, "A": "lora_9"}, "maximum rank 4"),
        ({**NONE, "A": "lora_0"}, "rank must be between 1"),
        ({**NONE, "B": "matrix"}, "unknown choice 'matrix' for gene B"),
        ({**NONE, "C": "scalar"}, "unknown choice 'scalar' for gene C"),
        ({**NONE, "D": "lora_2"}, "gene D has no lora choice"),
        ({**NONE, "F": "none"}, "unknown gene"),
        ({g: "none" for g in "ABCD"}, "lacks gene"),
        ({**NONE, "E": 3}, "must be a string"),
        ({**NONE, "A": "lora_02"}, "unknown choice 'lora_02' for gene A"),
        ({**NONE, "A": "lora_3"}, "gene A offers only lora_4, vector, scalar, none"),
    ],
)
def test_bad_choices_are_named(choice, message) -> None:
    model = _mlp()
    with pytest.raises(glora.ChoiceError, match=message) as info:
        glora.set_subnet(model, _full(choice))
    assert "fc1" in str(info.value)
    with pytest.raises(ValueError, match=message):
        glora.count_params(model, _full(choice))


def test_bad_choices_are_named_after_good_ones_were_accepted() -> None:
    """A layer remembers the plans of names it accepted; that must not let a wrong one through."""
    layer = next(iter(glora_layers(_mlp())))[1]
    good = {**NONE, "A": "lora_4", "B": "vector"}
    assert layer.validate(dict(good)) == layer.validate(dict(good))
    for choice, message in [
        ({**good, "A": "lora_9"}, "maximum rank 4"),
        ({**good, "F": "none"}, "unknown gene"),
        ({k: v for k, v in good.items() if k != "E"}, "lacks gene"),
        ({**good, "E": 3}, "must be a string"),
        ({**{k: v for k, v in good.items() if k != "E"}, "F": "none"}, "unknown gene"),
    ]:
        with pytest.raises(glora.ChoiceError, match=message):
            layer.validate(choice)
    assert layer.validate({**good}) == layer.validate({**NONE, "A": "lora_4", "B": "vector"})


def test_subnet_with_unknown_or_missing_layers() -> None:
    model = _mlp()
    with pytest.raises(KeyError, match=r"unknown layer\(s\) \['fc3'\]"):
        glora.set_subnet(model, {**_full(NONE), "fc3": NONE})
    with pytest.raises(KeyError, match=r"missing layer\(s\) \['fc2'\]"):
        glora.set_subnet(model, {"fc1": NONE})
    with pytest.raises(TypeError, match="must be a dict"):
        glora.set_subnet(model, [NONE, NONE])
    with pytest.raises(KeyError, match="missing"):
        glora.merge(model, {"fc1": NONE})


def test_disabled_genes_on_bias_free_layers() -> None:
    model = glora.wrap(TinyTransformer(), glora.GLoRAConfig(target_modules=["q", "up"], add_bias=False))
    assert model.q.choices["C"] == ("none",) and model.q.choices["E"] == ("none",)
    assert model.q.choices["D"] == ("none",)
    assert len(model.up.choices["D"]) == 3
    bad = {"q": {**NONE, "E": "vector"}, "up": NONE}
    with pytest.raises(ValueError, match="layer 'q': gene E is disabled"):
        glora.set_subnet(model, bad)
    with_bias = glora.wrap(TinyTransformer(), glora.GLoRAConfig(target_modules=["q"], add_bias=True))
    assert with_bias.q.choices["D"] == ("none",) and len(with_bias.q.choices["E"]) == 3


def test_kinds_left_out_by_config_choices_are_refused() -> None:
    model = _mlp(choices={"B": ["none", "lora"]}, ranks=[2, 4])
    assert model.fc1.choices["B"] == ("lora_2", "lora_4", "none") and len(model.fc1.choices["A"]) == 5
    with pytest.raises(
        ValueError, match="layer 'fc1': gene B offers only lora_2, lora_4, none on this model .* got 'vector'"
    ):
        glora.set_subnet(model, _full({**NONE, "B": "vector"}))
    glora.set_subnet(model, _full({**NONE, "B": "lora_4"}))
    only_none = _mlp(choices={"E": ["none"]})  # a gene left with 'none' by the config is not "disabled"
    with pytest.raises(ValueError, match="layer 'fc1': gene E offers only none on this model"):
        glora.set_subnet(only_none, _full({**NONE, "E": "vector"}))


def test_target_patterns_matching_nothing_or_wrong_types() -> None:
    with pytest.raises(ValueError, match=r"matched no module of MLP; some module names are: \['fc1'"):
        glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="matched no module"):
        glora.wrap(MLP(), glora.GLoRAConfig(target_modules=r"layer\.\d+"))
    with pytest.raises(TypeError, match="'norm1' is a LayerNorm"):
        glora.wrap(TinyTransformer(), glora.GLoRAConfig(target_modules=["norm1"]))
    encoder = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        glora.wrap(encoder, glora.GLoRAConfig(target_modules=["out_proj"]))
    wrapped = glora.wrap(
        nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), glora.GLoRAConfig(target_modules="all-linear")
    )
    assert [n for n, _ in glora_layers(wrapped)] == ["linear1", "linear2"]


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="target_modules is required"):
        glora.GLoRAConfig()
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        glora.GLoRAConfig(rank=0, target_modules=["fc1"])
    with pytest.raises(ValueError, match="ranks must be positive integers"):
        glora.GLoRAConfig(ranks=[2, -1], target_modules=["fc1"])
    with pytest.raises(ValueError, match="init must be"):
        glora.GLoRAConfig(target_modules=["fc1"], init="normal")
    with pytest.raises(ValueError, match="choices names unknown gene 'F'"):
        glora.GLoRAConfig(target_modules=["fc1"], choices={"F": ["none"]})
    with pytest.raises(
        ValueError, match=r"choices\['D'\] has unknown kind\(s\) \['lora'\]; D offers vector, scalar, none"
    ):
        glora.GLoRAConfig(target_modules=["fc1"], choices={"D": ["lora", "none"]})
    with pytest.raises(ValueError, match=r"choices\['B'\] must be a non-empty list"):
        glora.GLoRAConfig(target_modules=["fc1"], choices={"B": []})
    with pytest.raises(ValueError, match=r"choices\['B'\] must be a non-empty list"):
        glora.GLoRAConfig(target_modules=["fc1"], choices={"B": "lora"})
    with pytest.raises(TypeError, match="GLoRAConfig"):
        glora.wrap(MLP(), {"target_modules": ["fc1"]})
    with pytest.raises(ValueError, match="modules_to_save"):
        glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1"], modules_to_save=["classifier"]))


def test_unwrapped_and_double_wrapped_models() -> None:
    with pytest.raises(ValueError, match="call glora.wrap"):
        glora.search_space(MLP())
    with pytest.raises(ValueError, match="already wrapped"):
        glora.wrap(_mlp(), glora.GLoRAConfig(target_modules=["fc1"]))
    model = _mlp()
    with pytest.raises(RuntimeError, match="neither a fixed subnet nor a sampler"):
        model(torch.randn(2, 12))
    with pytest.raises(TypeError, match="generator must be"):
        glora.sample_subnet(model, "seed")


def test_adapter_onto_a_different_base(tmp_path) -> None:
    model = _mlp()
    glora.save_adapter(model, tmp_path)

    class Wider(MLP):
        def __init__(self) -> None:
            super().__init__()
            self.fc2 = nn.Linear(24, 20)
            self.head = nn.Linear(20, 3)

    with pytest.raises(glora.AdapterMismatchError, match="layer 'fc2'") as info:
        glora.load_adapter(Wider(), tmp_path)
    assert info.value.layer == "fc2"

    class Renamed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(12, 24)
            self.proj = nn.Linear(24, 16)

    with pytest.raises(glora.AdapterMismatchError, match="fc2"):
        glora.load_adapter(Renamed(), tmp_path)
    other = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1"]))
    with pytest.raises(glora.AdapterMismatchError, match="'fc2' does not exist"):
        glora.load_adapter(other, tmp_path)
    ranked = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], rank=8))
    with pytest.raises(
        glora.AdapterMismatchError, match=r"another search space: offered_ranks \(4,\) \(adapter\) vs \(8,\) \(model\)"
    ):
        glora.load_adapter(ranked, tmp_path)
    with pytest.raises(FileNotFoundError, match="no GLoRA adapter config"):
        glora.load_adapter(MLP(), tmp_path / "missing")
    (tmp_path / "adapter_config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        glora.load_adapter(MLP(), tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ValueError, match="lacks the field"):
        glora.load_adapter(MLP(), tmp_path)


def test_conv_layers_report_matrix_shapes() -> None:
    model = glora.wrap(ConvNet(), glora.GLoRAConfig(target_modules=["c2", "c4"]))
    space = glora.search_space(model)
    assert (space["c2"].out_features, space["c2"].in_features) == (8, 2 * 9)  # in_channels/groups * k*k
    assert (space["c4"].out_features, space["c4"].in_features) == (5, 6 * 3)
    with pytest.raises(KeyError, match="no GLoRA layer named .c9."):
        space["c9"]


def test_adapter_parameters_are_the_glora_layers_own() -> None:
    """A parameter outside the GLoRA layers is not an adapter tensor, whatever its name."""
    model = MLP()
    model.D = nn.Parameter(torch.zeros(3))
    glora.wrap(model, glora.GLoRAConfig(target_modules=["fc1"]))
    model.D.requires_grad_(True)
    names = {n for n, _ in glora.adapter_parameters(model)}
    assert names == {f"fc1.{n}" for n, _ in model.fc1.named_parameters(recurse=False)} and "fc1.Ad" in names
