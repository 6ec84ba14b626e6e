"""What a task of ``glora run`` gives the runner (``glora.tasks.runner``): its model, its data as tensors, its loss
and fitness, its report on the test split and the merged model in its family's own format.

A task is made from the run's resolved settings (``glora.tasks.settings.RunSettings``). The runner calls, in
order: :meth:`Task.read_data` (the files, checked: bad data fails here, before any model is loaded),
:meth:`Task.load_model`, :meth:`Task.adapter_config` (what is wrapped, so the space searched; ``glora inspect``
shows it), :meth:`Task.encode`, then trains, searches and merges, and finally :meth:`Task.evaluate` and
:meth:`Task.save_merged`. ``glora eval`` and ``glora predict`` use
:meth:`Task.load_merged`, :meth:`Task.read_examples`, :meth:`Task.encode_examples`, :meth:`Task.evaluate` and
:meth:`Task.predict`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from torch import nn

from glora.training.evaluator import Metric
from glora.training.losses import LossFn
from glora.tuner.config import GLoRAConfig

if TYPE_CHECKING:
    from glora.tasks.settings import RunSettings

Tensors = dict[str, torch.Tensor]
"""One split as the trainer and the evaluator take it: equal-length tensors, with ``"labels"``."""


@dataclass
class RawSplits:
    """The examples of each split as read from the files (before any model is loaded), and how the splits were
    made: ``record`` holds the sources, the sizes, the seed and which splits were cut from ``--train``, and is
    saved in ``result.json``. ``labels`` are the class names in id order (classification tasks)."""

    train: Any
    validation: Any
    test: Optional[Any]
    labels: Optional[list[str]] = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncodedSplits:
    """The splits as tensors."""

    train: Tensors
    validation: Tensors
    test: Optional[Tensors]


class Task(ABC):
    """One kind of model and data. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    """The ``--task`` name, e.g. ``"text-classification"``."""
    fitness: ClassVar[tuple[str, ...]]
    """The search fitness names this task offers; the first is its default (``neg_loss``: the negative loss)."""
    report: ClassVar[tuple[str, ...]]
    """The figures :meth:`evaluate` returns, the first the headline (``accuracy``, or ``perplexity``)."""
    headline_higher_is_better: ClassVar[bool] = True
    """Whether a higher headline figure is better (accuracy), or a lower one (perplexity)."""
    defaults: ClassVar[dict[str, Any]] = {}
    """Settings this task uses when neither the flags nor the config file give them (``RunSettings`` fields)."""
    compiled_search: ClassVar[bool] = True
    """Whether ``--compile`` also compiles the search's evaluator: False where the model's evaluation forward
    breaks the graph (its compiled form would gain nothing)."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings

    @abstractmethod
    def read_data(self) -> RawSplits:
        """Read and check the data files; cut the missing splits from the training one (seeded, stratified for
        classification). Bad data raises ``glora.errors.DataError`` naming the file, column or example."""

    @abstractmethod
    def load_model(self, raw: RawSplits) -> nn.Module:
        """Load the model (float32, on the CPU) with what it needs (tokenizer, image processor) kept on the task;
        a path that is not such a model raises ``glora.errors.DataError``. ``raw`` gives the classes."""

    @abstractmethod
    def default_targets(self, model: nn.Module) -> list[str]:
        """The module names or suffixes to wrap when ``--targets`` is not given (the usual projections)."""

    def default_budget(self, model: nn.Module) -> str:
        """The ``--budget`` when none is given: ``defaults["budget"]``, else LoRA r=8's count on the targets."""
        return str(self.defaults.get("budget", "lora:8"))

    def modules_to_save(self, model: nn.Module) -> list[str]:
        """Modules trained in full beside the adapters (a new classification head); none by default."""
        return []

    def adapter_config(self, model: nn.Module) -> GLoRAConfig:
        """The configuration ``glora run`` wraps ``model`` with, and so the space it searches (``glora inspect``
        shows it): the settings' ``rank`` and ``choices``, their ``targets`` or else :meth:`default_targets`, and
        :meth:`modules_to_save`."""
        s = self.settings
        return GLoRAConfig(
            rank=s.rank,
            target_modules=s.targets or self.default_targets(model),
            modules_to_save=self.modules_to_save(model) or None,
            choices=s.choices,
        )

    @abstractmethod
    def encode(self, raw: RawSplits) -> EncodedSplits:
        """The splits as tensors for the loaded model."""

    def loss_fn(self) -> Optional[LossFn]:
        """The training loss; None for the built-in classification loss."""
        return None

    def fitness_metric(self, name: str) -> Metric:
        """The search's fitness ``name`` (one of :attr:`fitness`) as an evaluator metric, higher is better."""
        from glora.training.evaluator import METRICS

        return METRICS[name]

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Tensors, device: torch.device) -> dict[str, float]:
        """The report figures (:attr:`report`) of ``model`` (wrapped with a subnet set, or merged) on ``data``."""

    def prefers(self, after: dict[str, float], before: dict[str, float]) -> bool:
        """Whether the report ``after`` (fine-tuned weights) is to be kept over ``before`` (the supernet's): its
        headline figure is finite and no worse (or ``before``'s is not finite). The headline, not the search's
        fitness, decides: a subnet trained longer fits its training data more tightly, which can raise the
        validation loss while the accuracy the user reads rises too (docs/benchmarks.md, "How the recipe was
        chosen")."""
        headline = self.report[0]
        new, old = after[headline], before[headline]
        if not math.isfinite(new):
            return False
        if not math.isfinite(old):
            return True
        return new >= old if self.headline_higher_is_better else new <= old

    @abstractmethod
    def save_merged(self, merged: nn.Module, folder: str, raw: RawSplits) -> None:
        """Write the merged model in its family's own format, loadable without glora, with its preprocessing
        (tokenizer or image processor) and label names."""

    @abstractmethod
    def load_merged(self, folder: str) -> nn.Module:
        """The model :meth:`save_merged` wrote (float32, on the CPU), with its preprocessing kept on the task;
        ``glora eval`` and ``glora predict`` use it. The task's settings are those the run saved."""

    @abstractmethod
    def read_examples(self, path: str, role: str, labelled: bool = True) -> Any:
        """The examples of one file (``role`` names it in messages: ``train``, ``validation``, ``test``,
        ``input``); ``labelled=False`` for ``glora predict``'s input, which needs no label column."""

    @abstractmethod
    def encode_examples(self, examples: Any) -> Tensors:
        """One file's examples (:meth:`read_examples`) as tensors for the loaded model."""

    @abstractmethod
    def predict(self, model: nn.Module, examples: Any, device: torch.device) -> list[dict[str, Any]]:
        """One JSON-ready row per example: the label and the class scores, or a generated continuation."""
