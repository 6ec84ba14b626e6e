"""Training checkpoints: everything a run needs to continue bit for bit, and the check that a checkpoint belongs
to the run resuming it (same settings, search space and number of processes)."""

from __future__ import annotations

import os
import random
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import nn

from glora.training.config import TrainConfig
from glora.version import __version__

if TYPE_CHECKING:
    from glora.layers.layer import GLoRALayer

PathLike = Union[str, os.PathLike]
SpaceRecord = dict[str, dict[str, list[str]]]
RESUME_FREE = (
    "progress",
    "gradient_checkpointing",
)  # settings a resumed run may change: nothing computed depends on them
# settings earlier versions had, at the value that trains as this version does; a checkpoint with another value is refused
RETIRED = {"budget_spread": False, "lr_ratios": None}
REQUIRED = ("step", "trainable", "optimizer", "scheduler", "rng")


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


def write_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Write through a temporary file, so a run killed while writing keeps its previous checkpoint."""
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    for key in REQUIRED:
        if key not in state:
            raise ValueError(f"{path} is not a glora training checkpoint (no {key!r})")
    return state


def check_same_run(path: PathLike, state: dict[str, Any], config: TrainConfig, space: SpaceRecord, world: int) -> None:
    """Refuse, naming what differs, a checkpoint written with other settings (other than ``RESUME_FREE``), another
    search space or another number of processes: the run would not continue exactly. Checkpoints written before
    ``space`` and ``world`` were recorded are checked on their settings alone."""
    if "config" in state:
        for key, value in RETIRED.items():
            if state["config"].get(key, value) != value:
                raise ValueError(
                    f"checkpoint {path} was written with {key}={state['config'][key]!r}, a setting glora "
                    f"{__version__} no longer has, so the run cannot continue exactly"
                )
        here = asdict(config)
        there = asdict(TrainConfig(**{k: v for k, v in state["config"].items() if k in here}))  # in today's form
        differ = [
            f"{k} {there[k]!r} there, {here[k]!r} here" for k in here if k not in RESUME_FREE and there[k] != here[k]
        ]
        if differ:
            raise ValueError(
                f"checkpoint {path} was written with other training settings ({'; '.join(differ)}); "
                "resume with the TrainConfig it was written with"
            )
    saved = state.get("space")
    if saved is not None and saved != space:
        name = next(n for n in sorted(set(space) | set(saved)) if space.get(n) != saved.get(n))
        if name not in space or name not in saved:
            where = "the checkpoint" if name in saved else "this model"
            raise ValueError(f"checkpoint {path} has another search space: layer {name!r} is only in {where}")
        gene = next(g for g in space[name] if space[name][g] != saved[name].get(g))
        raise ValueError(
            f"checkpoint {path} has another search space: layer {name!r} gene {gene} offers "
            f"{', '.join(saved[name].get(gene, []))} there, {', '.join(space[name][gene])} here "
            "(GLoRAConfig ranks, choices or add_bias)"
        )
    if state.get("world", world) != world:
        raise ValueError(
            f"checkpoint {path} was written by {state['world']} processes, this run has {world}: "
            "each process's batches depend on their number, so the run would not continue exactly"
        )


def restore_training_state(
    path: PathLike,
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
) -> int:
    """Put a checkpoint's tensors and states back (its trainable tensors must match the model's by name and
    shape); returns its optimizer step."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    saved = state["trainable"]
    for name in sorted(set(params) | set(saved)):
        if name not in saved:
            raise ValueError(f"checkpoint {path} lacks the trainable tensor {name!r}")
        if name not in params:
            raise ValueError(f"checkpoint tensor {name!r} is not a trainable parameter of the model")
        if saved[name].shape != params[name].shape:
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {tuple(saved[name].shape)}, the model's is {tuple(params[name].shape)}"
            )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    return int(state["step"])
