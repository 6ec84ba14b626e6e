"""Benchmark: one training step compiled with ``torch.compile`` beside eager: glora's supernet against PEFT LoRA
and full fine-tuning.

The models of ``benches/train_step.py`` (random init): timm ViT-B/16 (batch 64, 224 px; head trainable) and the
LLaMA-style 0.95 B decoder (bf16 weights, batch 4 x 1,024 tokens), bf16 autocast. Full fine-tuning and PEFT LoRA r=8:
the model (``torch.compile(model)`` for ``*_compiled``) under the AdamW step of ``benches/methods.py``. glora: the
supernet trained by ``SupernetTrainer`` with a new uniform path every step (``TrainConfig(compile=True)`` for
``*_compiled``: the paths enter the one compiled graph as tensors). Steps are timed interleaved after warm-up (which
includes compilation), in runs of ``RUN`` steps on a GPU as a training loop takes them (glora: one
``SupernetTrainer.train`` call of ``RUN`` steps, so that the host prepares a step while the device runs the one
before); ``ms_per_step`` is a run's time over ``RUN``. The first step's time is reported apart; each method's peak
memory is measured in the timing process after its own two steps (over what was allocated before its model was
built). With ``--profile`` each method's GPU time per step (the kernels and copies the profiler records over one run)
is reported beside it as ``gpu_busy_ms``: the rest of a step is the device waiting for the host. Results:
``benches/results/compile_step_<device>.json`` (docs/benchmarks.md).

    python benches/compile_step.py [--models vit llama] [--methods ...] [--profile]
"""

from __future__ import annotations

import argparse
import functools
import gc
import time
from typing import Callable

import torch

import glora
from common import allocated, peak_gib, print_table, reset_peak, sync, time_interleaved, write_result
from glora.layers.batched_weights import weight_builders
from glora.tuner.wrapping import glora_layers
from methods import prepare, training_step
from train_step import workload

METHODS = [
    "full_finetune",
    "full_finetune_compiled",
    "peft_lora_r8",
    "peft_lora_r8_compiled",
    "glora_supernet",
    "glora_supernet_compiled",
    "glora_supernet_compiled_given",
    "glora_supernet_compiled_codes",
    "full_finetune_compiled_graphs",
    "peft_lora_r8_compiled_graphs",
    "glora_supernet_compiled_graphs",
    "glora_supernet_compiled_graphs_in_place",
    "glora_supernet_compiled_codes_graphs",
    "glora_supernet_compiled_codes_regional",
]
"""``glora_supernet_compiled``: the trainer's own compiled step (on one GPU: the weights formed in the graph from the
paths' codes, replayed as a CUDA graph). ``*_compiled_given``: the frozen linear layers' weights built outside the
graph and given to it (the trainer's way elsewhere: a CPU, ``torchrun``), default mode; the ``graphs`` variants below
without ``codes`` build them so too. ``*_compiled_codes``: glora's frozen linear layers form their weights in the
graph from the paths' codes instead of taking them built outside it (default mode). ``*_compiled_graphs``:
``torch.compile(..., mode="reduce-overhead")`` (the graph replayed as a CUDA graph; for glora the trainer's compiled
forward and loss). ``*_compiled_graphs_in_place``: the same, with
every layer's given ``W'`` and ``b'`` copied into storage that stays in place from step to step (the CUDA-graph trees
take them as static inputs and re-record the graph whenever their addresses change). All are measurement devices of
this benchmark. ``*_compiled_codes_graphs``: both, the weights formed in the graph from the codes and the graph
replayed as a CUDA graph (its inputs, the parameters and the codes, keep their addresses from step to step).
``*_compiled_codes_regional``: the weights formed from the codes, and each of the model's repeated blocks compiled on
its own instead of the whole forward (identical blocks share one graph, since every layer reads its code as a tensor
of its own: a shorter compilation)."""


RUN = 10
"""Steps per timed run on a GPU."""


def in_place(layer: torch.nn.Module) -> None:
    """Make ``layer`` (a GLoRA layer) keep the weights the trainer gives it in storage of its own: each step's are
    copied in (the copy carries their gradient back), so the graph's inputs keep their addresses."""
    storage: dict[int, torch.Tensor] = {}
    give = layer.give_weights

    def give_in_place(weights):
        if weights is None:
            return give(None)
        kept = []
        for i, t in enumerate(weights):
            if t is not None:
                if i not in storage or storage[i].shape != t.shape or storage[i].dtype != t.dtype:
                    storage[i] = torch.empty_like(t, requires_grad=False)
                t = storage[i].copy_(t)
            kept.append(t)
        return give(tuple(kept))

    layer.give_weights = give_in_place


def glora_step(
    make, targets, head, loss_of, device: torch.device, compiled: bool, variant: str = ""
) -> Callable[..., None]:
    """A supernet step of ``SupernetTrainer`` (a new uniform path every step; compiled with ``compile=True``). The
    workload's loss holds its own fixed batch, so the trainer's data is a placeholder the loss ignores."""
    model = make()
    glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=targets, modules_to_save=[head] if head else None))
    config = glora.TrainConfig(steps=10**6, batch_size=1, lr=1e-4, precision="bf16", compile=compiled, progress=False)
    placeholder = torch.zeros(1, device=device)
    trainer = glora.SupernetTrainer(model, placeholder, config, loss_fn=lambda m, _: loss_of(m), device=device)
    parts = variant.split("_")
    if "codes" in parts:  # every layer forms its weights in the graph from the paths' codes
        trainer.weight_builders = []
        trainer.forward_loss = torch.compile(trainer._forward_loss)  # default mode unless graphs, below
    elif variant:  # the frozen linear layers' weights built outside the graph (the trainer's way off one GPU)
        trainer.weight_builders = weight_builders(model)
        trainer.forward_loss = torch.compile(trainer._forward_loss)
    if "regional" in parts:
        trainer.forward_loss = trainer._forward_loss
        for block in repeated_blocks(model):
            block.compile()
    elif "graphs" in parts:
        trainer.forward_loss = torch.compile(trainer._forward_loss, mode="reduce-overhead")
    if variant == "graphs_in_place":
        for _, layer in glora_layers(model):
            in_place(layer)
    return lambda steps=1: trainer.train(steps=trainer.step + steps)


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The longest list of same-class modules in ``model`` (a transformer's blocks)."""
    lists = [
        list(m)
        for m in model.modules()
        if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)) and len(m) > 1 and len({type(c) for c in m}) == 1
    ]
    return max(lists, key=len)


def step_of(method: str, model_name: str, device: torch.device) -> Callable[..., None]:
    """The method's training steps: ``step(k)`` takes ``k`` optimizer steps (default 1)."""
    make, targets, head, loss_of = workload(model_name, device)
    base, compiled, variant = method.partition("_compiled")
    variant = variant.removeprefix("_")
    if base == "glora_supernet":
        return glora_step(make, targets, head, loss_of, device, bool(compiled), variant)
    model, params, _ = prepare(base, make, targets, head)
    if compiled:
        model = torch.compile(model, mode="reduce-overhead") if variant.startswith("graphs") else torch.compile(model)
    one = training_step(model, params, loss_of, device.type)

    def steps_of(steps: int = 1) -> None:
        for _ in range(steps):
            one()

    return steps_of


def gpu_busy_ms(step: Callable[..., None], steps: int) -> float:
    """The device time per step of ``step(steps)``: every kernel, copy and set the profiler records, summed."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(steps)
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / 1000 / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vit", "llama"], choices=["vit", "llama"])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default="compile_step", help="results/<name>_<device>.json")
    parser.add_argument("--profile", action="store_true", help="also each method's GPU busy time per step")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    run = RUN if gpu else 1
    results = {}
    for model_name in args.models:
        steps, first, peaks = {}, {}, {}
        for method in args.methods:
            gc.collect()
            before = allocated(device)
            step = step_of(method, model_name, device)
            started = time.perf_counter()
            step()
            sync(device)
            first[method] = time.perf_counter() - started
            reset_peak(device)
            step()
            peak = peak_gib(device)
            peaks[method] = None if peak is None else peak - before / 2**30
            print(f"{method}: first step {first[method]:.1f} s, peak {peaks[method]}", flush=True)
            steps[method] = step
        runs = {m: functools.partial(step, run) for m, step in steps.items()}
        timings = time_interleaved(runs, device, 1, 10 if gpu else 2)
        busy = {m: gpu_busy_ms(step, run) for m, step in steps.items()} if args.profile and gpu else {}
        rows = []
        for m, t in timings.items():
            ref = {k: timings.get(k) for k in ("peft_lora_r8_compiled", "full_finetune_compiled")}
            rows.append(
                {
                    "method": m,
                    "ms_per_step": t["median_ms"] / run,
                    "host_ms": t["host_ms"] / run,
                    "gpu_busy_ms": busy.get(m),
                    "first_step_s": first[m],
                    "peak_gib": peaks[m],
                    "time_vs_compiled_peft_lora": t["median_ms"] / ref["peft_lora_r8_compiled"]["median_ms"]
                    if ref["peft_lora_r8_compiled"]
                    else None,
                    "time_vs_compiled_full": t["median_ms"] / ref["full_finetune_compiled"]["median_ms"]
                    if ref["full_finetune_compiled"]
                    else None,
                }
            )
        print(model_name)
        print_table(rows, list(rows[0]))
        results[model_name] = rows
        steps.clear()
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()
    config = {"models": args.models, "precision": "bf16", "methods": args.methods, "steps_per_run": run}
    print("wrote", write_result(args.name, device, config, results))


if __name__ == "__main__":
    main()
