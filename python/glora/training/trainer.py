"""Supernet training: one weight-shared supernet over every layer's configurations (METHOD.md section 4).

Sampling options: ``"uniform"`` (the reference: every layer draws every gene uniformly for every forward, just
before it, and holds the draw, so gradient checkpointing recomputes the same path), ``"budget"`` (each step one
subnet drawn by the search engine's budget-aware construction, so every trained path lies within the parameter
budget) and ``"sandwich"`` (each step the largest and the smallest subnet within budget plus a budget-aware draw;
with ``distill=True`` the drawn and the smallest subnets learn from the largest one's predictions); ``"fixed"`` trains one given subnet (fine-tuning the searched subnet after the search,
with its weights taken from the supernet). AdamW with linear warm-up and cosine decay, gradient accumulation and
clipping, bf16 / fp16 autocast, optional gradient checkpointing, checkpoints that resume bit for bit.

Under ``torchrun`` (an initialised ``torch.distributed`` process group) the model is wrapped in
DistributedDataParallel: every process draws the same paths (same seed), takes its own share of each global
batch (``batch_size`` per process), and the gradients are averaged; rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glora.training.batches import Batch, Data, data_length, labels_of, logits_of, take, to_device
from glora.training.distributed import barrier, process_group
from glora.layers.choices import Choice
from glora.tuner.wrapping import layers_or_raise
from glora.tuner.subnets import draw_plans, validate_subnet
from glora.tuner.space import search_space
from glora.training.sampling import BudgetSampler
from glora.engine.space import budget_bounds
from glora.version import __version__

LossFn = Callable[[nn.Module, Batch], torch.Tensor]
SAMPLING = ("uniform", "budget", "sandwich", "fixed")
PRECISION = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RESUME_FREE = ("progress", "gradient_checkpointing")  # settings a resumed run may change: nothing computed depends on them
# settings earlier versions had, at the value that trains as this version does; a checkpoint with another value is refused
RETIRED = {"budget_spread": False, "lr_ratios": None}


@dataclass
class TrainConfig:
    """Settings of supernet training (the reference recipe: AdamW, lr 1e-4, weight decay 1e-4, cosine)."""

    steps: int
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    grad_accum: int = 1
    max_grad_norm: Optional[float] = None
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    sampling: str = "uniform"
    budget: Optional[Union[int, tuple[int, int]]] = None  # kept as (min, max)
    distill: bool = False
    distill_temperature: float = 1.0
    subnet: Optional[dict[str, dict[str, str]]] = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps <= self.steps):
            raise ValueError(f"warmup_steps must be an integer in [0, steps], got {self.warmup_steps!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.precision not in PRECISION:
            raise ValueError(f"precision must be one of {list(PRECISION)}, got {self.precision!r}")
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {list(SAMPLING)}, got {self.sampling!r}")
        if (self.sampling == "fixed") != (self.subnet is not None):
            raise ValueError("sampling='fixed' trains the subnet given as subnet=...; give both or neither")
        if self.sampling in ("budget", "sandwich") and self.budget is None:
            raise ValueError(f"sampling={self.sampling!r} needs a budget (a maximum or a (min, max) pair of parameters)")
        if self.budget is not None:
            self.budget = budget_bounds(self.budget)  # one form for 700, (0, 700) and [0, 700]
        if self.distill and self.sampling != "sandwich":
            raise ValueError("distill=True needs sampling='sandwich' (the largest subnet is the teacher)")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")


@dataclass
class TrainResult:
    steps: int
    losses: list[float]
    seconds: float
    samples_per_second: float


def classification_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the model's logits against the batch's labels."""
    return F.cross_entropy(logits_of(model, batch).float(), labels_of(batch))


def _cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class SupernetTrainer:
    """Trains the adapters (and any ``modules_to_save``) of a wrapped model as a weight-shared supernet."""

    def __init__(self, model: nn.Module, data: Data, config: TrainConfig, loss_fn: Optional[LossFn] = None, device: Optional[Union[str, torch.device]] = None) -> None:
        self.layers = layers_or_raise(model)
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a glora.TrainConfig, got {type(config).__name__}")
        self.n_examples = data_length(data)
        if self.n_examples < config.batch_size:
            raise ValueError(f"the data holds {self.n_examples} examples, fewer than one batch of {config.batch_size}")
        if config.distill and loss_fn is not None:
            raise ValueError("distill=True uses the built-in classification loss; drop loss_fn or distill")
        self.model = model
        self.rank, self.world = process_group()
        if self.n_examples < config.batch_size * self.world:
            raise ValueError(f"the data holds {self.n_examples} examples, fewer than one global batch of {config.batch_size} x {self.world} processes")
        self.data = data
        self.config = config
        self.loss_fn = loss_fn or classification_loss
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        model.to(self.device)
        self.runner = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # paths change every step, so some adapter tensors get no gradient in a given step
            self.runner = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                                  find_unused_parameters=True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        # fused on CUDA: one kernel per group of tensors, as the transformers Trainer's default (adamw_torch_fused)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr,
                                           weight_decay=config.weight_decay, fused=True if self.device.type == "cuda" else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _cosine(config.warmup_steps, config.steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.sampler = None
        self.fixed = [validate_subnet(model, config.subnet)] if config.subnet is not None else []
        if config.sampling in ("budget", "sandwich"):
            self.sampler = BudgetSampler(search_space(model), budget_bounds(config.budget), config.seed)
            if config.sampling == "sandwich":
                self.fixed = [validate_subnet(model, self.sampler.largest()), validate_subnet(model, self.sampler.smallest())]
        self.step = 0
        if config.gradient_checkpointing:
            _enable_checkpointing(model)

    # --------------------------------------------------------------------------------------------- batches
    def _batch(self, position: int) -> Batch:
        """Batch number ``position`` of a fixed, seeded order: epoch e is a permutation seeded by (seed, e); with
        several processes, process r takes the r-th of each group of ``world`` consecutive batches."""
        position = position * self.world + self.rank
        per_epoch = self.n_examples // self.config.batch_size
        epoch, k = divmod(position, per_epoch)
        order = torch.randperm(self.n_examples, generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch))
        index = order[k * self.config.batch_size : (k + 1) * self.config.batch_size]
        return to_device(take(self.data, index), self.device)

    def _paths(self) -> list[dict[str, tuple[Choice, ...]]]:
        """The configurations trained this step, as each layer's plan: the fixed subnet; or one uniform draw per
        layer (the reference's rule); or a budget-aware draw, after the sandwich's largest and smallest subnets.
        Every layer holds its plan through the forward, so one recomputed under gradient checkpointing runs the
        same configuration."""
        if self.sampler is not None:
            return [*self.fixed, validate_subnet(self.model, self.sampler.draw(self.step)[0])]
        if self.fixed:
            return self.fixed
        plans = draw_plans([layer for _, layer in self.layers], self.generator)
        return [{name: plan for (name, _), plan in zip(self.layers, plans)}]

    # ------------------------------------------------------------------------------------------- training
    def _micro_step(self, batch: Batch, scale: float) -> float:
        dtype = PRECISION[self.config.precision]
        total = 0.0
        paths = self._paths()
        teacher = None
        for i, plans in enumerate(paths):
            for name, layer in self.layers:
                layer.set_plan(plans[name])
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                if self.config.distill and i > 0:
                    logits = logits_of(self.runner, batch).float()
                    t = self.config.distill_temperature
                    loss = F.kl_div(F.log_softmax(logits / t, -1), F.softmax(teacher / t, -1), reduction="batchmean") * t * t
                elif self.config.distill:
                    logits = logits_of(self.runner, batch).float()
                    teacher = logits.detach()
                    loss = F.cross_entropy(logits, labels_of(batch))
                else:
                    loss = self.loss_fn(self.runner, batch)
            if not torch.isfinite(loss.detach()).all():
                raise FloatingPointError(f"the loss became {loss.item()} at step {self.step}; lower the learning rate or use bf16 instead of fp16")
            self.scaler.scale(loss * (scale / len(paths))).backward()
            total += loss.item() / len(paths)
        return total

    def train(self, steps: Optional[int] = None, checkpoint: Optional[Union[str, os.PathLike]] = None,
              checkpoint_every: Optional[int] = None) -> TrainResult:
        """Train until ``steps`` optimizer steps are done in total (default: the configured number). With
        ``checkpoint`` and ``checkpoint_every``, the checkpoint is written every that many steps and at the end, so a
        killed run loses at most that many (``load_checkpoint`` continues it exactly)."""
        target = self.config.steps if steps is None else steps
        if target > self.config.steps:
            raise ValueError(f"steps {target} exceeds the configured schedule of {self.config.steps}")
        if (checkpoint is None) != (checkpoint_every is None):
            raise ValueError("checkpoint and checkpoint_every go together: the file and how often to rewrite it")
        if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
        self.model.train()
        losses = []
        bar = _bar(self.config.progress and self.rank == 0, self.step, self.config.steps)
        started = time.perf_counter()
        done = 0
        accum = self.config.grad_accum
        while self.step < target:
            loss = 0.0
            for micro in range(accum):
                loss += self._micro_step(self._batch(self.step * accum + micro), 1.0 / accum)
            if self.config.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            done += 1
            losses.append(loss)
            if checkpoint_every is not None and self.step % checkpoint_every == 0:
                self.save_checkpoint(checkpoint)
            if bar is not None:
                rate = done * accum * self.config.batch_size * self.world / (time.perf_counter() - started)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.0f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        if bar is not None:
            bar.close()
        if checkpoint_every is not None and done and self.step % checkpoint_every:
            self.save_checkpoint(checkpoint)
        seconds = time.perf_counter() - started
        return TrainResult(self.step, losses, seconds, done * accum * self.config.batch_size * self.world / max(seconds, 1e-9))

    # ---------------------------------------------------------------------------------------- checkpoints
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Trainable tensors, optimizer, scheduler, scaler and every RNG state: enough to resume exactly.
        With several processes rank 0 writes (the trained state is the same on every rank)."""
        if self.rank != 0:
            barrier(self.world)
            return
        state = {
            "glora_version": __version__,
            "config": asdict(self.config),
            "space": self._space(),
            "world": self.world,
            "step": self.step,
            "trainable": self._trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
                "numpy": np.random.get_state(),
            },
        }
        tmp = f"{os.fspath(path)}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        barrier(self.world)

    def _space(self) -> dict[str, dict[str, list[str]]]:
        return {name: {g: list(names) for g, names in layer.choices.items()} for name, layer in self.layers}

    def load_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Restore a checkpoint of the same run: a different TrainConfig (other than ``progress`` and
        ``gradient_checkpointing``, which change nothing computed), search space or number of processes would not
        continue the run exactly, so it is refused, naming what differs."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        for key in ("step", "trainable", "optimizer", "scheduler", "rng"):
            if key not in state:
                raise ValueError(f"{path} is not a glora training checkpoint (no {key!r})")
        self._check_same_run(path, state)
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        saved = state["trainable"]
        for name in sorted(set(params) | set(saved)):
            if name not in saved:
                raise ValueError(f"checkpoint {path} lacks the trainable tensor {name!r}")
            if name not in params:
                raise ValueError(f"checkpoint tensor {name!r} is not a trainable parameter of the model")
            if saved[name].shape != params[name].shape:
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(saved[name].shape)}, the model's is {tuple(params[name].shape)}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        self.step = int(state["step"])

    def _check_same_run(self, path: Union[str, os.PathLike], state: dict) -> None:
        """Checkpoints written before ``space`` and ``world`` were recorded are checked on their settings alone."""
        if "config" in state:
            for key, value in RETIRED.items():
                if state["config"].get(key, value) != value:
                    raise ValueError(f"checkpoint {path} was written with {key}={state['config'][key]!r}, a setting glora "
                                     f"{__version__} no longer has, so the run cannot continue exactly")
            here = asdict(self.config)
            there = asdict(TrainConfig(**{k: v for k, v in state["config"].items() if k in here}))  # in today's form
            differ = [f"{k} {there[k]!r} there, {here[k]!r} here" for k in here if k not in RESUME_FREE and there[k] != here[k]]
            if differ:
                raise ValueError(f"checkpoint {path} was written with other training settings ({'; '.join(differ)}); "
                                 "resume with the TrainConfig it was written with")
        space, saved = self._space(), state.get("space")
        if saved is not None and saved != space:
            name = next(n for n in sorted(set(space) | set(saved)) if space.get(n) != saved.get(n))
            if name not in space or name not in saved:
                where = "the checkpoint" if name in saved else "this model"
                raise ValueError(f"checkpoint {path} has another search space: layer {name!r} is only in {where}")
            gene = next(g for g in space[name] if space[name][g] != saved[name].get(g))
            raise ValueError(f"checkpoint {path} has another search space: layer {name!r} gene {gene} offers "
                             f"{', '.join(saved[name].get(gene, []))} there, {', '.join(space[name][gene])} here "
                             "(GLoRAConfig ranks, choices or add_bias)")
        if state.get("world", self.world) != self.world:
            raise ValueError(f"checkpoint {path} was written by {state['world']} processes, this run has {self.world}: "
                             "each process's batches depend on their number, so the run would not continue exactly")


def _enable_checkpointing(model: nn.Module) -> None:
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    else:
        raise ValueError(f"{type(model).__name__} offers no gradient checkpointing switch (transformers' or timm's); "
                         "wrap the model in one that forwards it, or checkpoint inside its forward")


def _bar(enabled: bool, initial: int, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="supernet", unit="step")


def train_supernet(model: nn.Module, data: Data, config: TrainConfig, loss_fn: Optional[LossFn] = None, device: Optional[Union[str, torch.device]] = None) -> TrainResult:
    """Train ``model``'s supernet with ``config``; a one-call form of :class:`SupernetTrainer`."""
    return SupernetTrainer(model, data, config, loss_fn, device).train()


__all__ = ["SupernetTrainer", "TrainConfig", "TrainResult", "classification_loss", "train_supernet"]
