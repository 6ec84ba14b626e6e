"""Benchmark: does the searched subnet beat LoRA? Supernet sampling options measured on real data.

all-MiniLM-L6-v2 (mean pooling, new linear head) on the movie sentences (``glora.tasks.movie``): 1000
training, 500 validation (search fitness only) and 2000 test sentences, max_len 64, 3 seeds. For each sampling
option (uniform as the reference, budget-aware, sandwich with distillation) the supernet (rank 4 unless
``--ranks``, all 36 encoder linears; by default without B's vector and scalar forms, ``--choices`` alone for the
paper's full space) is trained, the search runs at PEFT LoRA r=8 (query, value)'s budget of 73,728 adapter
parameters, and we report the searched subnet's test accuracy, the mean test accuracy of random feasible subnets, and the
baselines of docs/benchmarks.md trained for 320 steps (``--baselines``: PEFT LoRA r=8 on query and value by
default; the linear probe, LoRA r=8 on all encoder linears, PEFT's GloraConfig default and full fine-tuning on
request), with adapter parameters, training time and peak memory. A variant is ``sampling:steps`` or ``sampling:steps+finetune``: with a
fine-tuning part the searched subnet (and, for a fair comparison, ``--random-finetune`` random feasible subnets) is
then trained alone from the supernet's weights, and those steps count towards GLoRA's total (at most 3x LoRA's).
Budget-aware and sandwich training draw paths within ``[floor x budget, budget]``; the search's fitness is the
validation loss (``--fitness``), which over 500 sentences ranks subnets more stably than accuracy. The summary
compares each method with LoRA r=8 (query, value) seed by seed.

    python benches/prepare_assets.py     # here, once; then carry .assets to the GPU machine
    python benches/supernet_quality.py [--variants uniform:640 sandwich:640+320] [--choices] [--seeds 0 1 2] [--jobs 15]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

import glora
from common import peak_gib, print_table, reset_peak, result_path, write_result
from glora.tasks.classification import classification_report
from glora.tasks.movie import balanced_splits, read_sentences
from glora.tasks.text_classification import BERT_LINEARS, MeanPoolClassifier
from glora.training.sampling import BudgetSampler

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".assets")
BUDGET = 73_728


def load(model_dir: str, device: torch.device) -> MeanPoolClassifier:
    from transformers import AutoModel

    return MeanPoolClassifier(AutoModel.from_pretrained(model_dir, add_pooling_layer=False).float(), 2).to(device)


def splits(tokenizer, data: str, sizes: tuple[int, int, int], seed: int) -> tuple[dict, dict, dict]:
    texts, labels = read_sentences(data)
    return tuple(encode(tokenizer, s.texts, s.labels) for s in balanced_splits(texts, labels, sizes, seed))


def encode(tokenizer, texts: list[str], labels: list[int]) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels)}


def train_plain(model, data, steps: int, lr: float, batch: int, seed: int, device) -> float:
    """AdamW with 10 % warm-up and cosine decay over the trainable parameters (the PEFT baseline)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    warm = steps // 10
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / (warm + 1) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
        ),
    )
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


BASELINES = {  # method -> learning rate (full fine-tuning needs a much smaller one)
    "linear_probe": 1e-2,
    "peft_lora_r8_qv": 1e-3,
    "peft_lora_r8_all": 1e-3,
    "peft_glora_default": 1e-3,
    "full_finetune": 5e-5,
}


def baseline_run(
    method: str, model_dir: str, data: tuple, seed: int, steps: int, lr: float, device: torch.device
) -> dict[str, Any]:
    """A baseline with a trained head: the linear probe, PEFT LoRA r=8 (alpha 16) on
    query and value or on all encoder linears, PEFT's GloraConfig default on all encoder linears, or full
    fine-tuning."""
    from peft import GloraConfig, LoraConfig, get_peft_model

    train, _, test = data
    torch.manual_seed(seed)
    model = load(model_dir, device)
    if method.startswith("peft_"):
        config = {
            "peft_lora_r8_qv": lambda: LoraConfig(
                r=8, lora_alpha=16, target_modules=["query", "value"], modules_to_save=["head"]
            ),
            "peft_lora_r8_all": lambda: LoraConfig(
                r=8, lora_alpha=16, target_modules=BERT_LINEARS, modules_to_save=["head"]
            ),
            "peft_glora_default": lambda: GloraConfig(target_modules=BERT_LINEARS, modules_to_save=["head"]),
        }[method]()
        model = get_peft_model(model, config)
    else:
        for name, p in model.named_parameters():
            p.requires_grad_(method == "full_finetune" or name.startswith("head."))
    reset_peak(device)
    seconds = train_plain(model, train, steps, lr, 32, seed, device)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    head = sum(v for n, v in trainable.items() if "head" in n)
    return {
        "method": method,
        "seed": seed,
        "steps": steps,
        "lr": lr,
        "adapter_params": sum(trainable.values()) - head,
        "head_params": head,
        "test_accuracy": classification_report(model, test, device)["accuracy"],
        "train_s": seconds,
        "peak_gib": peak_gib(device),
    }


def train_supernet(model, data, device, seed: int, **settings) -> glora.TrainResult:
    """GLoRA's supernet (or fixed-subnet) training as every run here does it: batch 32, 10 % warm-up, bf16 on a GPU."""
    precision = "bf16" if device.type == "cuda" else "fp32"
    config = glora.TrainConfig(
        batch_size=32, warmup_steps=settings["steps"] // 10, seed=seed, precision=precision, progress=False, **settings
    )
    return glora.SupernetTrainer(model, data, config, device=device).train()


@dataclass
class Settings:
    """GLoRA's settings of a quality run (the command line's); ``tags`` names those that differ from these defaults."""

    lr: float = 1e-3
    fitness: str = "neg_loss"
    generations: int = 20
    random_subnets: int = 20
    finetune_lr: float = 1e-3
    random_finetune: int = 3
    floor: float = 0.75
    search_window: bool = False
    ranks: tuple[int, ...] = (4,)
    init: str = "kaiming"
    max_grad_norm: Optional[float] = None
    choices: Optional[dict[str, list[str]]] = None

    def tags(self, finetuned: bool) -> list[str]:
        """The non-default settings, in the order of the method names already in the results (``finetuned``:
        whether the fine-tuning learning rate took part in the run)."""
        tags = [f"ranks={'/'.join(map(str, self.ranks))}"] if tuple(self.ranks) != (4,) else []
        tags += [f"{g}:{'/'.join(k)}" for g, k in (self.choices or {}).items()]
        tags += [f"init={self.init}"] if self.init != "kaiming" else []
        tags += [f"clip={self.max_grad_norm:g}"] if self.max_grad_norm is not None else []
        tags += [f"lr={self.lr:g}"] if self.lr != 1e-3 else []
        tags += [f"fitness={self.fitness}"] if self.fitness != "neg_loss" else []
        tags += [f"floor={self.floor:g}"] if self.floor != 0.75 else []
        tags += ["window"] if self.search_window else []
        tags += [f"ftlr={self.finetune_lr:g}"] if finetuned and self.finetune_lr != 1e-3 else []
        return tags


def movie_supernet(
    model_dir: str, data_path: str, seed: int, device: torch.device, validation: int = 500
) -> tuple[torch.nn.Module, dict, dict]:
    """A supernet trained as ``glora run`` trains it on the movie sentences (1000 training sentences, uniform paths,
    640 steps, B without its vector and scalar forms), with the seed's validation (500 unless told) and test (2000)
    splits."""
    from transformers import AutoTokenizer

    train, val, test = splits(AutoTokenizer.from_pretrained(model_dir), data_path, (1000, validation, 2000), seed)
    torch.manual_seed(seed)
    model = load(model_dir, device)
    config = glora.GLoRAConfig(target_modules=BERT_LINEARS, modules_to_save=["head"], choices={"B": ["lora", "none"]})
    glora.wrap(model, config)
    train_supernet(model, train, device, seed, steps=640, lr=1e-3, sampling="uniform")
    return model, val, test


def main_over_seeds(
    name: str,
    description: str,
    seed_rows: Callable[..., list[dict[str, Any]]],
    summary: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    seeds: list[int],
    variants: Optional[list[str]] = None,
) -> None:
    """The command of a benchmark run on one movie supernet per seed (``movie_supernet``): ``seed_rows(model, data,
    seed, device)`` per seed, ``summary`` over their rows, both printed and written to ``results/<name>_<device>``.
    With ``variants``, ``--variants`` picks some of them (all by default) and ``seed_rows`` is given those."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=os.path.join(ASSETS, "minilm-fp16"))
    parser.add_argument("--data", default=os.path.join(ASSETS, "vaderSentiment-3.3.2.tar.gz"))
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default=name, help="results/<name>_<device>.json")
    if variants:
        parser.add_argument("--variants", nargs="+", choices=variants, default=variants, help="the variants to run")
    args = parser.parse_args()
    device = torch.device(args.device)
    chosen = {"variants": args.variants} if variants else {}
    rows = [row for seed in args.seeds for row in seed_rows(args.model, args.data, seed, device, **chosen)]
    print_table(rows, list(rows[0]))
    table = summary(rows)
    print_table(table, list(table[0]))
    config = {"model": "all-MiniLM-L6-v2", "budget": BUDGET, "seeds": args.seeds, "supernet_steps": 640}
    print("wrote", write_result(args.name, device, config, {"summary": table, "runs": rows}))


def glora_run(
    model_dir: str,
    data: tuple,
    seed: int,
    sampling: str,
    steps: int,
    device: torch.device,
    settings: Settings,
    finetune_steps: int = 0,
    budget: int = BUDGET,
) -> dict[str, Any]:
    """Train the supernet with one sampling option, search at the budget (or, with ``search_window``, within the
    training window), and score on the test split."""
    s = settings
    train, val, test = data
    torch.manual_seed(seed)
    model = load(model_dir, device)
    glora.wrap(
        model,
        glora.GLoRAConfig(
            ranks=list(s.ranks),
            target_modules=BERT_LINEARS,
            modules_to_save=["head"],
            init=s.init,
            choices=s.choices,
        ),
    )
    window = None if sampling == "uniform" else (int(s.floor * budget), budget)
    reset_peak(device)
    trained = train_supernet(
        model,
        train,
        device,
        seed,
        steps=steps,
        lr=s.lr,
        sampling=sampling,
        budget=window,
        distill=sampling == "sandwich",
        max_grad_norm=s.max_grad_norm,
    )
    train_peak = peak_gib(device)
    searched = window if s.search_window and window else budget
    found = glora.search(
        model,
        glora.SubnetEvaluator(model, val, metric=s.fitness, device=device),
        searched,
        seed=seed,
        generations=s.generations,
        progress=False,
    )
    test_eval = glora.SubnetEvaluator(model, test, device=device)
    randoms = BudgetSampler(glora.search_space(model), (0, budget), seed + 1000).draw(0, s.random_subnets)
    random_scores = test_eval(randoms)
    tags = s.tags(finetune_steps > 0)
    suffix = ("" if budget == BUDGET else f"@{budget}") + (f"[{','.join(tags)}]" if tags else "")
    row = {
        "method": f"glora_{sampling}_{steps}{suffix}",
        "seed": seed,
        "budget": budget,
        "ranks": list(s.ranks),
        "peak_gib": train_peak,
        "steps": steps,
        "lr": s.lr,
        "fitness": s.fitness,
        "train_window": window,
        "adapter_params": found.best_params,
        "test_accuracy": test_eval([found.best_subnet])[0],
        "random_feasible_test_mean": statistics.mean(random_scores),
        "validation_best": found.best_score,
        "train_s": trained.seconds,
        "loss_curve": [round(statistics.mean(trained.losses[i : i + 20]), 4) for i in range(0, steps, 20)],
        "search_s": found.engine_seconds + found.fitness_seconds,
        "search_budget": searched,
    }
    if searched != budget:
        in_window = BudgetSampler(glora.search_space(model), searched, seed + 1000).draw(0, s.random_subnets)
        row["random_in_search_window_test_mean"] = statistics.mean(test_eval(in_window))
    if finetune_steps:
        supernet = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

        def finetuned(subnet) -> float:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in supernet:
                        p.copy_(supernet[n])
            train_supernet(
                model, train, device, seed, steps=finetune_steps, lr=s.finetune_lr, sampling="fixed", subnet=subnet
            )
            return test_eval([subnet])[0]  # the evaluator folds the weights as they are at each call

        row.update(
            {
                "method": f"glora_{sampling}_{steps}+{finetune_steps}_finetuned{suffix}",
                "finetune_steps": finetune_steps,
                "finetune_lr": s.finetune_lr,
                "steps": steps + finetune_steps,
                "test_accuracy_before_finetune": row["test_accuracy"],
                "test_accuracy": finetuned(found.best_subnet),
            }
        )
        if s.random_finetune:
            row["random_finetuned_test_mean"] = statistics.mean(finetuned(r) for r in randoms[: s.random_finetune])
    return row


def summarise(rows: list[dict[str, Any]], baseline: str = "peft_lora_r8_qv") -> list[dict[str, Any]]:
    """Per method: means over its seeds, and a paired comparison with ``baseline`` on the seeds both ran (each
    seed draws its own splits, so the per-seed difference removes most of the splits' noise)."""
    reference = {r["seed"]: r["test_accuracy"] for r in rows if r["method"] == baseline}
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        acc = [r["test_accuracy"] for r in group]
        gains = [r["test_accuracy"] - reference[r["seed"]] for r in group if r["seed"] in reference]

        def mean_of(key: str, group: list[dict[str, Any]] = group) -> Optional[float]:
            values = [r[key] for r in group if r.get(key) is not None]
            return statistics.mean(values) if values else None

        summary.append(
            {
                "method": method,
                "seeds": len(group),
                "steps": group[0]["steps"],
                "adapter_params": mean_of("adapter_params"),
                "train_s": mean_of("train_s"),
                "peak_gib": mean_of("peak_gib"),
                "test_mean": statistics.mean(acc),
                "test_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "test_mean_seeds_0_1_2": statistics.mean(a for r, a in zip(group, acc) if r["seed"] in (0, 1, 2))
                if {0, 1, 2} <= {r["seed"] for r in group}
                else None,
                f"gain_over_{baseline}": statistics.mean(gains) if gains and method != baseline else None,
                f"seeds_above_{baseline}": f"{sum(g > 0 for g in gains)}/{len(gains)}"
                if gains and method != baseline
                else None,
                "before_finetune_mean": mean_of("test_accuracy_before_finetune"),
                "random_feasible_mean": mean_of("random_feasible_test_mean"),
                "random_in_window_mean": mean_of("random_in_search_window_test_mean"),
                "random_finetuned_mean": mean_of("random_finetuned_test_mean"),
            }
        )
    return summary


def run_in_processes(args: argparse.Namespace, device: torch.device) -> Iterator[dict[str, Any]]:
    """Every (seed, baseline) and (seed, variant) in a process of its own (this script with ``--only``), ``--jobs``
    at a time, one CPU thread each; the rows come back in job order and record how many processes shared the
    machine (their ``train_s`` and ``search_s`` are then not timings; the accuracies do not depend on it)."""
    work = [
        job
        for seed in args.seeds
        for job in [f"{seed}:baseline:{b}" for b in args.baselines] + [f"{seed}:variant:{v}" for v in args.variants]
    ]
    together = min(args.jobs, len(work))
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # the parts are not results to fetch
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")

    def one(index: int, job: str) -> list[dict[str, Any]]:
        name = f"{args.name}.part{index}"
        path = result_path(name, device)
        if os.path.exists(path):  # left by an interrupted run: with --append the part would take its rows in
            os.remove(path)
        command = [
            sys.executable,
            os.path.abspath(__file__),
            *sys.argv[1:],
            "--only",
            job,
            "--name",
            name,
            "--jobs",
            "1",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"job {job} failed:\n{done.stderr[-3000:]}")
        with open(path, encoding="utf-8") as fh:
            rows = json.load(fh)["figures"]["runs"]
        os.remove(path)
        print(f"done: {job}", flush=True)
        return [{**row, "concurrent_processes": together} for row in rows]

    with ThreadPoolExecutor(together) as pool:
        futures = [pool.submit(one, index, job) for index, job in enumerate(work)]
        failed = []
        for future in futures:  # in job order; a failed job does not cost the others' rows
            try:
                yield from future.result()
            except RuntimeError as err:
                failed.append(str(err))
    if failed:
        raise RuntimeError("\n\n".join(failed))


def parse_variant(text: str, parser: argparse.ArgumentParser) -> tuple[str, int, int, int]:
    """``"sandwich:640+320@331776"`` -> ("sandwich", 640, 320, 331776); the budget defaults to 73,728."""
    text, _, budget = text.partition("@")
    sampling, _, steps = text.partition(":")
    supernet, _, finetune = steps.partition("+")
    numbers = [supernet] + [t for t in (finetune, budget) if t]
    if sampling not in ("uniform", "budget", "sandwich") or not all(t.isdigit() for t in numbers):
        parser.error(
            f"variant {text!r}: expected sampling:steps[+finetune_steps][@budget], sampling uniform, budget or sandwich"
        )
    return sampling, int(supernet), int(finetune or 0), int(budget or BUDGET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ASSETS, "minilm-fp16"))
    parser.add_argument("--data", default=os.path.join(ASSETS, "vaderSentiment-3.3.2.tar.gz"))
    parser.add_argument("--steps", type=int, default=320, help="training steps of every baseline")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the PEFT baselines")
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=["peft_lora_r8_qv"],
        choices=list(BASELINES),
        help=f"baselines trained per seed (learning rates: {BASELINES}; --lr sets the PEFT ones)",
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        default=["uniform:640", "budget:960", "sandwich:960"],
        help="sampling:supernet_steps[+finetune_steps][@budget] (budget 73,728 unless given; 331,776 is LoRA r=8 on all linears)",
    )
    parser.add_argument("--glora-lr", type=float, default=1e-3)
    parser.add_argument(
        "--choices",
        nargs="*",
        default=["B=lora,none"],
        help="kinds offered per support tensor (GLoRAConfig.choices; the default leaves out B's vector and scalar forms, "
        "which make the supernet unstable; --choices alone gives the paper's full space)",
    )
    parser.add_argument(
        "--init", default="kaiming", choices=["kaiming", "xavier"], help="initialisation of the up factors"
    )
    parser.add_argument("--max-grad-norm", type=float, default=None, help="gradient clipping of the supernet training")
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        default=[4],
        help="LoRA ranks offered by the supernet (nested slices of one factor)",
    )
    parser.add_argument("--floor", type=float, default=0.75, help="budget-aware paths lie in [floor x budget, budget]")
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--random-finetune", type=int, default=3, help="random feasible subnets fine-tuned likewise")
    parser.add_argument("--fitness", default="neg_loss", choices=["accuracy", "neg_loss"])
    parser.add_argument(
        "--search-window", action="store_true", help="search within the training window, not all of [0, budget]"
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--random-subnets", type=int, default=20)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs=3, default=[1000, 500, 2000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default="supernet_quality", help="results/<name>_<device>.json")
    parser.add_argument(
        "--append", action="store_true", help="keep the rows already in that file (a run split over several calls)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="run each (seed, method) in a process of its own, this many at once (MiniLM's steps are bound by "
        "the host: on a 16-core H200 machine 15-18 fit)",
    )
    parser.add_argument("--only", help=argparse.SUPPRESS)  # SEED:baseline:NAME or SEED:variant:SPEC, a --jobs part
    args = parser.parse_args()
    if args.only:
        seed, kind, what = args.only.split(":", 2)
        args.seeds, args.baselines, args.variants = (
            [int(seed)],
            [what] if kind == "baseline" else [],
            [what] if kind == "variant" else [],
        )
    variants = [parse_variant(v, parser) for v in args.variants]
    settings = Settings(
        lr=args.glora_lr,
        fitness=args.fitness,
        generations=args.generations,
        random_subnets=args.random_subnets,
        finetune_lr=args.finetune_lr,
        random_finetune=args.random_finetune,
        floor=args.floor,
        search_window=args.search_window,
        ranks=tuple(args.ranks),
        init=args.init,
        max_grad_norm=args.max_grad_norm,
        choices={g: k.split(",") for g, _, k in (c.partition("=") for c in args.choices)} or None,
    )
    for sampling, steps, finetune, _ in variants:
        if steps + finetune > 3 * args.steps:
            parser.error(
                f"{sampling}:{steps}+{finetune}: GLoRA may train at most 3x LoRA's {args.steps} steps (supernet plus fine-tuning)"
            )
    device = torch.device(args.device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    config = {
        "model": "all-MiniLM-L6-v2 (mean pooling)",
        "sizes": args.sizes,
        "max_len": 64,
        "budget": BUDGET,
        "lora": f"r=8, alpha 16, query+value, lr {args.lr}",
        **{k: v for k, v in vars(args).items() if k not in ("model", "data", "device")},
    }
    rows = []
    if args.append and os.path.exists(result_path(args.name, device)):
        with open(result_path(args.name, device), encoding="utf-8") as fh:
            rows = json.load(fh)["figures"]["runs"]
        for per_call in (
            "variants",
            "seeds",
            "baselines",
            "random_finetune",
            "search_window",
            "ranks",
            "init",
            "max_grad_norm",
            "choices",
            "append",
            "jobs",
            "only",
        ):
            config.pop(per_call)
        config["note"] = (
            "rows from several calls (--append); each row records its own settings, the method name its non-default ones"
        )

    def record(row: dict[str, Any]) -> str:
        """Print the row and rewrite the results file with every row so far (a run cut short keeps them); a row
        of a method and seed already there (a repeated call with --append) replaces it."""
        rows[:] = [r for r in rows if (r["method"], r["seed"]) != (row["method"], row["seed"])] + [row]
        print(row, flush=True)
        return write_result(args.name, device, config, {"runs": rows, "summary": summarise(rows)})

    if args.jobs > 1:
        for row in run_in_processes(args, device):
            path = record(row)
    for seed in args.seeds if args.jobs == 1 else []:
        data = splits(tokenizer, args.data, tuple(args.sizes), seed)
        for method in args.baselines:
            lr = args.lr if method.startswith("peft_") else BASELINES[method]
            path = record(baseline_run(method, args.model, data, seed, args.steps, lr, device))
        for sampling, steps, finetune, budget in variants:
            path = record(glora_run(args.model, data, seed, sampling, steps, device, settings, finetune, budget))
    print_table(
        summarise(rows),
        [
            "method",
            "seeds",
            "steps",
            "adapter_params",
            "train_s",
            "test_mean",
            "test_std",
            "gain_over_peft_lora_r8_qv",
            "seeds_above_peft_lora_r8_qv",
            "before_finetune_mean",
            "random_feasible_mean",
            "random_finetuned_mean",
        ],
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
