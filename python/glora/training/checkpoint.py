"""Training checkpoints: everything a run needs to continue bit for bit, the check that a checkpoint belongs to the
run resuming it (same settings, search space and number of processes), and its restoration, which checks every
tensor and state against the trainer before it changes anything. The file format is ``glora.files.checkpoint``'s."""

from __future__ import annotations

import os
import random
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import nn

from glora.files.checkpoint import read_checkpoint, write_checkpoint
from glora.files.errors import CheckpointError
from glora.training.config import TrainConfig
from glora.version import __version__

if TYPE_CHECKING:
    from glora.layers.layer import GLoRALayer

PathLike = Union[str, os.PathLike]
SpaceRecord = dict[str, dict[str, list[str]]]
RESUME_FREE = (
    "progress",
    "gradient_checkpointing",
)  # settings a resumed run may change: nothing computed depends on them (but see check_same_run)

__all__ = [
    "check_same_run",
    "read_checkpoint",
    "restore_training_state",
    "space_record",
    "training_state",
    "write_checkpoint",
]


def space_record(layers: list[tuple[str, GLoRALayer]]) -> SpaceRecord:
    """The choices each layer offers per gene, by name: what a checkpoint records of the search space."""
    return {name: {g: list(names) for g, names in layer.choices.items()} for name, layer in layers}


def training_state(
    model: nn.Module,
    config: TrainConfig,
    space: SpaceRecord,
    world: int,
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Trainable tensors, optimizer, scheduler, scaler and every RNG state, with the run's identity."""
    return {
        "glora_version": __version__,
        "config": asdict(config),
        "space": space,
        "world": world,
        "step": step,
        "trainable": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "generator": generator.get_state(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        },
    }


def check_same_run(path: PathLike, state: dict[str, Any], config: TrainConfig, space: SpaceRecord, world: int) -> None:
    """Refuse, naming what differs, a checkpoint written with other settings (other than ``RESUME_FREE``), another
    search space or another number of processes: the run would not continue exactly."""
    saved = state["config"]
    here = asdict(config)
    unknown = sorted(set(saved) - set(here))
    if unknown:
        raise CheckpointError(
            f"checkpoint {path} records settings glora {__version__} does not have: {unknown}", path=path
        )
    try:
        there = asdict(TrainConfig(**{k: v for k, v in saved.items() if k in here}))  # in today's form
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} records invalid training settings: {err}", path=path) from None
    # under compile gradient checkpointing decides whether a GPU replays CUDA graphs: another computation
    free = [k for k in RESUME_FREE if not (k == "gradient_checkpointing" and here["compile"])]
    differ = [f"{k} {there[k]!r} there, {here[k]!r} here" for k in here if k not in free and there[k] != here[k]]
    if differ:
        raise CheckpointError(
            f"checkpoint {path} was written with other training settings ({'; '.join(differ)}); "
            "resume with the TrainConfig it was written with",
            path=path,
        )
    if state["space"] != space:
        raise CheckpointError(
            f"checkpoint {path} has another search space: {_space_difference(state['space'], space)}", path=path
        )
    if state["world"] != world:
        raise CheckpointError(
            f"checkpoint {path} was written by {state['world']} processes, this run has {world}: "
            "each process's batches depend on their number, so the run would not continue exactly",
            path=path,
        )


def _space_difference(saved: Any, space: SpaceRecord) -> str:
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        return "its record is not a mapping of layers to genes"
    name = next(n for n in sorted(set(space) | set(saved)) if space.get(n) != saved.get(n))
    if name not in space or name not in saved:
        return f"layer {name!r} is only in {'the checkpoint' if name in saved else 'this model'}"
    gene = next(g for g in sorted(set(space[name]) | set(saved[name])) if space[name].get(g) != saved[name].get(g))
    offers = [", ".join(map(str, s.get(gene, []))) for s in (saved[name], space[name])]
    return f"layer {name!r} gene {gene} offers {offers[0]} there, {offers[1]} here (GLoRAConfig ranks, choices or add_bias)"


def restore_training_state(
    path: PathLike,
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> int:
    """Put a checkpoint's tensors and states back; returns its optimizer step. Everything is checked first (the
    trainable tensors' names, shapes and dtypes, the optimizer state's tensors, the scheduler, scaler and RNG
    states' forms), so a refused checkpoint changes nothing."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    try:
        _check_trainable(state["trainable"], params)
        _check_optimizer(state["optimizer"], optimizer)
        _check_keys("scheduler", state["scheduler"], scheduler.state_dict())
        _check_keys("scaler", state["scaler"], scaler.state_dict())
        _check_rng(state["generator"], state["rng"], generator)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this run: {err}", path=path) from None
    optimizer.load_state_dict(state["optimizer"])
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state["trainable"][name])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    return int(state["step"])


def _check_trainable(saved: dict[str, torch.Tensor], params: dict[str, nn.Parameter]) -> None:
    for name in sorted(set(params) | set(saved)):
        if name not in saved:
            raise ValueError(f"it lacks the trainable tensor {name!r}")
        if name not in params:
            raise ValueError(f"its tensor {name!r} is not a trainable parameter of the model")
        _check_like(f"tensor {name!r}", saved[name], params[name])


def _check_like(what: str, saved: Any, like: torch.Tensor) -> None:
    if not isinstance(saved, torch.Tensor):
        raise TypeError(f"{what} is a {type(saved).__name__}, not a tensor")
    if saved.shape != like.shape or saved.dtype != like.dtype:
        raise ValueError(
            f"{what} is {saved.dtype} of shape {tuple(saved.shape)}, the model's is {like.dtype} of shape {tuple(like.shape)}"
        )


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer state's groups must match the optimizer's, and each parameter's state tensors the parameter."""
    current = optimizer.state_dict()
    _check_keys("optimizer", saved, current)
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current["param_groups"]):
        raise ValueError("the optimizer has another number of parameter groups")
    for i, (group, now) in enumerate(zip(groups, current["param_groups"])):
        _check_keys(f"optimizer group {i}", group, now)
        if group["params"] != now["params"]:
            raise ValueError(f"optimizer group {i} holds other parameters")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not isinstance(saved["state"], dict):
        raise TypeError("the optimizer state is not a mapping")
    for index, entry in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise ValueError(f"the optimizer state has an entry {index!r} for no parameter")
        for key, value in entry.items():
            if key == "step":
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    raise TypeError(f"optimizer state {index} step is not a one-element tensor")
            else:
                _check_like(f"optimizer state {index} {key!r}", value, params[index])


def _check_keys(what: str, saved: Any, current: dict[str, Any]) -> None:
    if not isinstance(saved, dict) or set(saved) != set(current):
        keys = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"the {what} state has {keys}, this run's has {sorted(current)}")


def _check_rng(saved_generator: Any, rng: Any, generator: torch.Generator) -> None:
    _check_keys("RNG", rng, {"torch": 0, "cuda": 0, "python": 0, "numpy": 0})
    _check_like("the sampler's generator state", saved_generator, generator.get_state())
    _check_like("the torch RNG state", rng["torch"], torch.get_rng_state())
    if rng["cuda"] and torch.cuda.is_available():
        if not isinstance(rng["cuda"], list) or len(rng["cuda"]) > torch.cuda.device_count():
            raise ValueError(f"it has CUDA RNG states for {len(rng['cuda'])} devices, this machine has fewer")
        for i, cuda in enumerate(rng["cuda"]):
            _check_like(f"the CUDA RNG state {i}", cuda, torch.cuda.get_rng_state(i))
    random.Random().setstate(rng["python"])
    np.random.RandomState().set_state(rng["numpy"])
