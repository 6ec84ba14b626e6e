"""Supernet training: one weight-shared supernet over every layer's configurations (docs/method.md).

The loop: AdamW with linear warm-up and cosine decay, gradient accumulation and clipping, bf16 / fp16 autocast,
optional gradient checkpointing, periodic checkpoints that resume bit for bit. Which subnets a step trains is
``glora.training.paths``'s job, the losses ``glora.training.losses``'s, the checkpoint's contents
``glora.training.checkpoint``'s.

Under ``torchrun`` (an initialised ``torch.distributed`` process group) the model is wrapped in
DistributedDataParallel: every process draws the same paths (same seed), takes its own share of each global
batch (``batch_size`` per process), and the gradients are averaged; rank 0 writes checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from glora.layers.batched_weights import weight_builders
from glora.training.batches import Batch, Data, ShuffledBatches
from glora.training.checkpoint import (
    check_same_run,
    read_checkpoint,
    restore_training_state,
    space_record,
    training_state,
    write_checkpoint,
)
from glora.training.config import AUTOCAST_DTYPES, TrainConfig, TrainResult
from glora.training.distributed import barrier, mean_over_processes, process_group
from glora.training.gradient_checkpointing import enable_gradient_checkpointing
from glora.training.loss_reads import LossReads, read_lag
from glora.training.losses import LossFn, classification_loss, sandwich_loss
from glora.training.paths import PathSampler
from glora.tuner.wrapping import layers_or_raise

COMPILE_BACKEND: Union[str, Callable[..., Any]] = "inductor"
"""The ``torch.compile`` backend of ``TrainConfig(compile=True)``."""


class SupernetTrainer:
    """Trains the adapters (and any ``modules_to_save``) of a wrapped model as a weight-shared supernet."""

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        config: TrainConfig,
        loss_fn: Optional[LossFn] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        layers_or_raise(model)
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a glora.TrainConfig, got {type(config).__name__}")
        if config.distill and loss_fn is not None:
            raise ValueError("distill=True uses the built-in classification loss; drop loss_fn or distill")
        self.model = model
        self.config = config
        self.loss_fn = loss_fn or classification_loss
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.rank, self.world = process_group()
        # compiled, every batch keeps the data's width: one shape, one graph (trimmed widths would recompile)
        self.batches = ShuffledBatches(
            data, config.batch_size, config.seed, self.device, self.rank, self.world, trim=not config.compile
        )
        model.to(self.device)
        self.runner = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # paths change every step, so some adapter tensors get no gradient in a given step; under compile the
            # model inside is compiled (the compiler does not trace DistributedDataParallel's own forward; it splits
            # the model's graph at the gradient buckets)
            self.runner = DistributedDataParallel(
                torch.compile(model, backend=COMPILE_BACKEND) if config.compile else model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        # on a GPU each step's loss is read a step late, so that the host queues the next step meanwhile
        self.loss_reads = LossReads(self.device, read_lag(self.device, config.precision))
        # fused on CUDA: one kernel per group of tensors, as the transformers Trainer's default (adamw_torch_fused);
        # also wherever losses are read late, as only the fused step honours the skip flag (found_inf)
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=True if self.device.type == "cuda" or self.loss_reads.lag else None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.warmup_steps, config.steps)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        if self.loss_reads.skip_flag is not None:  # the fused step skips every step from a non-finite loss on
            self.optimizer.found_inf = self.loss_reads.skip_flag  # type: ignore[attr-defined]
        self.sampler = PathSampler(model, config)
        # one compiled callable for every path: the paths enter it as tensors (PathSampler), so it compiles once,
        # again for the first batch of another shape (which makes the shapes dynamic), and with distill twice as
        # often (the teacher's logits absent, then present): at most 2 compilations, 4 with distill (under torchrun
        # the compiled callable is the model inside DistributedDataParallel, above)
        self.forward_loss = self._forward_loss
        # on one GPU, with one forward and backward per optimizer step, every layer forms its weights in the graph
        # from the paths' codes and the graph is replayed as a CUDA graph (mode "reduce-overhead": one launch, its
        # inputs at fixed addresses; docs/benchmarks.md, "Compiled"); elsewhere the frozen linear layers' weights are
        # built outside the graph and enter it as inputs, which needs the compiler to inline modules (torch >= 2.5:
        # it lifts their tensors as inputs instead of guarding on their identity), or else they too are formed from
        # the codes. Several backward passes per step (grad_accum, sandwich paths) would accumulate gradients that a
        # CUDA graph's next replay overwrites; distill and gradient checkpointing carry outputs across replays.
        graphs = (
            config.compile
            and self.world == 1
            and self.device.type == "cuda"
            and COMPILE_BACKEND == "inductor"
            and config.grad_accum * self.sampler.paths_per_step == 1
            and not config.gradient_checkpointing
        )
        gives = config.compile and not graphs and torch.torch_version.TorchVersion(torch.__version__) >= "2.5"
        self.weight_builders = weight_builders(model) if gives else []
        if config.compile and self.world == 1:
            options: dict[str, Any] = {"mode": "reduce-overhead"} if graphs else {}
            self.forward_loss = torch.compile(self._forward_loss, backend=COMPILE_BACKEND, **options)
        self.step = 0
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model, compiled=config.compile)

    def _micro_step(self, batch: Batch, scale: float) -> torch.Tensor:
        """Forward and backward of every path of this step on one micro-batch; returns the mean loss, on the device
        (read once per optimizer step: each read waits for the device, which idles while the host catches up)."""
        dtype = AUTOCAST_DTYPES[self.config.precision]
        paths = self.sampler.paths(self.step)
        losses = []
        teacher = None
        builders = self.weight_builders
        for plans in paths:
            self.sampler.apply(plans, codes=not builders)
            try:
                with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    # the layers given their weights read no codes: write them only for others (convolutions...)
                    if builders and sum(builder.give() for builder in builders) < len(self.sampler.layers):
                        self.sampler.write_codes(plans)
                    loss, teacher = self.forward_loss(batch, teacher)
                self.scaler.scale(loss * (scale / len(paths))).backward()
            finally:
                for builder in builders:
                    builder.take_back()
            losses.append(loss.detach().to(torch.float32, copy=True))  # a CUDA graph's next replay overwrites it
        return torch.stack(losses).mean()

    def _forward_loss(
        self, batch: Batch, teacher: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """One path's loss on a micro-batch, and the teacher's logits for the paths after it (distill only)."""
        if self.config.distill:
            return sandwich_loss(self.runner, batch, teacher, self.config.distill_temperature)
        return self.loss_fn(self.runner, batch), None

    def train(
        self,
        steps: Optional[int] = None,
        checkpoint: Optional[Union[str, os.PathLike]] = None,
        checkpoint_every: Optional[int] = None,
    ) -> TrainResult:
        """Train until ``steps`` optimizer steps are done in total (default: the configured number). With
        ``checkpoint`` and ``checkpoint_every``, the checkpoint is written every that many steps and at the end, so a
        killed run loses at most that many (``load_checkpoint`` continues it exactly)."""
        target = self.config.steps if steps is None else steps
        if target > self.config.steps:
            raise ValueError(f"steps {target} exceeds the configured schedule of {self.config.steps}")
        if (checkpoint is None) != (checkpoint_every is None):
            raise ValueError("checkpoint and checkpoint_every go together: the file and how often to rewrite it")
        if checkpoint_every is not None and (
            isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1
        ):
            raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
        self.model.train()
        losses: list[float] = []
        bar = _progress_bar(self.config.progress and self.rank == 0, self.step, self.config.steps, self.config.sampling)
        started = time.perf_counter()
        done = 0
        accum = self.config.grad_accum
        samples_per_step = accum * self.config.batch_size * self.world
        reads = self.loss_reads
        self._checked(reads.drain(), [])  # the steps of an interrupted call, not yet read
        self.sampler.drop_unused_gradients()  # and the gradients of its unfinished step
        self.optimizer.zero_grad(set_to_none=True)
        if reads.skip_flag is not None:
            reads.skip_flag.zero_()
        last = math.nan
        while self.step < target:
            micro_losses = [
                self._micro_step(self.batches[self.step * accum + micro], 1.0 / accum) for micro in range(accum)
            ]
            # the mean over the micro-batches and the processes: under torchrun every process stops at the same step
            reads.push(self.step, mean_over_processes(torch.stack(micro_losses).mean(), self.world))
            if not reads.lag:  # read now: checked before the optimizer step, which would spread it to the weights
                last = self._checked(reads.ready(), losses)
            self.sampler.drop_unused_gradients()
            if self.config.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            done += 1
            saving = checkpoint is not None and checkpoint_every is not None and self.step % checkpoint_every == 0
            # a checkpoint holds only steps whose losses were seen finite
            last = self._checked(reads.drain() if saving else reads.ready(), losses, last)
            if saving and checkpoint is not None:
                self.save_checkpoint(checkpoint)
            if bar is not None:
                rate = done * samples_per_step / (time.perf_counter() - started)
                shown = {} if math.isnan(last) else {"loss": f"{last:.4f}"}  # none read yet (a GPU reads late)
                bar.update(1)
                bar.set_postfix(**shown, samples_s=f"{rate:.0f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        self._checked(reads.drain(), losses, last)
        if bar is not None:
            bar.close()
        if checkpoint is not None and checkpoint_every is not None and done and self.step % checkpoint_every:
            self.save_checkpoint(checkpoint)
        seconds = time.perf_counter() - started
        return TrainResult(self.step, losses, seconds, done * samples_per_step / max(seconds, 1e-9))

    def _checked(self, read: list[tuple[int, float]], losses: list[float], last: float = math.nan) -> float:
        """Append the losses ``read`` (step, value) to ``losses``; returns the last one (``last`` if none). A
        non-finite loss raises, and the trainer returns to that step: the optimizer did not apply it (read at once)
        or skipped it and every later step (read late; :mod:`glora.training.loss_reads`). The weights, the
        optimizer's state and the learning rate are then those of that step (the paths' generator is not rewound)."""
        for step, value in read:
            if not math.isfinite(value):
                if self.step > step:
                    self.step = step
                    self.scheduler.last_epoch = step - 1
                    self.scheduler.step()  # the rate of step ``step`` (LambdaLR's rate is a function of the step)
                self.sampler.drop_unused_gradients()
                self.optimizer.zero_grad(set_to_none=True)
                self.loss_reads.drain()  # the later steps' losses, skipped
                raise FloatingPointError(
                    f"the loss became {value} at step {step}; lower the learning rate or use bf16 instead of fp16"
                )
            losses.append(value)
            last = value
        return last

    def save_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Write everything needed to resume exactly (``glora.training.checkpoint``). With several processes rank 0
        writes (the trained state is the same on every rank) and the others wait for it."""
        self._checked(self.loss_reads.drain(), [])  # only steps whose losses were seen finite
        if self.rank == 0:
            write_checkpoint(
                path,
                training_state(
                    self.model,
                    self.config,
                    space_record(self.sampler.layers),
                    self.world,
                    self.step,
                    self.optimizer,
                    self.scheduler,
                    self.scaler,
                    self.sampler.generator,
                ),
            )
        barrier(self.world)

    def load_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Restore a checkpoint of the same run: a different TrainConfig (other than ``progress`` and, without
        ``compile``, ``gradient_checkpointing``, which change nothing computed), search space or number of processes
        would not continue the run exactly, so it is refused, naming what differs."""
        state = read_checkpoint(path)
        check_same_run(path, state, self.config, space_record(self.sampler.layers), self.world)
        self.step = restore_training_state(
            path, state, self.model, self.optimizer, self.scheduler, self.scaler, self.sampler.generator
        )
        self.loss_reads.drain()  # losses of steps before the checkpoint's, not this run's any more
        if self.loss_reads.skip_flag is not None:
            self.loss_reads.skip_flag.zero_()


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor of step ``s``: a linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _progress_bar(enabled: bool, initial: int, total: int, sampling: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="subnet" if sampling == "fixed" else "supernet", unit="step")


def train_supernet(
    model: nn.Module,
    data: Data,
    config: TrainConfig,
    loss_fn: Optional[LossFn] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> TrainResult:
    """Train ``model``'s supernet with ``config``; a one-call form of :class:`SupernetTrainer`."""
    return SupernetTrainer(model, data, config, loss_fn, device).train()


__all__ = [
    "SupernetTrainer",
    "TrainConfig",
    "TrainResult",
    "train_supernet",
]  # TrainConfig and TrainResult live in glora.training.config
