"""Training losses: the classification loss, and the sandwich rule's distillation from the largest subnet."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from glora.training.batches import Batch, labels_of, logits_of

LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def classification_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the model's logits against the batch's labels."""
    return F.cross_entropy(logits_of(model, batch).float(), labels_of(batch))


def sandwich_loss(
    model: nn.Module, batch: Batch, teacher: Optional[torch.Tensor], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one sandwich path and the teacher's logits for the paths after it.

    The first path (``teacher`` None: the largest subnet) learns from the labels and becomes the teacher; every
    later path learns from the teacher's predictions softened by ``temperature`` (KL divergence times the squared
    temperature, so the gradients keep their scale as the temperature changes; docs/method.md).
    """
    logits = logits_of(model, batch).float()
    if teacher is None:
        return F.cross_entropy(logits, labels_of(batch)), logits.detach()
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, -1), F.softmax(teacher / t, -1), reduction="batchmean") * t * t, teacher
