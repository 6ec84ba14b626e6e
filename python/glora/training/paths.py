"""Which subnets one training step trains: the supernet's paths (docs/method.md, supernet training).

``uniform`` (the reference): one uniform draw per layer and gene each step. ``budget``: one subnet each step from
the search engine's budget-aware construction, so every trained path lies within the parameter budget.
``sandwich``: the largest and the smallest subnet within budget, then a budget-aware draw. ``fixed``: the given
subnet every step (fine-tuning the searched subnet with its weights taken from the supernet).

A step's paths are set on the layers as plans that each layer holds through the forward, so a forward recomputed
under gradient checkpointing runs the same configuration. Budget-aware draw ``i`` is a fixed function of
``(seed, i)``; the uniform draws come from one seeded generator whose state a checkpoint keeps.

Under ``TrainConfig(compile=True)`` the paths that change from step to step are also written as tensors
(``glora.layers.plan_tensors``), which the compiled forward reads, so it runs one graph for every path. Such a
forward gives the factors a path leaves out a zero gradient where eager execution gives none;
:meth:`PathSampler.drop_unused_gradients` drops those before the optimizer step, so AdamW skips them as eagerly.
"""

from __future__ import annotations

import torch
from torch import nn

from glora.engine.space import budget_bounds
from glora.layers.choices import Choice
from glora.layers.plan_tensors import PlanTensors, unused_factors
from glora.training.config import TrainConfig
from glora.training.sampling import BudgetSampler
from glora.tuner.space import search_space
from glora.tuner.subnets import draw_plans, validate_subnet
from glora.tuner.wrapping import layers_or_raise

Plans = dict[str, tuple[Choice, ...]]  # each GLoRA layer's configuration, by layer name


class PathSampler:
    """The paths of each training step of ``model`` under ``config``'s sampling rule."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.layers = layers_or_raise(model)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.budget_sampler = None
        self.fixed = [validate_subnet(model, config.subnet)] if config.subnet is not None else []
        if config.sampling in ("budget", "sandwich"):
            assert config.budget is not None  # TrainConfig refuses budget-aware sampling without a budget
            self.budget_sampler = BudgetSampler(search_space(model), budget_bounds(config.budget), config.seed)
            if config.sampling == "sandwich":
                self.fixed = [
                    validate_subnet(model, self.budget_sampler.largest()),
                    validate_subnet(model, self.budget_sampler.smallest()),
                ]
        self.tensors = None
        if config.compile and config.sampling != "fixed":
            first = self.layers[0][1]
            max_rank = max(layer.max_rank for _, layer in self.layers)
            self.tensors = PlanTensors(len(self.layers), max_rank, first.Ad.device)
        self._applied: list[Plans] = []

    @property
    def paths_per_step(self) -> int:
        """How many paths :meth:`paths` returns for each micro-batch (a forward and backward each)."""
        return len(self.fixed) + 1 if self.budget_sampler is not None else max(1, len(self.fixed))

    def paths(self, step: int) -> list[Plans]:
        """The plans trained at optimizer step ``step`` (each micro-batch of a step draws again for uniform paths)."""
        if self.budget_sampler is not None:
            return [*self.fixed, validate_subnet(self.model, self.budget_sampler.draw(step)[0])]
        if self.fixed:
            return self.fixed
        plans = draw_plans([layer for _, layer in self.layers], self.generator)
        return [{name: plan for (name, _), plan in zip(self.layers, plans)}]

    def apply(self, plans: Plans, codes: bool = True) -> None:
        """Fix every layer to its plan for the next forward and backward (and, with ``codes``, write the plans as
        tensors for a compiled forward; else :meth:`write_codes` does it before that forward)."""
        tensors = self.tensors
        if tensors is None:
            for name, layer in self.layers:
                layer.set_plan(plans[name])
            return
        if codes:
            self.write_codes(plans)
        for (name, layer), code in zip(self.layers, tensors.views):
            layer.set_plan(plans[name], code)
        self._applied.append(plans)

    def write_codes(self, plans: Plans) -> None:
        """Write ``plans`` as the tensors a compiled forward reads (one copy for all layers)."""
        if self.tensors is not None:
            self.tensors.write([plans[name] for name, _ in self.layers])

    def drop_unused_gradients(self) -> None:
        """Under plans as tensors: set to None the gradient of every factor that no path applied since the last
        call used (the compiled forward gave it zeros), as eager execution leaves it; then forget those paths."""
        applied, self._applied = self._applied, []
        if not applied:
            return
        for name, layer in self.layers:
            unused = [all(flags) for flags in zip(*(unused_factors(plans[name]) for plans in applied))]
            for factor, drop in zip(layer.factors(), unused):
                if drop and factor is not None:
                    factor.grad = None
