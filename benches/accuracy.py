"""glora's whole pipeline against PEFT methods and full fine-tuning at the same parameter count, on a task's config.

glora: ``glora run`` in process (supernet, search under the budget on the validation split, fine-tuning, merge) with the config's
settings and each seed; ``glora:KEY=VALUE,...`` is a recipe variant, the same run with those settings changed (it
takes plain glora's learning rate). Baselines on the same data splits, steps, batch size, AdamW (weight decay 1e-4),
10 % warm-up and cosine decay and bf16 autocast, with the same head trained alongside: ``peft_lora`` (rank ``R`` of the
config's ``lora:R[:MODULES]`` budget on its modules, so exactly the budget's parameter count, alpha 2R),
``peft_dora`` (the same with ``use_dora=True``: a magnitude vector more per layer), ``peft_adalora`` (AdaLoRA from
rank 1.5R pruned to an average of R between 10 % and 80 % of the steps, then held; with the orthogonality
regulariser added to the loss: PEFT adds it only to a loss the model computes), ``peft_lora_all`` / ``peft_dora_all`` (rank R on
every module glora may adapt but grouped convolutions, which LoRA cannot take at a rank not divisible by their
groups, at their own, larger sizes) and ``full`` (every weight trained). Each method's learning rate is chosen on
the validation accuracy of the weights its run ends with (:func:`final_validation_accuracy`) from its grid
(``--lrs``; ``--full-lrs`` for full fine-tuning): its mean over the first ``--choose-seeds`` seeds (default 1, the
first seed alone), the grid's first learning rate winning a tie; a learning rate with a failed run among them (a
diverged loss stops a run) leaves the choice, and the results file lists the failures. The learning rate is then
kept for every seed. Every row reports validation and test accuracy and wall time; the summary adds each method's
paired test difference to the first method, seed by seed. ``--rows FILE`` keeps every finished run as a JSON line,
and a rerun with the same file reuses them; ``--reuse RESULTS...`` takes the runs (the chosen learning rates' and
the grid's, ``grid_runs``) of earlier results files of the same task. Results: ``benches/results/<name>_gpu.json``
(docs/benchmarks.md).

    python examples/image-mnist/prepare.py
    python benches/accuracy.py --config examples/image-mnist/config.toml --name accuracy_image --choose-seeds 3

The commands that made the committed results files are in docs/benchmarks.md ("Accuracy against PEFT methods at the
same budget").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from common import peak_gib, print_table, reset_peak, write_result
from glora.layers.layer import has_own_forward
from glora.tasks.base import EncodedSplits, Task
from glora.tasks.registry import task_class
from glora.tasks.runner import run
from glora.tasks.settings import RunSettings, read_config_file, resolve
from glora.training.losses import classification_loss
from glora.training.trainer import warmup_cosine
from glora.tuner.budgets import parse_budget


def settings_for(config: str, seed: int, out: str, lr: float, recipe: dict[str, Any] | None = None) -> RunSettings:
    given = read_config_file(config) | {"seed": seed, "out": out, "lr": lr} | OVERRIDES | (recipe or {})
    defaults = dict(task_class(given["task"]).defaults)
    settings, _ = resolve(given, defaults, has_gpu=torch.cuda.is_available(), announce=False)
    return settings


BASELINES = ["peft_lora", "peft_dora", "peft_adalora", "peft_lora_all", "peft_dora_all", "full"]
OVERRIDES: dict[str, Any] = {}
"""Settings given on this script's command line over the config file's (``--model``, ``--train``, ``--sizes``)."""


def recipe_of(method: str) -> dict[str, Any]:
    """The settings a ``glora:KEY=VALUE,...`` variant changes (values read as JSON, else as strings; a JSON list's
    commas stay in its value)."""
    if method == "glora":
        return {}
    if not method.startswith("glora:"):
        raise ValueError(f"not a glora method: {method}")
    recipe: dict[str, Any] = {}
    for pair in re.split(r",(?=\w+=)", method[len("glora:") :]):  # a JSON list's commas stay in its value
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{method}: expected KEY=VALUE pairs, got {pair!r}")
        try:
            recipe[key] = json.loads(value)
        except json.JSONDecodeError:
            recipe[key] = value
    return recipe


def final_validation_accuracy(row: dict[str, Any]) -> float:
    """The validation accuracy of the weights a run ends with, which chooses its learning rate: for glora the
    fine-tuned weights' where ``glora run`` kept them, else the searched subnet's through the supernet's weights
    (``validation_accuracy``, also every baseline's, and a row's written before the fine-tuned weights' was
    recorded)."""
    if row.get("finetune_kept") and row.get("validation_accuracy_finetuned") is not None:
        return row["validation_accuracy_finetuned"]
    return row["validation_accuracy"]


def chosen_on(grid: list[dict[str, Any]], method: str, lrs: list[float], seeds: list[int]) -> dict[str, float]:
    """``method``'s mean :func:`final_validation_accuracy` over ``seeds`` for each learning rate of ``lrs`` whose
    runs all finished, keyed by the learning rate's ``str`` (in grid order, so that the first of a tie wins)."""
    rows = {(r.get("job_lr", r["lr"]), r["seed"]): r for r in grid if r["method"] == method}
    return {
        str(lr): statistics.mean(final_validation_accuracy(rows[lr, seed]) for seed in seeds)
        for lr in lrs
        if all((lr, seed) in rows for seed in seeds)
    }


def weights_id(model: str | None) -> str | None:
    """A fingerprint of a local model's weight files (the first 16 hex digits of their SHA-256, by name), so that
    runs from other weights (say, a copy rounded to fp16) are not reused; None for a model named, not a folder.
    A folder without such files at its top is fingerprinted by all its files there."""
    if not model or not os.path.exists(model):
        return None
    if not os.path.isdir(model):
        model, files = os.path.split(model)[0] or ".", [os.path.basename(model)]
    else:
        files = sorted(f for f in os.listdir(model) if os.path.isfile(os.path.join(model, f)))
        files = [f for f in files if f.endswith((".safetensors", ".bin", ".pt", ".pth"))] or files  # else every file
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode())
        with open(os.path.join(model, name), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def glora_row(config: str, method: str, seed: int, lr: float, device: torch.device) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        settings = settings_for(config, seed, out, lr, recipe_of(method))
        reset_peak(device)
        start = time.perf_counter()
        result = run(settings)
        wall = time.perf_counter() - start
    finetune = result["finetune"] or {}
    return {
        "method": method,
        "seed": seed,
        "lr": settings.lr,
        "adapter_params": result["adapter_params"],
        "budget_params": result["budget"]["params"],
        "validation_accuracy": result["validation"]["accuracy"],
        "test_accuracy": result["test"]["accuracy"],
        "test_accuracy_merged": result["test_merged"]["accuracy"],
        "test_accuracy_supernet": result["test_supernet"]["accuracy"],
        "random_subnets_test_accuracy": result["random_subnets"]["mean"]["accuracy"],
        "finetune_kept": finetune.get("kept"),
        "test_accuracy_finetuned": (finetune.get("test") or {}).get("accuracy"),
        "validation_accuracy_finetuned": (finetune.get("validation") or {}).get("accuracy"),
        "validation_fitness_before_after": [
            finetune.get("validation_fitness_before"),
            finetune.get("validation_fitness_after"),
        ],
        "train_s": result["train_seconds"] + result["finetune_seconds"],
        "search_s": result["search"]["fitness_seconds"] + result["search"]["engine_seconds"],
        "wall_s": wall,
        "peak_gib": peak_gib(device),
    }


def baseline_row(config: str, seed: int, lr: float, device: torch.device, method: str) -> dict[str, Any]:
    """A baseline (module docstring) on the task's targets, trained by :func:`train`."""
    with tempfile.TemporaryDirectory() as out:
        settings = settings_for(config, seed, out, lr)
    task: Task = task_class(settings.task)(settings)
    reset_peak(device)
    start = time.perf_counter()
    raw = task.read_data()
    torch.manual_seed(seed)
    model = task.load_model(raw)
    budget = settings.budget if settings.budget is not None else task.default_budget(model)
    spec = parse_budget(budget)
    if spec.kind != "lora" or spec.rank is None:
        raise SystemExit(f"the run's budget must be lora:R to compare at LoRA's size, not {budget}")
    every = settings.targets or task.default_targets(model)
    if method.endswith("_all"):  # by full name, without grouped convolutions (see the module docstring)
        targets = [n for n, m in model.named_modules() if _matches(n, every) and getattr(m, "groups", 1) == 1]
    else:
        targets = spec.modules or every
    assert settings.steps is not None
    head = task.modules_to_save(model)
    model = baseline_model(method.removesuffix("_all"), model, spec.rank, targets, head, settings.steps)
    model.to(device)
    data = task.encode(raw)
    train_s, trace = train(model, data, settings, lr, device, adalora=method == "peft_adalora")
    adapter = sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and not any(f".{h}." in f".{n}" for h in head)
    )
    validation = task.evaluate(model, data.validation, device)
    assert data.test is not None, "the config makes a test split"
    test = task.evaluate(model, data.test, device)
    return {
        "method": method,
        "seed": seed,
        "lr": lr,
        "adapter_params": adapter,
        "validation_accuracy": validation["accuracy"],
        "test_accuracy": test["accuracy"],
        "train_s": train_s,
        "loss_trace": trace,
        "fp32": FP32,
        "wall_s": time.perf_counter() - start,
        "peak_gib": peak_gib(device),
    }


def baseline_model(
    method: str, model: torch.nn.Module, rank: int, targets: list[str], head: list[str], steps: int
) -> torch.nn.Module:
    """``model`` prepared for ``method``: PEFT-wrapped, or every parameter trainable for ``full``."""
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    if method == "peft_adalora":
        # AdaLoRA's convolution ignores a subclass's own forward (timm's Conv2dSame pads first): leave those out
        targets = [n for n, m in model.named_modules() if _matches(n, targets) and not has_own_forward(m)]
        config: Any = AdaLoraConfig(
            init_r=(3 * rank + 1) // 2, target_r=rank, lora_alpha=2 * rank, tinit=steps // 10,
            tfinal=steps // 5, total_step=steps, target_modules=targets, modules_to_save=head,
        )  # fmt: skip
    else:
        config = LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=targets, modules_to_save=head, use_dora=method == "peft_dora"
        )
    return get_peft_model(model, config)


def _matches(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def train(
    model: torch.nn.Module,
    data: EncodedSplits,
    settings: RunSettings,
    lr: float,
    device: torch.device,
    adalora: bool = False,
) -> tuple[float, list[float]]:
    """The supernet trainer's schedule for a fixed model: seeded shuffled epochs, AdamW, warm-up and cosine decay
    (with ``adalora``, AdaLoRA's rank allocation after every step); bf16 autocast on a GPU unless ``--fp32``. The
    training time and the loss at every tenth of the steps; a non-finite loss stops the run with its step."""
    assert settings.steps is not None and settings.batch_size is not None
    steps, batch = settings.steps, settings.batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps // 10, steps))
    n = len(data.train["labels"])
    g = torch.Generator().manual_seed(settings.seed)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(steps * batch // n + 1)])
    model.train()
    trace: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        idx = order[step * batch : (step + 1) * batch]
        b = {k: v[idx].to(device, non_blocking=True) for k, v in data.train.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and not FP32):
            loss = classification_loss(model, b)
            if adalora:
                loss = loss + orthogonality_penalty(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if adalora:
            model.base_model.update_and_allocate(step)
        if (step + 1) % max(1, steps // 10) == 0:
            trace.append(float(loss.detach()))
            if not math.isfinite(trace[-1]):
                raise RuntimeError(f"the training loss is {trace[-1]} at step {step + 1} (losses so far: {trace})")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.eval()
    return time.perf_counter() - start, trace


def orthogonality_penalty(model: torch.nn.Module) -> torch.Tensor:
    """AdaLoRA's orthogonality regulariser (``orth_reg_weight`` x the mean Frobenius distance of ``P P^T`` and
    ``Q^T Q`` from the identity over its factors), which PEFT's AdaLoRA adds only to a loss its model returns."""
    weight = model.peft_config["default"].orth_reg_weight
    terms = []
    for name, p in model.named_parameters():
        if p.requires_grad and p.numel() and ("lora_A" in name or "lora_B" in name):
            cov = p @ p.T if "lora_A" in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)))
    return weight * torch.stack(terms).mean()


FP32 = False
"""``--fp32``: baselines train without bf16 autocast."""


def run_one(config: str, method: str, lr: float, seed: int, device: torch.device) -> dict[str, Any]:
    if method.startswith("glora"):
        return glora_row(config, method, seed, lr, device)
    return baseline_row(config, seed, lr, device, method)


Job = tuple[str, float, int]


class Runner:
    """Runs (method, lr, seed) jobs in this process, or ``--jobs`` at once in processes of this script; with
    ``--rows``, every finished job is appended to that file and a job found there is not run again, nor one found in
    the results files of ``--reuse``."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.lock = threading.Lock()
        self.done: dict[Job, dict[str, Any]] = {}
        self.task = {"config": args.config, "model": args.model, "train": args.train, "sizes": args.sizes}
        self.task |= {
            "fp32": args.fp32,
            "weights": weights_id((read_config_file(args.config) | OVERRIDES).get("model")),
        }
        self.failed: list[dict[str, Any]] = []
        for path in args.reuse:
            with open(path, encoding="utf-8") as fh:
                figures = json.load(fh)["figures"]
            runs = figures["runs"] + figures.get("grid_runs", [])
            other = [row for row in runs if row.get("task") != self.task]
            if other:
                print(f"{path}: {len(other)} of {len(runs)} runs are of another task (run again)", file=sys.stderr)
            self._take([row for row in runs if row.get("task") == self.task])
        if args.rows and os.path.exists(args.rows):
            with open(args.rows, encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh]
            if any(row.get("task") != self.task for row in rows):
                raise SystemExit(f"{args.rows} holds runs of another task than {self.task}: name another file")
            self._take(rows)

    def _take(self, rows: list[dict[str, Any]]) -> None:
        """Count ``rows`` (finished runs of this task) as done."""
        for row in rows:
            self.done[(row["method"], row.get("job_lr", row["lr"]), row["seed"])] = row

    def all(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The rows of ``jobs`` that finished; a failed job is reported and left out."""
        if self.args.jobs <= 1:
            rows = [self._kept(job, lambda j: run_one(self.args.config, *j, self.device)) for job in jobs]
        else:
            with ThreadPoolExecutor(self.args.jobs) as pool:
                rows = list(pool.map(lambda job: self._kept(job, self._in_process), jobs))
        return [row for row in rows if row is not None]

    def _kept(self, job: Job, runner: Any) -> dict[str, Any] | None:
        if job in self.done:
            return self.done[job]
        try:
            row = runner(job)
        except Exception as err:  # one method failing leaves the others' rows standing
            print(f"FAILED {job}: {err}", file=sys.stderr, flush=True)
            reason = next((line for line in reversed(str(err).splitlines()) if line.strip()), type(err).__name__)
            with self.lock:
                self.failed.append({"method": job[0], "lr": job[1], "seed": job[2], "error": reason.strip()})
            return None
        row = {**row, "job_lr": job[1], "task": self.task}  # keyed by the job's lr, whatever lr a recipe set
        with self.lock:
            self.done[job] = row
            if self.args.rows:
                with open(self.args.rows, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
        print(f"{job[0]} lr {job[1]:g} seed {job[2]}: test {row['test_accuracy']:.4f}", flush=True)
        return row

    def _in_process(self, job: Job) -> dict[str, Any]:
        method, lr, seed = job
        forwarded = ["--config", self.args.config]
        forwarded += [
            arg
            for key in ("model", "train")
            if getattr(self.args, key)
            for arg in (f"--{key}", getattr(self.args, key))
        ]
        forwarded += ["--sizes", *map(str, self.args.sizes)] if self.args.sizes else []
        forwarded += ["--fp32"] if self.args.fp32 else []
        command = [sys.executable, __file__, *forwarded, "--only", method, repr(lr), str(seed)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{method} lr {lr} seed {seed} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method's mean and spread over seeds, and its paired test difference to the first method's rows."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_seed = {m: {r["seed"]: r for r in rows if r["method"] == m} for m in methods}
    first = by_seed[methods[0]]
    out = []
    for method in methods:
        runs = list(by_seed[method].values())
        acc = [r["test_accuracy"] for r in runs]
        diffs = [first[s]["test_accuracy"] - r["test_accuracy"] for s, r in by_seed[method].items() if s in first]
        out.append(
            {
                "method": method,
                "seeds": len(acc),
                "lr": runs[0]["lr"],
                "validation_accuracy_mean": statistics.mean(final_validation_accuracy(r) for r in runs),
                "test_accuracy_mean": statistics.mean(acc),
                "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                f"{methods[0]}_minus_mean": statistics.mean(diffs),
                f"{methods[0]}_minus_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                "adapter_params_mean": statistics.mean(r["adapter_params"] for r in runs),
                "wall_s_mean": statistics.mean(r["wall_s"] for r in runs),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="examples/image-mnist/config.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--methods", nargs="+", default=["glora", "peft_lora", "peft_dora"], help=f"glora, glora:K=V,..., {BASELINES}"
    )
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3, 5e-3], help="each method's grid")
    parser.add_argument("--full-lrs", type=float, nargs="+", default=[2e-5, 5e-5, 1e-4], help="full fine-tuning's")
    parser.add_argument("--model", help="the model, over the config's (a local folder on an offline machine)")
    parser.add_argument("--train", help="the training data, over the config's (for another task of the same kind)")
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("TRAIN", "VALIDATION", "TEST"), help="split sizes")
    parser.add_argument("--name", default="accuracy", help="results/<name>_<device>.json")
    parser.add_argument("--fp32", action="store_true", help="baselines train without bf16 autocast")
    parser.add_argument("--rows", help="a JSON-lines file of finished runs: appended to, and reused by a rerun")
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        metavar="RESULTS",
        help="results files of this task whose runs (chosen and grid) are taken instead of run again: only where "
        "the methods' code has not changed since",
    )
    parser.add_argument(
        "--choose-seeds",
        type=int,
        default=1,
        help="the learning rate is chosen on the mean validation accuracy of this many first seeds",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, each in a process of its own (times then include contention)"
    )
    parser.add_argument("--only", nargs=3, metavar=("METHOD", "LR", "SEED"), help=argparse.SUPPRESS)  # one job
    args = parser.parse_args()
    for method in args.methods:
        if method not in BASELINES:
            recipe_of(method)  # raises on a malformed variant
    variants = [m for m in args.methods if m.startswith("glora:")]
    if variants and "glora" not in args.methods:
        parser.error("recipe variants take plain glora's learning rate: list glora among --methods")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    OVERRIDES.update({key: getattr(args, key) for key in ("model", "train") if getattr(args, key)})
    if args.sizes:
        OVERRIDES.update(zip(("train_size", "validation_size", "test_size"), args.sizes))
    global FP32
    FP32 = args.fp32
    if args.only:
        method, lr, seed = args.only
        print(json.dumps(run_one(args.config, method, float(lr), int(seed), device)))
        return
    run = Runner(args, device)
    gridded = [m for m in args.methods if m not in variants]
    if not 1 <= args.choose_seeds <= len(args.seeds):
        parser.error(f"--choose-seeds must be between 1 and the number of seeds ({len(args.seeds)})")
    choosing = args.seeds[: args.choose_seeds]
    lrs = {m: args.full_lrs if m == "full" else args.lrs for m in gridded}
    grid = run.all([(m, lr, seed) for m in gridded for lr in lrs[m] for seed in choosing])
    grids = {m: chosen_on(grid, m, lrs[m], choosing) for m in gridded}
    best = {m: float(max(grids[m], key=grids[m].__getitem__)) for m in gridded if grids[m]}
    if variants and "glora" in best:
        best |= {m: best["glora"] for m in variants}
    methods = [m for m in args.methods if m in best]
    for m in args.methods:
        if m not in best:
            print(f"{m}: no learning rate of its grid finished on seeds {choosing}; left out", file=sys.stderr)
    if not methods:
        raise SystemExit("no method has a learning rate whose runs all finished: see the FAILED lines above")
    run.all([(m, best[m], seed) for m in methods for seed in args.seeds])
    rows = [run.done[(m, best[m], seed)] for m in methods for seed in args.seeds if (m, best[m], seed) in run.done]
    if not rows:
        raise SystemExit("every run at the chosen learning rates failed: see the FAILED lines above")
    columns = ["method", "seed", "lr", "adapter_params", "validation_accuracy", "test_accuracy", "train_s", "wall_s"]
    print_table(rows, columns)
    table = summary(rows)
    print_table(table, list(table[0]))
    config = {"config": args.config, "settings": read_config_file(args.config) | OVERRIDES, "seeds": args.seeds}
    config["lr_chosen_on_seeds"] = choosing
    config["failed"] = run.failed  # every failed run; one on the choosing seeds takes its learning rate out
    config["validation_accuracy_by_lr"] = grids
    unchosen = [r for r in grid if r.get("job_lr", r["lr"]) != best.get(r["method"])]
    path = write_result(args.name, device, config, {"summary": table, "runs": rows, "grid_runs": unchosen})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
