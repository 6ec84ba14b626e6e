"""What the classification tasks share: their report figures and their predictions' rows."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glora.training.batches import labels_of, logits_of, take, to_device

BATCH = 256


@torch.inference_mode()
def class_logits(model: nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The model's float32 logits over ``data`` (its ``"labels"`` entry, if any, is not an input), on the CPU."""
    was_training = model.training
    model.eval().to(device)
    inputs = {k: v for k, v in data.items() if k != "labels"}
    n = len(next(iter(inputs.values())))
    autocast = device.type == "cuda"
    parts = []
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            for i in range(0, n, BATCH):
                batch = to_device(take(inputs, torch.arange(i, min(i + BATCH, n))), device)
                parts.append(logits_of(model, batch).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(parts)


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
