"""Benchmark: does the searched subnet beat LoRA? Supernet sampling options measured on real data.

all-MiniLM-L6-v2 (mean pooling, new linear head) on the movie sentences of ../shared/BENCHMARKS.md: 1000
training, 500 validation (search fitness only) and 2000 test sentences, max_len 64, 3 seeds. For each sampling
option (uniform as the reference, budget-aware, sandwich with distillation) the supernet (rank 4, all 36 encoder
linears) is trained, the search runs at PEFT LoRA r=8 (query, value)'s budget of 73,728 adapter parameters, and
we report the searched subnet's test accuracy, the mean test accuracy of random feasible subnets, and PEFT LoRA
r=8 on query and value trained for the same number of steps.

    python benches/prepare_assets.py     # here, once; then carry .assets to the GPU machine
    python benches/supernet_quality.py [--steps 320] [--glora-steps 320] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from common import print_table, write_result

import glora
from glora.movie_data import balanced_splits, read_sentences
from glora.pipeline import ENCODER_LINEARS, MeanPoolClassifier, accuracy_of, encode
from glora.sampling import BudgetSampler

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".assets")
BUDGET = 73_728


def load(model_dir: str, device: torch.device) -> MeanPoolClassifier:
    from transformers import AutoModel

    return MeanPoolClassifier(AutoModel.from_pretrained(model_dir, add_pooling_layer=False).float(), 2).to(device)


def train_plain(model, data, steps: int, lr: float, batch: int, seed: int, device) -> float:
    """AdamW with 10 % warm-up and cosine decay over the trainable parameters (the PEFT baseline)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warm = steps // 10
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / (warm + 1) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    n = len(data["labels"])
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(steps * batch // n + 1)])
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        idx = order[step * batch : (step + 1) * batch]
        b = {k: v[idx].to(device) for k, v in data.items()}
        labels = b.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(**b).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ASSETS, "minilm-fp16"))
    parser.add_argument("--data", default=os.path.join(ASSETS, "vaderSentiment-3.3.2.tar.gz"))
    parser.add_argument("--steps", type=int, default=320, help="training steps of PEFT LoRA")
    parser.add_argument("--glora-steps", type=int, default=320, help="supernet training steps (at most 3x --steps)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--sampling", nargs="*", default=["uniform", "budget", "sandwich"])
    parser.add_argument("--random-subnets", type=int, default=20)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs=3, default=[1000, 500, 2000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    texts, labels = read_sentences(args.data)
    rows = []
    for seed in args.seeds:
        train, val, test = balanced_splits(texts, labels, tuple(args.sizes), seed)
        train_d, val_d, test_d = (encode(tokenizer, s, 64) for s in (train, val, test))

        torch.manual_seed(seed)
        base = load(args.model, device)
        lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], modules_to_save=["head"]))
        seconds = train_plain(lora, train_d, args.steps, args.lr, 32, seed, device)
        adapter = sum(p.numel() for n, p in lora.named_parameters() if p.requires_grad and "lora_" in n)
        rows.append({"method": "peft_lora_r8_qv", "seed": seed, "steps": args.steps, "adapter_params": adapter,
                     "testaccuracy_of": accuracy_of(lora, test_d, device), "train_s": seconds})
        print(rows[-1], flush=True)

        for sampling in args.sampling:
            torch.manual_seed(seed)
            model = load(args.model, device)
            glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=ENCODER_LINEARS, modules_to_save=["head"]))
            config = glora.TrainConfig(steps=args.glora_steps, batch_size=32, lr=args.lr, warmup_steps=args.glora_steps // 10,
                                       sampling=sampling, budget=BUDGET, distill=sampling == "sandwich", seed=seed,
                                       precision="bf16" if device.type == "cuda" else "fp32", progress=False)
            trained = glora.SupernetTrainer(model, train_d, config, device=device).train()
            val_eval = glora.SubnetEvaluator(model, val_d, device=device)
            found = glora.search(model, val_eval, BUDGET, seed=seed, generations=args.generations, progress=False)
            test_eval = glora.SubnetEvaluator(model, test_d, device=device)
            searched = test_eval([found.best_subnet])[0]
            randoms = BudgetSampler(glora.search_space(model), (0, BUDGET), seed + 1000).draw(0, args.random_subnets)
            random_scores = test_eval(randoms)
            rows.append({"method": f"glora_{sampling}", "seed": seed, "steps": args.glora_steps, "adapter_params": found.best_params,
                         "testaccuracy_of": searched, "random_feasible_test_mean": statistics.mean(random_scores),
                         "validation_best": found.best_score, "train_s": trained.seconds})
            print(rows[-1], flush=True)

    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        acc = [r["testaccuracy_of"] for r in group]
        rnd = [r["random_feasible_test_mean"] for r in group if "random_feasible_test_mean" in r]
        summary.append({"method": method, "seeds": len(group), "test_mean": statistics.mean(acc),
                        "test_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                        "random_feasible_mean": statistics.mean(rnd) if rnd else None, "steps": group[0]["steps"]})
    print_table(summary, ["method", "seeds", "steps", "test_mean", "test_std", "random_feasible_mean"])
    path = write_result("supernet_quality", device, {"model": "all-MiniLM-L6-v2 (mean pooling)", "sizes": args.sizes, "max_len": 64,
                                                      "budget": BUDGET, "lora": "r=8, alpha 16, query+value", "lr": args.lr,
                                                      "seeds": args.seeds, "generations": args.generations},
                        {"runs": rows, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
