"""What the classification tasks (text and image) share: :class:`ClassificationTask`, with their fitness, report
figures, common defaults, evaluation and predictions' rows."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from glora.tasks.base import Task, Tensors
from glora.training.batches import (
    evaluation_batch_size,
    evaluation_batch_tokens,
    labels_of,
    logits_of,
    sorted_batches,
    to_device,
)


class ClassificationTask(Task):
    """A task whose model labels each example with one of the training file's classes (``label_names``, in id
    order): searched on ``neg_loss`` or ``accuracy``, reported by accuracy and mean cross-entropy, predicting a
    label and every class's probability per example. Subclasses extend these ``defaults`` with their own."""

    fitness = ("neg_loss", "accuracy")
    report = ("accuracy", "loss")
    defaults: ClassVar[dict[str, Any]] = {"batch_size": 32, "lr": 2e-3, "validation_size": 0.1, "test_size": 0.2}
    """The defaults every classification task shares."""
    label_names: list[str]

    def evaluate(self, model: nn.Module, data: Tensors, device: torch.device) -> dict[str, float]:
        return classification_report(model, data, device)

    def class_rows(self, model: nn.Module, data: Tensors, device: torch.device) -> list[dict[str, Any]]:
        """:func:`prediction_rows` of ``model`` over ``data`` (inputs, no labels), one per example."""
        return prediction_rows(class_logits(model, data, device), self.label_names)


@torch.inference_mode()
def class_logits(model: nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The model's float32 logits over ``data`` (its ``"labels"`` entry, if any, is not an input), on the CPU."""
    was_training = model.training
    model.eval().to(device)
    inputs = {k: v for k, v in data.items() if k != "labels"}
    batches, restore = sorted_batches(inputs, evaluation_batch_size(device), tokens=evaluation_batch_tokens(device))
    autocast = device.type == "cuda"
    parts = []
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            for batch in batches:
                parts.append(logits_of(model, to_device(batch, device)).float().cpu())
    finally:
        model.train(was_training)
    logits = torch.cat(parts)
    return logits if restore is None else logits[restore.cpu()]


def classification_report(model: nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``data``."""
    logits = class_logits(model, data, device)
    labels = labels_of(data).cpu()
    return {
        "accuracy": (logits.argmax(-1) == labels).float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
    }


def prediction_rows(logits: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    """One row per example: the predicted label and every class's probability."""
    probs = logits.softmax(-1)
    return [
        {"label": names[int(p.argmax())], "scores": {name: round(float(q), 6) for name, q in zip(names, p)}}
        for p in probs
    ]
