"""Benchmark: one training step compiled with ``torch.compile`` beside eager, glora's supernet against PEFT LoRA.

timm ViT-B/16 (random init, batch 64, 224 px, bf16 autocast; targets blocks.*.attn.qkv/proj, mlp.fc1/fc2, head
trainable). PEFT LoRA r=8 and full fine-tuning: ``torch.compile(model)`` under the AdamW step of
``benches/methods.py``. glora: the supernet trained by ``SupernetTrainer`` (uniform paths, a new path every step),
eager and with ``TrainConfig(compile=True)``, where the paths enter the compiled graph as tensors. Steps are timed
interleaved after warm-up (which includes compilation); the compile time of each method is reported apart.
Results: ``benches/results/compile_step_<device>.json`` (docs/benchmarks.md).

    python benches/compile_step.py [--methods ...]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import glora
from common import print_table, sync, time_interleaved, write_result
from methods import prepare, training_step
from train_step import VIT_TARGETS

METHODS = ["peft_lora_r8", "peft_lora_r8_compiled", "glora_supernet", "glora_supernet_compiled"]


def vit_data(device: torch.device, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, 224, 224, generator=g).to(device), torch.randint(0, 1000, (batch,), generator=g).to(
        device
    )


def make_vit(device: torch.device):
    import timm

    def make():
        torch.manual_seed(0)
        return timm.create_model("vit_base_patch16_224", pretrained=False).to(device)

    return make


def step_of(method: str, device: torch.device, batch: int):
    """The method's training step (one optimizer step per call)."""
    x, y = vit_data(device, batch)
    compiled = method.endswith("_compiled")
    base = method.removesuffix("_compiled")
    if base == "glora_supernet":
        model = make_vit(device)()
        glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=VIT_TARGETS, modules_to_save=["head"]))
        config = glora.TrainConfig(
            steps=100_000, batch_size=batch, lr=1e-4, precision="bf16", compile=compiled, progress=False
        )
        trainer = glora.SupernetTrainer(model, (x, y), config, device=device)
        return lambda: trainer.train(steps=trainer.step + 1)
    model, params, _ = prepare(base, make_vit(device), VIT_TARGETS, "head")
    runner = torch.compile(model) if compiled else model
    return training_step(runner, params, lambda m: F.cross_entropy(m(x), y), device.type)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = 64 if gpu else 2
    steps, first = {}, {}
    for method in args.methods:
        step = step_of(method, device, batch)
        started = time.perf_counter()
        step()
        sync(device)
        first[method] = time.perf_counter() - started
        steps[method] = step
    timings = time_interleaved(steps, device, 5 if gpu else 1, 30 if gpu else 2)
    lora = timings.get("peft_lora_r8_compiled") or timings.get("peft_lora_r8")
    rows = [
        {
            "method": m,
            "ms_per_step": t["median_ms"],
            "host_ms": t["host_ms"],
            "first_step_s": first[m],
            "time_vs_compiled_peft_lora": t["median_ms"] / lora["median_ms"] if lora else None,
        }
        for m, t in timings.items()
    ]
    print_table(rows, list(rows[0]))
    config = {"model": "vit_base_patch16_224", "batch": batch, "precision": "bf16", "methods": args.methods}
    print("wrote", write_result("compile_step", device, config, rows))


if __name__ == "__main__":
    main()
