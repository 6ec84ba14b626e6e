"""Atomic writes, the pickle-free state codec, and adapter folders checked in full before a model changes."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch

import glora
from glora.files.atomic import replacing, write_bytes, write_json, write_text
from glora.files.errors import AdapterFileError
from glora.files.tensors import read_tensors, write_tensors
from glora.files.tree import flatten, unflatten
from glora.tuner.wrapping import glora_layers
from models import MLP


def test_atomic_writes_leave_the_new_file_or_the_old_one(tmp_path) -> None:
    path = tmp_path / "result.json"
    write_json(path, {"a": 1}, indent=2)
    assert json.loads(path.read_text()) == {"a": 1}
    write_text(path, "second")
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert path.read_text() == "second" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("killed while writing")
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})
    assert path.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "result.json"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(FileNotFoundError):
        write_text(tmp_path / "missing" / "x.txt", "x")


def test_states_round_trip_without_pickle_exactly() -> None:
    torch.manual_seed(3)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2))], lr=0.1 + 0.2)
    optimizer.param_groups[0]["params"][0].grad = torch.randn(3, 2)
    optimizer.step()
    value = {
        "optimizer": optimizer.state_dict(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "bf16": torch.randn(4, dtype=torch.bfloat16),
        "odd": {"__tensor__": "not a reference", 1.5: [None, True], "inf": math.inf},
    }
    tensors: dict[str, torch.Tensor] = {}
    doc = json.loads(json.dumps(flatten(value, "root", tensors)))
    back = unflatten(doc, tensors)
    assert back["python"] == value["python"]
    assert back["numpy"][0] == "MT19937" and back["numpy"][1].dtype == np.uint32
    assert all(np.array_equal(a, b) for a, b in zip(back["numpy"], value["numpy"]))
    assert back["odd"] == value["odd"] and torch.equal(back["bf16"], value["bf16"])
    assert back["optimizer"]["param_groups"] == value["optimizer"]["param_groups"]
    assert all(torch.equal(back["optimizer"]["state"][0][k], v) for k, v in value["optimizer"]["state"][0].items())
    with pytest.raises(TypeError, match="a set cannot be stored without pickle"):
        flatten({"s": {1}}, "root", {})
    with pytest.raises(ValueError, match="refers to a tensor 'root.9' that the file lacks"):
        unflatten({"__tensor__": "root.9"}, tensors)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], modules_to_save=["head"]))


def _saved(tmp_path, subnet: bool = True):
    model = _mlp()
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.normal_()
    glora.save_adapter(model, tmp_path, subnet=glora.sample_subnet(model, 0) if subnet else None)
    return model


def _unchanged(make, path, error, match: str) -> BaseException:
    """Loading ``path`` onto a plain base and onto a wrapped model fails with ``error`` and changes neither."""
    plain = MLP()
    modules = dict(plain.named_modules())
    before = {n: p.detach().clone() for n, p in plain.named_parameters()}
    with pytest.raises(error, match=match) as info:
        glora.load_adapter(plain, path)
    assert dict(plain.named_modules()) == modules and not hasattr(plain, "glora_config")
    assert all(p.requires_grad and torch.equal(p, before[n]) for n, p in plain.named_parameters())
    assert not plain._forward_pre_hooks
    wrapped = make()
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    with pytest.raises(error, match=match):
        glora.load_adapter(wrapped, path)
    assert all(torch.equal(p, before[n]) for n, p in wrapped.named_parameters())
    assert glora.get_subnet(wrapped) is None
    assert isinstance(info.value, glora.GLoRAError)
    return info.value


def _rewrite(tmp_path, change) -> None:
    weights = tmp_path / "adapter_model.safetensors"
    tensors, metadata = read_tensors(weights, "weights")
    write_tensors(weights, change(tensors), {k: v for k, v in metadata.items() if k != "glora_sha256"})


def test_an_adapter_with_other_tensor_dtypes_is_refused_by_name(tmp_path) -> None:
    _saved(tmp_path)
    _rewrite(tmp_path, lambda t: {**t, "fc1.Ad": t["fc1.Ad"].round().long()})
    _unchanged(
        _mlp, tmp_path, glora.AdapterMismatchError, r"'fc1.Ad' is torch.int64, the model's parameter is torch.float32"
    )


def test_a_half_precision_adapter_loads_into_a_float32_model(tmp_path) -> None:
    saved = _saved(tmp_path)
    _rewrite(tmp_path, lambda t: {k: v.half() for k, v in t.items()})
    loaded = glora.load_adapter(MLP(), tmp_path)
    trained = dict(saved.named_parameters())
    assert all(torch.equal(p, trained[n].half().float()) for n, p in glora.adapter_parameters(loaded))


def test_truncated_or_damaged_adapter_weights_are_refused_naming_the_file(tmp_path) -> None:
    _saved(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    data = weights.read_bytes()
    for cut in (0, 20, len(data) // 2, len(data) - 1):
        weights.write_bytes(data[:cut])
        error = _unchanged(_mlp, tmp_path, AdapterFileError, "truncated")
        assert str(weights) in str(error) and "\n" not in str(error)
    damaged = bytearray(data)
    damaged[-2] ^= 0x40
    weights.write_bytes(bytes(damaged))
    _unchanged(_mlp, tmp_path, AdapterFileError, "damaged: its tensors do not match the digest")
    torch.save({"fc1.Ad": torch.zeros(1)}, weights)
    _unchanged(_mlp, tmp_path, AdapterFileError, "zip archive")
    weights.unlink()
    _unchanged(_mlp, tmp_path, FileNotFoundError, "no GLoRA adapter weights at")


@pytest.mark.parametrize("field", ["has_bias", "weight_shape", "type"])
def test_an_adapter_config_missing_a_layer_field_names_it_and_the_file(field: str, tmp_path) -> None:
    _saved(tmp_path)
    config = tmp_path / "adapter_config.json"
    meta = json.loads(config.read_text())
    del meta["layers"]["fc2"][field]
    config.write_text(json.dumps(meta))
    error = _unchanged(_mlp, tmp_path, AdapterFileError, f"layer 'fc2' lacks the field '{field}'")
    assert str(config) in str(error)
    with pytest.raises(AdapterFileError, match=field):
        glora.read_adapter_config(tmp_path)


def test_an_invalid_subnet_is_refused_before_any_tensor_is_copied(tmp_path) -> None:
    _saved(tmp_path)
    config = tmp_path / "adapter_config.json"
    meta = json.loads(config.read_text())
    meta["subnet"]["fc1"]["A"] = "lora_02"
    config.write_text(json.dumps(meta))
    _unchanged(_mlp, tmp_path, glora.AdapterMismatchError, "the subnet stored in .* does not fit the model")
    meta["subnet"] = {"fc1": ["A"]}
    config.write_text(json.dumps(meta))
    _unchanged(_mlp, tmp_path, AdapterFileError, "the field 'subnet' is not a mapping")


def test_adapter_errors_are_glora_errors_and_value_errors() -> None:
    assert issubclass(glora.AdapterMismatchError, glora.GLoRAError)
    assert issubclass(glora.AdapterMismatchError, ValueError)
    assert issubclass(AdapterFileError, glora.GLoRAError) and issubclass(AdapterFileError, ValueError)


def test_saving_an_adapter_is_atomic(tmp_path, monkeypatch) -> None:
    model = _saved(tmp_path, subnet=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("glora.files.tensors.save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        glora.save_adapter(model, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    loaded = glora.load_adapter(MLP(), tmp_path)
    assert [n for n, _ in glora_layers(loaded)] == ["fc1", "fc2"]
