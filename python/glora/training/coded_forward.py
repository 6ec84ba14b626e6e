"""Subnet evaluation through one compiled forward (``SubnetEvaluator(compile=True)``).

Why: evaluating a subnet eagerly folds ``W'`` and ``b'`` into every layer (a few operations per layer, each a
launch from the host) and runs the model's forward: on a small model or a fast GPU the host's time sets the cost.
Here the subnet enters as codes (``glora.layers.plan_tensors``: each layer's plan as a small tensor), as in compiled
supernet training, so ``torch.compile`` builds one graph for every subnet, with the weights formed inside it; on a
GPU the graph is replayed as a CUDA graph (``mode="reduce-overhead"``), one launch per forward. The codes of a
whole batch of subnets are copied to the device at once, and each subnet's are copied into place on the device
before its forward, so the host queues subnet after subnet without waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, TypeVar, Union

import torch

from glora.layers.choices import Plan
from glora.layers.layer import GLoRALayer
from glora.layers.plan_tensors import PlanTensors
from glora.training.batches import logits_of

Score = TypeVar("Score")

COMPILE_BACKEND: Union[str, Callable[..., Any]] = "inductor"
"""The ``torch.compile`` backend of ``SubnetEvaluator(compile=True)``."""


class CodedForward:
    """The compiled forward of a wrapped model whose layers read their plans from codes."""

    def __init__(self, layers: Sequence[tuple[str, GLoRALayer]], device: torch.device) -> None:
        self.layers = list(layers)
        self.tensors = PlanTensors(len(self.layers), max(layer.max_rank for _, layer in self.layers), device)
        self.device = device
        graphs = COMPILE_BACKEND == "inductor" and device.type == "cuda"
        options: dict[str, Any] = {"mode": "reduce-overhead"} if graphs else {}
        self.forward = torch.compile(logits_of, backend=COMPILE_BACKEND, **options)

    def scores(self, plans: Sequence[dict[str, Plan]], score: Callable[[], Score]) -> list[Score]:
        """For each of ``plans`` (a plan per layer name), what ``score`` returns with that subnet set; the layers'
        fixed plans are restored afterwards, also when ``score`` raises."""
        names = [name for name, _ in self.layers]
        codes = self.tensors.table([[plan[name] for name in names] for plan in plans]).to(self.device)
        previous = [layer.fixed_plan for _, layer in self.layers]
        out: list[Score] = []
        try:
            for j, plan in enumerate(plans):
                self.tensors.codes.copy_(codes[j])
                # the plans too: an eager forward (outside the compiled graph) runs the fixed plan
                for (name, layer), code in zip(self.layers, self.tensors.views):
                    layer.set_plan(plan[name], code)
                out.append(score())
        finally:
            for (_, layer), fixed in zip(self.layers, previous):
                layer.set_plan(fixed)
        return out
