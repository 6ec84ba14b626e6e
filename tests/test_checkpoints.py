"""Training checkpoint files: no pickle is ever loaded, damaged and foreign files are refused by name in one line,
a refused checkpoint changes nothing, and a failed write keeps the previous checkpoint."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import glora
from glora.files import checkpoint as checkpoint_file
from glora.files.errors import CheckpointError, MissingFileError
from glora.training.checkpoint import read_checkpoint, write_checkpoint
from models import MLP


def _trainer() -> glora.SupernetTrainer:
    torch.manual_seed(0)
    model = glora.wrap(MLP(), glora.GLoRAConfig(target_modules=["fc1", "fc2"], modules_to_save=["head"]))
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g))
    return glora.SupernetTrainer(model, data, glora.TrainConfig(steps=4, batch_size=16, lr=1e-3, progress=False))


def _snapshot(trainer: glora.SupernetTrainer) -> tuple[int, dict[str, torch.Tensor], bytes]:
    params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    return trainer.step, params, pickle.dumps(trainer.optimizer.state_dict()["state"])


def _refused_without_change(trainer: glora.SupernetTrainer, path, match: str) -> CheckpointError:
    before = _snapshot(trainer)
    with pytest.raises(CheckpointError, match=match) as info:
        trainer.load_checkpoint(path)
    step, params, optimizer = _snapshot(trainer)
    assert step == before[0] and optimizer == before[2]
    assert all(torch.equal(params[n], before[1][n]) for n in params)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, glora.GLoRAError) and info.value.path == str(path)
    return info.value


class Evil:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.mark.parametrize("writer", ["torch.save", "torch.save legacy", "pickle"])
def test_a_planted_malicious_checkpoint_runs_nothing(writer: str, tmp_path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "supernet.safetensors"
    payload = {"step": Evil(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch.save")
    trainer = _trainer()
    trainer.train(1)
    error = _refused_without_change(trainer, path, "pickle")
    assert "zip archive" in str(error) if writer == "torch.save" else "is a pickle" in str(error)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert not marker.exists()
    if writer == "pickle":  # the file is a live one: unpickling it would have run the payload
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_truncated_and_damaged_checkpoints_are_refused_naming_the_file(tmp_path) -> None:
    trainer = _trainer()
    trainer.train(2)
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    data = good.read_bytes()
    for n, cut in enumerate([0, 5, 9, 100, len(data) // 2, len(data) - 1]):
        path = tmp_path / f"cut{n}.ckpt"
        path.write_bytes(data[:cut])
        _refused_without_change(trainer, path, "truncated|not a readable")
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # inside the last tensor's bytes, which safetensors cannot check
    (tmp_path / "flipped.ckpt").write_bytes(bytes(flipped))
    _refused_without_change(trainer, tmp_path / "flipped.ckpt", "damaged: its tensors do not match the digest")
    header = bytearray(data)
    header[9] = ord("[")
    (tmp_path / "header.ckpt").write_bytes(bytes(header))
    _refused_without_change(trainer, tmp_path / "header.ckpt", "not a readable")


def test_foreign_files_are_refused_by_kind(tmp_path) -> None:
    trainer = _trainer()
    glora.save_adapter(trainer.model, tmp_path / "adapter")
    _refused_without_change(
        trainer, tmp_path / "adapter" / "adapter_model.safetensors", "is a glora adapter file, not a glora training"
    )
    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    _refused_without_change(trainer, tmp_path / "other.safetensors", "safetensors file from elsewhere")
    (tmp_path / "notes.json").write_text('{"step": 3}')
    _refused_without_change(trainer, tmp_path / "notes.json", "not a readable")
    _refused_without_change(trainer, tmp_path / "adapter", "is a folder")
    with pytest.raises(MissingFileError, match="no glora training checkpoint at") as info:
        trainer.load_checkpoint(tmp_path / "absent.ckpt")
    assert isinstance(info.value, FileNotFoundError)


def test_a_checkpoint_that_does_not_fit_changes_nothing(tmp_path) -> None:
    written = _trainer()
    written.train(2)
    written.save_checkpoint(tmp_path / "a.ckpt")
    state = read_checkpoint(tmp_path / "a.ckpt")
    trainer = _trainer()
    trainer.train(1)
    name = next(iter(state["trainable"]))
    cases = {
        "int.ckpt": (
            {**state, "trainable": {**state["trainable"], name: state["trainable"][name].long()}},
            "torch.int64",
        ),
        "moment.ckpt": (
            _with_moment(state, torch.zeros(3)),
            r"optimizer state \d+ 'exp_avg' is torch.float32 of shape \(3,\)",
        ),
        "rng.ckpt": ({**state, "rng": {**state["rng"], "python": (3, (1, 2), None)}}, "does not fit this run"),
        "scaler.ckpt": ({**state, "scaler": {"scale": 2.0}}, "the scaler state has \\['scale'\\]"),
        "step.ckpt": ({**state, "step": -1}, "out of range"),
    }
    for file, (changed, match) in cases.items():
        write_checkpoint(tmp_path / file, changed)
        _refused_without_change(trainer, tmp_path / file, match)
    write_checkpoint(tmp_path / "settings.ckpt", {**state, "config": {**state["config"], "steps": "four"}})
    _refused_without_change(trainer, tmp_path / "settings.ckpt", "invalid training settings|other training settings")


def _with_moment(state: dict, moment: torch.Tensor) -> dict:
    """``state`` with the first parameter's first Adam moment replaced."""
    moments = state["optimizer"]["state"]
    index = next(iter(moments))
    changed = {**moments, index: {**moments[index], "exp_avg": moment}}
    return {**state, "optimizer": {**state["optimizer"], "state": changed}}


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    trainer = _trainer()
    trainer.train(1)
    path = tmp_path / "c.ckpt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()
    trainer.train(2)

    def dies_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("glora.files.tensors.save_file", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]
    assert read_checkpoint(path)["step"] == 1


def test_the_format_version_is_checked(tmp_path, monkeypatch) -> None:
    trainer = _trainer()
    monkeypatch.setattr(checkpoint_file, "FORMAT_VERSION", 99)
    trainer.save_checkpoint(tmp_path / "future.ckpt")
    monkeypatch.undo()
    _refused_without_change(trainer, tmp_path / "future.ckpt", "format version '99' .* reads version 1")
