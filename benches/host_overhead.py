"""Benchmark: the host's share of a training step, on the CPU, for every method of train_step.py.

On a GPU, eager training steps of ViT-B/16 and the LLaMA-style decoder are bound by the host (Python, autograd
and kernel launches), not by the GPU. This proxy keeps each model's graph (ViT-B/16's 12 blocks, an 8-layer
LLaMA with a bf16 base) at width 32 and batch 1-2, so the arithmetic is negligible and the step time is the host's
work; one thread, methods timed in interleaved rounds, best round kept. Figures are ratios to PEFT LoRA r=8 in
the same process; they guide, the GPU figures (train_step.py) decide. The ``*_compiled`` methods are those of
compile_step.py: the model under ``torch.compile`` (inductor), glora's supernet trained by ``SupernetTrainer`` with
``compile=True`` (``glora_supernet_trainer``: the same trainer eager).

    python benches/host_overhead.py [--models vit llama] [--batched-weights auto|always] [--methods ...]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import print_table, write_result
from compile_step import glora_step
from glora.tuner.config import BATCHED_WEIGHTS_MODES
from methods import prepare, training_step

METHODS = ["full_finetune", "peft_lora_r8", "glora_supernet", "glora_fixed_random", "glora_fixed_all_lora"]
COMPILED = [
    "full_finetune_compiled",
    "peft_lora_r8_compiled",
    "glora_supernet_trainer",
    "glora_supernet_compiled",
]


def vit():
    import timm

    def make():
        torch.manual_seed(0)
        return timm.create_model(
            "vit_base_patch16_224", pretrained=False, embed_dim=32, num_heads=2, img_size=32, num_classes=10
        )

    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    return (
        make,
        r"blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)",
        "head",
        lambda model: F.cross_entropy(model(x), y),
    )


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=8,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=16,
        attn_implementation="sdpa",
    )

    def make():
        torch.manual_seed(0)
        return LlamaForCausalLM(config).to(dtype=torch.bfloat16)

    ids = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(0))
    return (
        make,
        r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
        None,
        lambda model: model(input_ids=ids, labels=ids).loss,
    )


def steps_of(make, targets, head, loss_of, methods, mode: str):
    steps = {}
    cpu = torch.device("cpu")
    for method in methods:
        if method.startswith("glora_supernet_"):
            step = glora_step(make, targets, head, loss_of, cpu, compiled=method.endswith("_compiled"))
        else:
            model, params, _ = prepare(method.removesuffix("_compiled"), make, targets, head, 0, mode)
            model = torch.compile(model) if method.endswith("_compiled") else model
            step = training_step(model, params, loss_of, "cpu", fused=True)  # fused, as train_step.py on the GPU
        for _ in range(5):
            step()
        steps[method] = step
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["vit", "llama"])
    parser.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS + COMPILED)
    parser.add_argument("--batched-weights", default="auto", choices=BATCHED_WEIGHTS_MODES)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--name", default="host_overhead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in args.models:
        steps = steps_of(*(vit() if name == "vit" else llama()), args.methods, args.batched_weights)
        best = {m: float("inf") for m in steps}
        for _ in range(args.rounds):
            for method, step in steps.items():
                t0 = time.perf_counter()
                for _ in range(10):
                    step()
                best[method] = min(best[method], (time.perf_counter() - t0) * 100)
        lora = best.get("peft_lora_r8")
        rows = [
            {"method": m, "ms_per_step": t, "time_vs_peft_lora": t / lora if lora else None} for m, t in best.items()
        ]
        print(name)
        print_table(rows, ["method", "ms_per_step", "time_vs_peft_lora"])
        results[name] = rows
    path = write_result(
        args.name,
        torch.device("cpu"),
        {
            "vit": "vit_base_patch16_224 graph at width 32, batch 2, 32 px",
            "llama": "8 layers, width 32, bf16 base, 1 x 16 tokens",
            "threads": 1,
            "rounds": args.rounds,
            "steps_per_round": 10,
            "autocast": "bf16",
            "batched_weights": args.batched_weights,
        },
        results,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
