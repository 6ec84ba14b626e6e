"""The whole GLoRA pipeline of ``glora run``, for any task (``glora.tasks.base.Task``).

read and check the data -> load the model -> resolve the budget -> wrap -> train the supernet -> search each
layer's form under the budget on the validation split -> fine-tune the found subnet alone (kept unless its validation
accuracy, or perplexity, gets worse; ``finetune_steps`` 0 skips it) -> merge it
into plain layers -> report on the test split -> save everything (``glora.tasks.outputs.FILES``).

Under ``torchrun`` every process runs the same pipeline: training is DistributedDataParallel, the search's
evaluations are spread over the processes, and process 0 alone writes the files.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from typing import Any, Optional

import torch
from torch import nn

from glora.engine import SearchResult
from glora.engine.space import SearchSpace
from glora.errors import ConfigError
from glora.files.atomic import write_json
from glora.tasks.base import EncodedSplits, RawSplits, Task
from glora.tasks.hf_models import first_line
from glora.tasks.outputs import FILES, FINETUNE_CHECKPOINT, RUN_INFO, SETTINGS_FILE, SUPERNET_CHECKPOINT
from glora.tasks.registry import make_task
from glora.tasks.settings import RunSettings
from glora.training.batches import evaluation_batch_size, evaluation_batch_tokens
from glora.training.config import TrainConfig, TrainResult
from glora.training.distributed import barrier, decided_by_rank_zero, process_group
from glora.training.evaluator import SubnetEvaluator
from glora.training.trainer import SupernetTrainer
from glora.tuner.adapter import save_adapter
from glora.tuner.budgets import describe, parse_budget, resolve_budget
from glora.tuner.merging import BiasAddedWarning, merge
from glora.tuner.search import search
from glora.tuner.space import search_space
from glora.tuner.subnets import count_params, set_subnet
from glora.tuner.summary import trainable_parameters_summary
from glora.tuner.wrapping import wrap

__all__ = ["run"]

TIMINGS = ("train_seconds", "finetune_seconds", "search.fitness_seconds", "search.engine_seconds")
"""The result's timings: totals over the sessions of a run (a resumed run adds its own)."""
RANDOM_SUBNETS = 10
"""Random feasible subnets under the budget scored beside the searched one (through the supernet's weights, on the
test split or else the validation split): the margin the search earns, in ``result.json``."""


def run(settings: RunSettings) -> dict[str, Any]:
    """Run the pipeline with resolved settings (``glora.tasks.settings.resolve``); returns ``result.json``'s
    contents. The data, the model, the targets and the budget are checked before training starts."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rank, world = _start_processes()
    device = _device(settings.device, world)
    task = make_task(settings)
    settings = task.settings
    fitness = settings.fitness or task.fitness[0]
    if fitness not in task.fitness:
        raise ConfigError(
            f"fitness must be one of {', '.join(task.fitness)} for {settings.task}, got {fitness!r}",
            details={"setting": "fitness"},
        )
    if settings.budget is not None:
        parse_budget(settings.budget)  # its form, before the data is read
    torch.manual_seed(settings.seed)
    raw = task.read_data()
    model = task.load_model(raw)
    config = task.adapter_config(model)
    targets = config.target_modules
    assert targets is not None, "GLoRAConfig requires target_modules"
    budget_text = str(settings.budget) if settings.budget is not None else task.default_budget(model)
    spec = parse_budget(budget_text)
    budget = resolve_budget(spec, model, targets)
    wrap(model.to(device), config)
    space = search_space(model)
    space.check_budget(budget)
    window = (math.floor(settings.budget_floor * budget), budget)
    if settings.sampling != "uniform":
        space.check_budget(window)
    # after the inputs' checks (a wrong path is named first), before anything is written
    _check_output_folder(settings)
    data = task.encode(raw)
    recorded = _recorded(settings.out) if settings.resume else {}
    if rank == 0:
        _announce(settings, raw, data, device, world, budget, describe(spec), model)
        os.makedirs(settings.out, exist_ok=True)
        write_json(os.path.join(settings.out, SETTINGS_FILE), settings.as_dict(), indent=1)

    started = time.perf_counter()
    trained = _train(
        task,
        model,
        data,
        device,
        SUPERNET_CHECKPOINT,
        settings.steps,
        settings.sampling,
        budget=None if settings.sampling == "uniform" else window,
        # the sandwich's distillation is the built-in classification loss's; a task with its own loss trains without it
        distill=settings.sampling == "sandwich" and task.loss_fn() is None,
    )
    train_s = time.perf_counter() - started

    evaluator = SubnetEvaluator(
        model,
        data.validation,
        metric=task.fitness_metric(fitness),
        device=device,
        batch_size=evaluation_batch_size(device),
        batch_tokens=evaluation_batch_tokens(device),
        compile=settings.compile and task.compiled_search,
    )
    found = search(
        model,
        evaluator,
        budget,
        seed=settings.seed,
        population=settings.population,
        generations=settings.generations,
        log=os.path.join(settings.out, "search.jsonl") if rank == 0 else None,
        resume=settings.resume,
        progress=rank == 0,
    )
    best = found.best_subnet
    set_subnet(model, best)
    validation = task.evaluate(model, data.validation, device)
    test_supernet = task.evaluate(model, data.test, device) if data.test is not None else None
    random_subnets = _random_subnets(task, model, space, data, device, budget, settings.seed)
    started = time.perf_counter()
    finetune = _finetune(task, model, data, device, evaluator, found, validation) if settings.finetune_steps else None
    finetune_s = time.perf_counter() - started
    set_subnet(model, best)
    # the weights are the fine-tuned ones if kept, else the supernet's (restored exactly): their test report is known
    test = finetune["test"] if finetune is not None and finetune["kept"] else test_supernet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasAddedWarning)
        merged = merge(model, best)
    test_merged = task.evaluate(merged, data.test, device) if data.test is not None else None
    files = [*FILES, *([FINETUNE_CHECKPOINT] if settings.finetune_steps else [])]
    result: dict[str, Any] = {
        "task": settings.task,
        "settings": settings.as_dict(),
        "device": str(device),
        "processes": world,
        "data": raw.record,
        "labels": raw.labels,
        "targets": targets,
        "budget": {"spec": budget_text, "means": describe(spec), "params": budget},
        "supernet_steps": trained.steps,
        "train_seconds": train_s + recorded.get("train_seconds", 0.0),
        "finetune_seconds": finetune_s + recorded.get("finetune_seconds", 0.0),
        "final_train_loss": trained.losses[-1] if trained.losses else recorded.get("final_train_loss"),
        "search": {
            "evaluations": found.evaluations,
            "fitness": fitness,
            "best_fitness": found.best_score,
            "fitness_seconds": found.fitness_seconds + recorded.get("search.fitness_seconds", 0.0),
            "engine_seconds": found.engine_seconds + recorded.get("search.engine_seconds", 0.0),
        },
        "adapter_params": count_params(model, best),
        "validation": validation,  # the searched subnet through the supernet's weights (also with fine-tuning)
        "test_supernet": test_supernet,
        "random_subnets": random_subnets,
        "finetune": finetune,
        "test": test,
        "test_merged": test_merged,
        "sessions": int(recorded.get("sessions", 0)) + 1,
    }
    if rank == 0:
        result["files"] = files + _write_outputs(task, model, merged, best, raw, settings, result)
        write_json(os.path.join(settings.out, "result.json"), result, indent=1)
        _report(result, settings)
    barrier(world)
    return result


def _start_processes() -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment (gloo on the CPU, nccl on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return process_group()


def _device(name: Optional[str], world: int) -> torch.device:
    if world > 1 and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def _check_output_folder(settings: RunSettings) -> None:
    """An earlier run in ``out`` needs ``resume``, and a resumed run the settings it was started with."""
    earlier = [
        f
        for f in (SUPERNET_CHECKPOINT, "search.jsonl", FINETUNE_CHECKPOINT)
        if os.path.exists(os.path.join(settings.out, f))
    ]
    if earlier and not settings.resume:
        raise FileExistsError(
            f"the output folder {settings.out} holds an earlier run ({', '.join(earlier)}): pass --resume to "
            "continue it, or choose another --out"
        )
    saved_path = os.path.join(settings.out, SETTINGS_FILE)
    if not settings.resume or not os.path.exists(saved_path):
        return
    try:
        with open(saved_path, encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{saved_path} is unreadable ({err}); the run cannot be resumed") from None
    now = settings.as_dict()
    defaults = RunSettings().as_dict()  # for settings newer than the saved run
    changed = sorted(k for k in now if k not in ("resume", "device", "out") and saved.get(k, defaults[k]) != now[k])
    if changed:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"--resume continues the run in {settings.out} with its own settings; changed: {shown}")


def _announce(
    settings: RunSettings,
    raw: RawSplits,
    data: EncodedSplits,
    device: torch.device,
    world: int,
    budget: int,
    means: str,
    model: nn.Module,
) -> None:
    sizes = {k: len(next(iter(v.values()))) for k, v in vars(data).items() if v is not None}
    given = {k: v for k, v in settings.as_dict().items() if v is not None}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in given.items()))
    cut = raw.record.get("cut_from_train") or []
    cut_note = f" ({', '.join(cut)} cut from --train)" if cut else ""
    print(
        f"splits: {', '.join(f'{k} {n}' for k, n in sizes.items())}{cut_note}; device {device}"
        + (f" x {world} processes" if world > 1 else "")
    )
    print(f"budget: {budget:,} adapter parameters ({means})")
    print(trainable_parameters_summary(model))


def _train(
    task: Task,
    model: nn.Module,
    data: EncodedSplits,
    device: torch.device,
    checkpoint: str,
    steps: Any,
    sampling: str = "uniform",
    **options: Any,
) -> TrainResult:
    """One training phase (the supernet, or the found subnet alone) with its checkpoint in the output folder,
    rewritten every tenth of the phase; with ``resume`` it continues from that checkpoint."""
    s = task.settings
    assert s.batch_size is not None and s.lr is not None, "the task's defaults fill them"
    config = TrainConfig(
        batch_size=s.batch_size,
        lr=s.lr,
        steps=steps,
        warmup_steps=steps // 10,
        seed=s.seed,
        precision="bf16" if device.type == "cuda" else "fp32",
        compile=s.compile,
        sampling=sampling,
        **options,
    )
    trainer = SupernetTrainer(model, data.train, config, loss_fn=task.loss_fn(), device=device)
    path = os.path.join(s.out, checkpoint)
    if s.resume and os.path.exists(path):
        trainer.load_checkpoint(path)
    return trainer.train(checkpoint=path, checkpoint_every=max(1, steps // 10))


def _finetune(
    task: Task,
    model: nn.Module,
    data: EncodedSplits,
    device: torch.device,
    evaluator: SubnetEvaluator,
    found: SearchResult,
    validation: dict[str, float],
) -> dict[str, Any]:
    """Train the found subnet alone (``finetune_steps``), then keep its new weights unless their validation
    headline (:meth:`Task.prefers`: accuracy, or perplexity) is worse than the searched subnet's through the
    supernet's weights (``validation``); otherwise, or when the fine-tuning diverges (a non-finite loss or score),
    restore the supernet's. Returns the search's fitness of both (recorded, not deciding), whether the fine-tuned
    weights were kept (and why not, when they diverged), and their validation and test reports."""
    best, before = found.best_subnet, found.best_score
    trainable = [p for p in model.parameters() if p.requires_grad]
    before_weights = [p.detach().to("cpu", copy=True) for p in trainable]  # off the device during fine-tuning
    record: dict[str, Any] = {"validation_fitness_before": before, "validation_fitness_after": None, "kept": False}
    record |= {"validation": None, "test": None}
    try:
        _train(task, model, data, device, FINETUNE_CHECKPOINT, task.settings.finetune_steps, "fixed", subnet=best)
        after = evaluator.evaluate(best)
    except (FloatingPointError, ValueError) as err:  # the trainer's non-finite loss, the evaluator's score
        record["diverged"] = first_line(err)
    else:
        set_subnet(model, best)
        record["validation_fitness_after"] = after
        record["validation"] = task.evaluate(model, data.validation, device)
        record["decided_by"] = task.report[0]
        # every process keeps or restores alike (under torchrun each scored the weights itself)
        record["kept"] = decided_by_rank_zero(task.prefers(record["validation"], validation), process_group()[1])
        record["test"] = task.evaluate(model, data.test, device) if data.test is not None else None
    if not record["kept"]:
        with torch.no_grad():
            for p, saved in zip(trainable, before_weights):
                p.copy_(saved)
    return record


def _write_outputs(
    task: Task,
    model: nn.Module,
    merged: nn.Module,
    best: dict[str, Any],
    raw: RawSplits,
    settings: RunSettings,
    result: dict[str, Any],
) -> list[str]:
    """The adapter, the merged model with its run info, the subnet and the plots; returns the plot files."""
    out = settings.out
    save_adapter(model, os.path.join(out, "adapter"), subnet=best)
    folder = os.path.join(out, "merged")
    os.makedirs(folder, exist_ok=True)
    task.save_merged(merged, folder, raw)
    info = {"task": settings.task, "settings": settings.as_dict(), "labels": raw.labels, "targets": result["targets"]}
    for where in (folder, os.path.join(out, "adapter")):
        write_json(os.path.join(where, RUN_INFO), info, indent=1)
    write_json(os.path.join(out, "subnet.json"), best, indent=1, sort_keys=True)
    from glora.tasks.plots import plot_search

    plots = plot_search(os.path.join(out, "search.jsonl"), out, budget=result["budget"]["params"])
    return [os.path.relpath(p, out) for p in plots]


def _random_subnets(
    task: Task,
    model: nn.Module,
    space: SearchSpace,
    data: EncodedSplits,
    device: torch.device,
    budget: int,
    seed: int,
) -> dict[str, Any]:
    """The mean report of ``RANDOM_SUBNETS`` random feasible subnets under ``budget`` (seeded), each scored through
    the supernet's weights on the test split (the validation split without one)."""
    split, name = (data.test, "test") if data.test is not None else (data.validation, "validation")
    subnets = space.sample((0, budget), RANDOM_SUBNETS, seed + 1, 0)
    reports = []
    for subnet in subnets:
        set_subnet(model, subnet)
        reports.append(task.evaluate(model, split, device))
    mean = {key: sum(r[key] for r in reports) / len(reports) for key in reports[0]}
    return {"count": len(reports), "split": name, "mean": mean}


def _report(result: dict[str, Any], settings: RunSettings) -> None:
    test = result["test"] or result["validation"]
    split = "test" if result["test"] else "validation"
    figures = ", ".join(f"{k} {v:.4f}" for k, v in test.items())
    merged = result["test_merged"]
    merged_note = f" (merged model: {', '.join(f'{k} {v:.4f}' for k, v in merged.items())})" if merged else ""
    print(
        f"searched subnet: {result['adapter_params']:,} adapter parameters (budget {result['budget']['params']:,}); "
        f"{split} {figures}{merged_note}"
    )
    randoms = result["random_subnets"]
    searched = result["test_supernet"] or result["validation"]
    shown = ", ".join(f"{k} {v:.4f} (searched {searched[k]:.4f})" for k, v in randoms["mean"].items())
    print(f"{randoms['count']} random feasible subnets, mean through the supernet on {randoms['split']}: {shown}")
    finetune = result["finetune"]
    if finetune is not None:
        if finetune.get("diverged"):
            print(f"fine-tuning diverged ({finetune['diverged']}): the supernet's weights are restored")
        else:
            verdict = "kept" if finetune["kept"] else "not kept: the supernet's weights are restored"
            headline = finetune["decided_by"]
            print(
                f"fine-tuned subnet: validation {headline} {finetune['validation'][headline]:.4f} against "
                f"{result['validation'][headline]:.4f} before, {verdict}"
            )
    print(f"wrote {settings.out}/: {', '.join(result['files'])}")


def _recorded(out: str) -> dict[str, float]:
    """The timings, the number of sessions and the last training loss of the output folder's ``result.json``: a
    resumed run adds its timings to them; none when the run never finished. An unreadable file is reported."""
    path = os.path.join(out, "result.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            result = json.load(fh)
        found = {key: _lookup(result, key) for key in (*TIMINGS, "sessions", "final_train_loss")}
    except (OSError, ValueError, KeyError, TypeError):
        print(f"note: {path} is unreadable; the resumed run records only its own timings")
        return {}
    return {key: float(value) for key, value in found.items() if isinstance(value, (int, float))}


def _lookup(record: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(record, dict):
            return None
        record = record.get(key, {})
    return record
