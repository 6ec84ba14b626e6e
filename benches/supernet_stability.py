"""Benchmark: why supernet training is unstable, and whether leaving out B's vector and scalar forms fixes it.

B's vector and scalar forms add ``b_i * sum(x)`` to every output of a layer, so one optimizer step on them moves the
output by ``lr * |sum(x)|``, against ``lr * |y|`` for a row scale of W0 (A's vector). This benchmark measures, on
all-MiniLM-L6-v2 and the movie sentences of supernet_quality.py:

1. per target layer, ``|sum(x)|`` over its input and ``|y|`` of its output on a batch of training sentences, and so
   the relative output change of one step of size ``lr`` through B's vector against A's vector (and, at worst,
   through C's vector, whose ``W0 @ c`` sums a whole row of W0);
2. budget-aware (or sandwich, with distillation, or uniform) supernet training, budget-aware paths within
   [0.75, 1] x 73,728 parameters, in the paper's space and in the space without B's vector and scalar
   (``GLoRAConfig(choices={"B": ["lora", "none"]})``), or any of ``SPACES`` (``--spaces``):
   the loss curve (means over 10 steps) and the validation accuracy of random subnets within the budget on the
   supernet's weights.

    python benches/supernet_stability.py [--runs 1:2e-3:160 2:1e-3:320] [--device cpu]
    python benches/supernet_stability.py --runs 1:2e-3:200:sandwich --name supernet_stability_sandwich
    python benches/supernet_stability.py --runs 1:1e-3:160:uniform 2:1e-3:160:uniform 1:2e-3:160:uniform \
        --spaces "B without vector/scalar" "B and C without vector/scalar" --name supernet_stability_c
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any, Optional

import torch

import glora
from common import print_table, write_result
from glora.tasks.text_classification import BERT_LINEARS
from glora.training.sampling import BudgetSampler
from supernet_quality import ASSETS, BUDGET, load, splits, train_supernet

SPACES = {
    "paper": None,
    "B without vector/scalar": {"B": ["lora", "none"]},
    "B and C without vector/scalar": {"B": ["lora", "none"], "C": ["lora", "none"]},
}


def input_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor], lr: float) -> list[dict[str, Any]]:
    """``|sum(x)|`` and ``|y|`` per target linear (means over tokens), and what one step of ``lr`` on B's vector,
    on A's vector and on C's vector does to the output, relative to ``|y|``. C's vector adds ``W0 @ c`` to the
    bias; AdamW moves every coordinate of ``c`` by about ``lr``, with signs that follow the gradient, so the output
    moves by up to ``lr * sum_j |W0_ij|`` (the coherent worst case, given here)."""
    stats: dict[str, tuple[float, float, int, float]] = {}

    def hook(name: str):
        def record(module, inputs, output) -> None:
            x = inputs[0]
            row_sums = module.weight.float().abs().sum(1).mean().item()
            stats[name] = (x.sum(-1).abs().mean().item(), output.abs().mean().item(), x.shape[-1], row_sums)

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and any(n.endswith(t) for t in BERT_LINEARS)
    ]
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    for h in handles:
        h.remove()
    return [
        {
            "layer": n,
            "in_features": d,
            "abs_sum_x": s,
            "abs_y": y,
            "b_vector_step": lr * s / y,
            "a_vector_step": lr,
            "c_vector_step": lr * w / y,
        }
        for n, (s, y, d, w) in stats.items()
    ]


def run(
    model_dir: str,
    data: tuple,
    seed: int,
    lr: float,
    steps: int,
    sampling: str,
    choices: Optional[dict[str, list[str]]],
    device: torch.device,
    random_subnets: int,
) -> dict[str, Any]:
    train, val, _ = data
    torch.manual_seed(seed)
    model = load(model_dir, device)
    glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=BERT_LINEARS, modules_to_save=["head"], choices=choices))
    window = None if sampling == "uniform" else (int(0.75 * BUDGET), BUDGET)
    losses = train_supernet(
        model, train, device, seed, steps=steps, lr=lr, sampling=sampling, budget=window, distill=sampling == "sandwich"
    ).losses
    draws = BudgetSampler(glora.search_space(model), (0, BUDGET), seed + 1000).draw(0, random_subnets)
    accuracy = glora.SubnetEvaluator(model, val, device=device)(draws)
    return {
        "seed": seed,
        "lr": lr,
        "steps": steps,
        "sampling": sampling,
        "loss_curve": [round(statistics.mean(losses[i : i + 10]), 4) for i in range(0, steps, 10)],
        "final_loss": statistics.mean(losses[-50:]),
        "max_loss_after_warmup": max(losses[steps // 10 :]),
        "random_val_accuracy": accuracy,
        "random_val_mean": statistics.mean(accuracy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ASSETS, "minilm-fp16"))
    parser.add_argument("--data", default=os.path.join(ASSETS, "vaderSentiment-3.3.2.tar.gz"))
    parser.add_argument(
        "--runs",
        nargs="*",
        default=["1:2e-3:160", "2:1e-3:320"],
        help="seed:lr:steps[:sampling] (budget, sandwich or uniform; default budget)",
    )
    parser.add_argument(
        "--spaces",
        nargs="*",
        default=list(SPACES)[:2],
        choices=list(SPACES),
        help="search spaces compared in every run",
    )
    parser.add_argument("--name", default="supernet_stability", help="results/<name>_<device>.json")
    parser.add_argument("--random-subnets", type=int, default=6)
    parser.add_argument("--validation", type=int, default=300, help="validation sentences scored per random subnet")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    config = {
        "model": "all-MiniLM-L6-v2 (mean pooling)",
        "sizes": [1000, 500, 2000],
        "validation_scored": args.validation,
        "budget_window": [int(0.75 * BUDGET), BUDGET],
        "rank": 4,
        "runs": args.runs,
        "spaces": {name: SPACES[name] for name in args.spaces},
    }
    figures: dict[str, Any] = {"input_sums": None, "runs": []}
    for spec in args.runs:
        seed, lr, steps, sampling = (spec.split(":") + ["budget"])[:4]
        seed, lr, steps = int(seed), float(lr), int(steps)
        if sampling not in ("budget", "sandwich", "uniform"):
            parser.error(f"run {spec!r}: sampling must be budget, sandwich or uniform")
        train, val, test = splits(tokenizer, args.data, (1000, 500, 2000), seed)
        val = {k: v[: args.validation] for k, v in val.items()}
        if figures["input_sums"] is None:
            figures["input_sums"] = input_sums(
                load(args.model, device), {k: v[:64].to(device) for k, v in train.items()}, lr
            )
        for space in args.spaces:
            row = {
                "space": space,
                **run(
                    args.model,
                    (train, val, test),
                    seed,
                    lr,
                    steps,
                    sampling,
                    SPACES[space],
                    device,
                    args.random_subnets,
                ),
            }
            figures["runs"].append(row)
            print({k: v for k, v in row.items() if k != "loss_curve"}, flush=True)
            path = write_result(args.name, device, config, figures)
    print_table(
        figures["input_sums"],
        ["layer", "in_features", "abs_sum_x", "abs_y", "b_vector_step", "a_vector_step", "c_vector_step"],
    )
    print_table(
        figures["runs"],
        ["space", "sampling", "seed", "lr", "steps", "final_loss", "max_loss_after_warmup", "random_val_mean"],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
