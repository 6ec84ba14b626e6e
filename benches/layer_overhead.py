"""Benchmark: cost of a GLoRA layer in a training step and of the merged model at inference.

ViT-B/16 from timm (random init), targets blocks.*.attn.qkv / attn.proj / mlp.fc1 / mlp.fc2, bf16 autocast.
Compared in one process on one device: full fine-tuning, PEFT LoRA r=8, PEFT GloraConfig default, a direct
re-implementation of the reference layer (supernet sampling), glora with fixed random subnets and glora in
supernet mode; then merged-model latency and parameter count against the base model.

    python benches/layer_overhead.py            # GPU if present (batch 64), else CPU (batch 4)
"""

from __future__ import annotations

import argparse
import copy
import gc
import warnings

import torch
import torch.nn.functional as F

import glora
from common import peak_gib, print_table, reset_peak, time_ms, write_result
from methods import prepare, training_step

TARGETS = r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"


def make_vit(device: torch.device) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False).to(device)


def train_step_figures(method: str, device: torch.device, batch: int, warmup: int, repeat: int, seed: int) -> dict:
    model, params, subnet = prepare(method, lambda: make_vit(device), TARGETS, "head", seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, 3, 224, 224, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    step = training_step(model, params, lambda m: F.cross_entropy(m(x), y), device.type)

    step()
    reset_peak(device)
    timing = time_ms(step, device, warmup, repeat)
    row = {
        "method": method,
        "ms_per_step": timing["median_ms"],
        "min_ms": timing["min_ms"],
        "max_ms": timing["max_ms"],
        "peak_gib": peak_gib(device),
        "trainable_params": sum(p.numel() for p in params),
        "subnet_params": glora.count_params(model, subnet) if subnet is not None else None,
    }
    return row


def merged_figures(device: torch.device, batch: int, warmup: int, repeat: int, seed: int) -> dict:
    base = make_vit(device).eval()
    model = glora.wrap(copy.deepcopy(base), glora.GLoRAConfig(rank=4, target_modules=TARGETS))
    with torch.no_grad():
        for _, p in glora.adapter_parameters(model):
            p.normal_(0, 0.02)
    subnet = glora.sample_subnet(model, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", glora.BiasAddedWarning)
        merged = glora.merge(model, subnet).eval()
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed)).to(device)

    def run(m):
        def fn():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                m(x)

        return fn

    rounds = []
    for _ in range(3):  # interleave to cancel drift
        rounds.append(
            (
                time_ms(run(base), device, warmup, repeat)["median_ms"],
                time_ms(run(merged), device, warmup, repeat)["median_ms"],
            )
        )
    base_ms = min(r[0] for r in rounds)
    merged_ms = min(r[1] for r in rounds)
    n_base = sum(p.numel() for p in base.parameters())
    n_merged = sum(p.numel() for p in merged.parameters())
    return {
        "base_ms": base_ms,
        "merged_ms": merged_ms,
        "latency_ratio": merged_ms / base_ms,
        "base_params": n_base,
        "merged_params": n_merged,
        "param_ratio": n_merged / n_base,
        "subnet_params": glora.count_params(model, subnet),
    }


METHODS = ["full_finetune", "peft_lora_r8", "reference_supernet", "glora_fixed_random", "glora_fixed_all_lora"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3, help="random fixed subnets measured (glora_fixed_random)")
    parser.add_argument("--methods", nargs="*", default=METHODS)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (64 if gpu else 4)
    warmup, repeat = (5, 20) if gpu else (1, 3)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for method in args.methods:
        seeds = range(args.seeds) if method == "glora_fixed_random" else [0]
        for seed in seeds:
            row = train_step_figures(method, device, batch, warmup, repeat, seed)
            gc.collect()
            row["seed"] = seed
            rows.append(row)
            print(f"{method} seed {seed}: {row['ms_per_step']:.2f} ms/step", flush=True)
    lora = next((r for r in rows if r["method"] == "peft_lora_r8"), None)
    for r in rows:
        r["time_vs_peft_lora"] = r["ms_per_step"] / lora["ms_per_step"] if lora else None
        r["memory_vs_peft_lora"] = r["peak_gib"] / lora["peak_gib"] if lora and r["peak_gib"] else None
    merged = merged_figures(device, batch, warmup, repeat, 0)
    print_table(
        rows,
        [
            "method",
            "seed",
            "ms_per_step",
            "time_vs_peft_lora",
            "peak_gib",
            "memory_vs_peft_lora",
            "trainable_params",
            "subnet_params",
        ],
    )
    print(
        f"merged model: latency {merged['merged_ms']:.2f} ms vs base {merged['base_ms']:.2f} ms (ratio {merged['latency_ratio']:.3f}); "
        f"params {merged['merged_params']:,} vs {merged['base_params']:,} (ratio {merged['param_ratio']:.3f})"
    )
    path = write_result(
        "layer_overhead",
        device,
        {
            "model": "vit_base_patch16_224 (timm, random init)",
            "batch": batch,
            "image": 224,
            "autocast": "bf16",
            "targets": TARGETS,
            "glora_rank": 4,
            "peft_lora_r": 8,
            "optimizer": "AdamW lr 1e-4 wd 1e-4",
            "warmup_steps": warmup,
            "timed_steps": repeat,
            "tf32": gpu,
        },
        {"train_step": rows, "merged_inference": merged},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
