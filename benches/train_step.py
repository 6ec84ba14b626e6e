"""Benchmark: one supernet training step (forward, backward, AdamW) of glora against PEFT and full fine-tuning.

Models (random init): timm ViT-B/16 (batch 64, 224 px; targets blocks.*.attn.qkv/proj, mlp.fc1/fc2; head
trainable) and a LLaMA-style decoder of about 0.95 B parameters (hidden 2048, 16 layers, MLP 5632; weights in
bf16; batch 4 x 1024 tokens; targets q, k, v, o, gate, up, down; no biases). bf16 autocast for every method.
Figures: median ms per step and peak GPU memory, with ratios to PEFT LoRA r=8 measured in the same process.
The methods' steps are timed interleaved (one step of each per round), so a drift of the host's speed, which
bounds these steps, reaches all alike; each peak is the method's own, measured in a fresh process that builds
only that model and runs two steps (``--peaks shared`` measures it in the timing process instead, over what was
allocated before the model was built: that figure came out 1.4 GiB low for the reference layer on ViT-B/16).
glora's layers keep the base's architecture (``add_bias=False``, the default, as PEFT's GloraConfig: no
bias-creating C or E on bias-free layers); ``glora_supernet_add_bias`` is the supernet with
the paper's terms there too, measured on the LLaMA-style decoder (every ViT layer has a bias).

    python benches/train_step.py [--models vit llama] [--methods ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys

import torch
import torch.nn.functional as F

import glora
from common import allocated, peak_gib, print_table, reset_peak, time_interleaved, write_result
from glora.tuner.config import BATCHED_WEIGHTS_MODES
from methods import METHODS, OPTIMIZER, prepare, training_step

VIT_TARGETS = r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
LLAMA_TARGETS = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def vit(device: torch.device, batch: int):
    import timm

    def make():
        torch.manual_seed(0)
        return timm.create_model("vit_base_patch16_224", pretrained=False).to(device)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    return make, VIT_TARGETS, "head", lambda model: F.cross_entropy(model(x), y)


def llama(device: torch.device, batch: int, seq: int = 1024):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=32000,
        max_position_embeddings=seq,
        attn_implementation="sdpa",
    )

    def make():
        torch.manual_seed(0)
        return LlamaForCausalLM(config).to(device=device, dtype=torch.bfloat16)

    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    return make, LLAMA_TARGETS, None, lambda model: model(input_ids=ids, labels=ids).loss


def measured_step(method: str, make, targets, head, loss_of, device, mode: str) -> tuple:
    """The method's model, its training step and its peak memory in GiB (None off CUDA): the most allocated
    during a step minus what was allocated before the model was built; ``mode``: glora's batched weights."""
    gc.collect()
    before = allocated(device)
    model, params, subnet = prepare(method, make, targets, head, 0, mode)
    step = training_step(model, params, loss_of, device.type)
    step()
    reset_peak(device)
    step()
    peak = peak_gib(device)
    return model, params, subnet, step, None if peak is None else peak - before / 2**30


def isolated_peak(model_name: str, method: str, args: argparse.Namespace) -> float | None:
    """The method's peak memory measured by a fresh process of this script (``--peak-of``)."""
    command = [
        sys.executable,
        __file__,
        "--peak-of",
        model_name,
        method,
        "--device",
        args.device,
        "--batched-weights",
        args.batched_weights,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring the peak of {method} on {model_name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_gib"]


def workload(name: str, device: torch.device) -> tuple:
    gpu = device.type == "cuda"
    if name == "vit":
        return vit(device, 64 if gpu else 2)
    return llama(device, 4 if gpu else 1, 1024 if gpu else 64)


def prepare_all(methods: list[str], make, targets, head, loss_of, device, mode: str) -> tuple[dict, dict]:
    """Every method's model and training step, all kept alive for interleaved timing, and each method's row
    with its peak memory measured in this process (``--peaks shared``)."""
    steps, rows = {}, {}
    for method in methods:
        model, params, subnet, step, peak = measured_step(method, make, targets, head, loss_of, device, mode)
        steps[method] = step
        rows[method] = {
            "method": method,
            "peak_gib": peak,
            "trainable_params": sum(p.numel() for p in params),
            "subnet_params": glora.count_params(model, subnet) if subnet is not None else None,
            "model_params": sum(p.numel() for p in model.parameters()),
        }
    return steps, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", default=["vit", "llama"])
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--name", default="train_step", help="results/<name>_<device>.json (e.g. train_step_always)")
    parser.add_argument(
        "--batched-weights",
        default="auto",
        choices=BATCHED_WEIGHTS_MODES,
        help="glora's GLoRAConfig.batched_weights (always: every W' kept for the backward)",
    )
    parser.add_argument(
        "--peaks",
        default="isolated",
        choices=["isolated", "shared"],
        help="peak memory from a fresh process per method (isolated) or from the timing process (shared)",
    )
    parser.add_argument("--peak-of", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.peak_of:
        name, method = args.peak_of
        print(
            json.dumps({"peak_gib": measured_step(method, *workload(name, device), device, args.batched_weights)[-1]})
        )
        return
    warmup, repeat = (5, 30) if gpu else (1, 2)
    results = {}
    for name in args.models:
        methods = [
            m for m in args.methods if not (name == "vit" and m == "glora_supernet_add_bias")
        ]  # every ViT layer has a bias
        steps, by_method = prepare_all(methods, *workload(name, device), device, args.batched_weights)
        timings = time_interleaved(steps, device, warmup, repeat)
        rows = []
        for method, row in by_method.items():
            timing = timings[method]
            rows.append(
                {**row, "ms_per_step": timing["median_ms"], "min_ms": timing["min_ms"], "host_ms": timing["host_ms"]}
            )
        del steps
        gc.collect()
        if gpu and args.peaks == "isolated":
            torch.cuda.empty_cache()  # the fresh processes get the memory the timing process no longer uses
            for row in rows:
                row["peak_gib_shared_process"] = row["peak_gib"]
                row["peak_gib"] = isolated_peak(name, row["method"], args)
        lora = next((r for r in rows if r["method"] == "peft_lora_r8"), None)
        for r in rows:
            r["time_vs_peft_lora"] = r["ms_per_step"] / lora["ms_per_step"] if lora else None
            r["memory_vs_peft_lora"] = r["peak_gib"] / lora["peak_gib"] if lora and r["peak_gib"] else None
        print(name)
        print_table(
            rows,
            [
                "method",
                "ms_per_step",
                "host_ms",
                "time_vs_peft_lora",
                "peak_gib",
                "memory_vs_peft_lora",
                "trainable_params",
                "subnet_params",
            ],
        )
        results[name] = rows
        path = write_result(
            args.name,
            device,  # after each model: a run cut short keeps what it measured
            {
                "vit": {"model": "vit_base_patch16_224", "batch": 64 if gpu else 2, "targets": VIT_TARGETS},
                "llama": {
                    "hidden": 2048,
                    "layers": 16,
                    "mlp": 5632,
                    "batch": 4 if gpu else 1,
                    "seq": 1024 if gpu else 64,
                    "weights": "bf16",
                    "targets": LLAMA_TARGETS,
                },
                "autocast": "bf16",
                "glora_rank": 4,
                "peft_lora_r": 8,
                "warmup_steps": warmup,
                "timed_steps": repeat,
                "optimizer": OPTIMIZER,
                "batched_weights": args.batched_weights,
                "timing": "interleaved rounds, one step of each method per round",
                "peaks": args.peaks,
            },
            results,
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
