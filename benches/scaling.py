"""Benchmark: scaling over GPUs with torchrun: supernet training throughput and the spread search.

For each process count N of ``--gpus`` this script runs itself under ``torchrun --standalone --nproc-per-node N``
(NCCL on GPUs, gloo on the CPU). Each process measures, for the models of ``benches/train_step.py`` (random init):
- supernet training: ``SupernetTrainer`` (DistributedDataParallel, ``batch`` examples per process: ViT-B/16 64
  images, the LLaMA-style 0.95 B decoder 4 x 1,024 tokens; bf16 autocast), samples per second over the timed steps
  after warm-up;
- the search (ViT-B/16): the default search (population 50, 20 generations) under LoRA r=4's budget on 200
  validation images, its evaluations spread over the processes by ``SubnetEvaluator``; wall time.
Scaling efficiency: throughput on N / (N x throughput on 1), and (search time on 1) / (N x search time on N).
``--task`` also times ``torchrun --nproc-per-node N -m glora run`` on a config file and reports its test accuracy.
Results: ``benches/results/scaling_<device>.json`` (docs/benchmarks.md).

    python benches/scaling.py --gpus 1 2
    python benches/scaling.py --gpus 1 2 --task examples/movie/config.toml --task-args --model .assets/minilm-fp16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

from common import print_table, sync, write_result

VIT_SEARCH_IMAGES = 200


def _worker_device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _training_data(name: str, batch: int, world: int, steps: int, seq: int) -> Any:
    """Random examples for ``steps`` global batches (each process takes its share)."""
    g = torch.Generator().manual_seed(0)
    n = batch * world * steps
    if name == "vit":
        return torch.randn(n, 3, 224, 224, generator=g), torch.randint(0, 1000, (n,), generator=g)
    return {"input_ids": torch.randint(0, 32000, (n, seq), generator=g)}


def _lm_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


def training_throughput(name: str, args: argparse.Namespace, device: torch.device, world: int) -> dict[str, Any]:
    import glora
    from glora.training.distributed import barrier
    from train_step import LLAMA_TARGETS, VIT_TARGETS, workload

    gpu = device.type == "cuda"
    make = workload(name, device)[0]
    batch = (64 if gpu else 2) if name == "vit" else (4 if gpu else 1)
    seq = 1024 if gpu else 64
    warm, timed = args.warmup, args.steps
    model = make()
    targets, head = (VIT_TARGETS, ["head"]) if name == "vit" else (LLAMA_TARGETS, None)
    glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=targets, modules_to_save=head))
    config = glora.TrainConfig(
        steps=warm + timed, batch_size=batch, lr=1e-4, precision="bf16" if gpu else "fp32", progress=False
    )
    data = _training_data(name, batch, world, warm + timed, seq)
    trainer = glora.SupernetTrainer(model, data, config, loss_fn=None if name == "vit" else _lm_loss, device=device)
    trainer.train(steps=warm)
    sync(device)
    barrier(world)
    started = time.perf_counter()
    trainer.train(steps=warm + timed)
    sync(device)
    barrier(world)
    seconds = time.perf_counter() - started
    return {"batch_per_process": batch, "steps": timed, "samples_per_s": timed * batch * world / seconds}


def search_time(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import glora
    from glora.tuner.budgets import parse_budget, resolve_budget
    from train_step import VIT_TARGETS, workload

    model = workload("vit", device)[0]()
    glora.wrap(model, glora.GLoRAConfig(rank=4, target_modules=VIT_TARGETS, modules_to_save=["head"]))
    g = torch.Generator().manual_seed(1)
    images = VIT_SEARCH_IMAGES if device.type == "cuda" else 8
    data = torch.randn(images, 3, 224, 224, generator=g), torch.randint(0, 1000, (images,), generator=g)
    evaluator = glora.SubnetEvaluator(model, data, metric="neg_loss", device=device)
    budget = resolve_budget(parse_budget("lora:4"), model, VIT_TARGETS)
    population, generations = (50, 20) if device.type == "cuda" else (6, 2)
    started = time.perf_counter()
    found = glora.search(
        model, evaluator, budget, seed=0, population=population, generations=generations, progress=False
    )
    sync(device)
    return {
        "images": images,
        "population": population,
        "generations": generations,
        "evaluations": found.evaluations,
        "seconds": time.perf_counter() - started,
        "best_score": found.best_score,
    }


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    device = _worker_device()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out: dict[str, Any] = {"processes": world, "training": {}}
    for name in args.models:
        out["training"][name] = training_throughput(name, args, device, world)
    if not args.no_search:
        out["search"] = search_time(args, device)
    if rank == 0:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh)
    dist.destroy_process_group()


def _torchrun(n: int, command: list[str]) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
    done = subprocess.run(launcher + command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {n} processes failed:\n{done.stderr[-4000:]}")
    return done


def task_run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """``glora run`` on ``--task`` under torchrun with ``n`` processes: wall time and the test report."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        _torchrun(n, ["-m", "glora", "run", "--config", args.task, "--out", out, *args.task_args])
        wall = time.perf_counter() - started
        with open(os.path.join(out, "result.json"), encoding="utf-8") as fh:
            result = json.load(fh)
    return {"wall_s": wall, "test": result["test"], "train_seconds": result["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="process counts (one GPU each)")
    parser.add_argument("--models", nargs="*", default=["vit", "llama"], choices=["vit", "llama"])
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps (compile, allocator)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--no-search", action="store_true", help="leave the search out")
    parser.add_argument("--task", help="a config file for `glora run` under torchrun")
    parser.add_argument("--task-args", nargs=argparse.REMAINDER, default=[], help="more `glora run` flags")
    parser.add_argument("--name", default="scaling", help="results/<name>_<device>.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and max(args.gpus) > torch.cuda.device_count():
        raise SystemExit(
            f"--gpus asks for {max(args.gpus)} processes; this machine has {torch.cuda.device_count()} GPUs"
        )
    runs: dict[int, dict[str, Any]] = {}
    for n in args.gpus:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "worker.json")
            forwarded = ["--models", *args.models, "--warmup", str(args.warmup), "--steps", str(args.steps)]
            forwarded += ["--no-search"] if args.no_search else []
            _torchrun(n, [os.path.abspath(__file__), "--worker", "--json", path, *forwarded])
            with open(path, encoding="utf-8") as fh:
                runs[n] = json.load(fh)
        if args.task:
            runs[n]["task"] = task_run(n, args)
    one = runs.get(1)
    rows = []
    for n, run in runs.items():
        row: dict[str, Any] = {"processes": n}
        for name, figures in run["training"].items():
            row[f"{name}_samples_per_s"] = figures["samples_per_s"]
            if one:
                row[f"{name}_efficiency"] = figures["samples_per_s"] / (n * one["training"][name]["samples_per_s"])
        if "search" in run:
            row["search_s"] = run["search"]["seconds"]
            if one:
                row["search_efficiency"] = one["search"]["seconds"] / (n * run["search"]["seconds"])
        if "task" in run:
            row["task_wall_s"] = run["task"]["wall_s"]
            row["task_test"] = run["task"]["test"]
        rows.append(row)
    print_table(rows, list(dict.fromkeys(k for r in rows for k in r)))
    config = {"gpus": args.gpus, "models": args.models, "warmup": args.warmup, "steps": args.steps, "task": args.task}
    print(
        "wrote", write_result(args.name, device, config, {"rows": rows, "runs": {str(n): r for n, r in runs.items()}})
    )


if __name__ == "__main__":
    main()
