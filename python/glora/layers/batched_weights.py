"""Every GLoRA linear layer's ``W'`` and ``b'`` for one forward, built by one autograd node before the forward.

Why: an eager training step of a model with many small layers is bound by the host, not the GPU. Per layer, the
per-layer node (``linear_function``) costs one Python autograd function in the forward and one in the backward,
plus the Python that forms ``W'`` and the factor gradients. Here, when the model's forward starts, one node forms
the weights of all linear (and ``Conv1D``) layers with a frozen base; each layer then runs a plain ``F.linear``
whose backward (the input gradient and ``g^T x``) is PyTorch's own, and the factor gradients of all layers are
formed in one backward call.

Memory: the linear's backward needs ``W'``. Under autocast to a dtype other than the base's (a float32 ViT under
bf16) the plain layer keeps a cast copy of ``W0`` for it anyway, so ``W'`` is kept in its place. Otherwise (an
LLM's bf16 weights, float32 training) keeping every ``W'`` would add a copy of the weights to peak memory, so the
layer hands the linear a recipe instead (saved-tensor hooks): ``W'`` is freed after the layer's forward and
rebuilt from the factors when its backward runs, as the per-layer node does. The mode ``"always"``
(``GLoRAConfig.batched_weights``) keeps every ``W'`` (a little faster, one more copy of the weights).

The built weights stay with the layers until the next forward of the model, so a forward recomputed under gradient
checkpointing uses the same tensors; for that reason a model whose checkpointing switch is on (transformers'
``gradient_checkpointing`` or timm's ``grad_checkpointing`` on any of its modules) keeps the per-layer node on
layers whose ``W'`` would otherwise be rebuilt. A layer uses the built weights only while they are current: same
plan, factors not modified since (their version counters), gradients enabled and the same compute dtype;
otherwise it runs the per-layer node (a submodule called on its own, inference, a step after the optimizer's).
Convolutions always run their own path.

This module sits above ``layer``: it reads and sets a layer only through the layer's public protocol
(``GLoRALayer.weight_matrix``, ``factors``, ``fixed_plan``, ``sampler``, ``current_plan``, ``is_folded``,
``trains_through_node``, ``prepare``), and :class:`Built` implements the layer's ``PreparedWeights``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional, Protocol, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.compiler import is_compiling

from glora.layers.choices import Plan, has_bias_terms, has_weight_terms
from glora.layers.dtypes import compute_dtype, factor_precision, keeps_cast_copy, no_autocast
from glora.layers.factor_grads import bias_grads, factor_grads
from glora.layers.functional import effective_bias, effective_weight
from glora.layers.layer import GLoRALayer

Tensor = torch.Tensor


class Options(Protocol):
    """Where the hook reads its mode on every forward: the wrapped model's ``GLoRAConfig``, whose
    ``batched_weights`` is ``"auto"`` (``W'`` kept for the backward where the plain layer would keep a cast
    ``W0``, rebuilt in the backward elsewhere) or ``"always"`` (every ``W'`` kept)."""

    batched_weights: str


class _Job(NamedTuple):
    """A layer taking part in this forward: its plan, the compute dtype, whether ``W'`` is built (A or B present;
    always for a compiled forward) and whether ``b'`` is (C, D or E present; for a compiled forward, offered),
    its ``W0`` (out x in) and ``b0``, and whether ``W'`` is kept for the backward (else rebuilt there)."""

    layer: GLoRALayer
    plan: Plan
    dtype: torch.dtype
    dense: bool
    bias_terms: bool
    w0: Tensor
    b0: Optional[Tensor]
    keep: bool


class Built:
    """One layer's weights for the current forward (the layer's ``PreparedWeights``): its plan, ``W'`` (None:
    ``W0``), ``b'`` (None: ``b0``), the compute dtype, the factors' versions when built, and the recipe that
    rebuilds ``W'`` in the backward (None: ``W'`` is kept). Once ``W'`` is handed to a linear to be rebuilt, they
    serve no more (a second call of the layer in the same forward runs the per-layer node)."""

    __slots__ = ("plan", "weight", "bias", "dtype", "versions", "recipe", "spent")

    def __init__(
        self,
        plan: Plan,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        dtype: torch.dtype,
        versions: tuple[int, ...],
        recipe: Optional[_Recipe],
    ) -> None:
        self.plan, self.weight, self.bias, self.dtype, self.versions, self.recipe = (
            plan,
            weight,
            bias,
            dtype,
            versions,
            recipe,
        )
        self.spent = False

    def serves(self, layer: GLoRALayer, x: Tensor) -> bool:
        fixed = layer.fixed_plan
        return (
            not self.spent
            and (fixed is None or fixed == self.plan)
            and torch.is_grad_enabled()
            and compute_dtype(x) == self.dtype
            and versions(layer.factors()) == self.versions
        )

    def linear(self, x: Tensor, w0: Tensor, b0: Optional[Tensor]) -> Tensor:
        """The layer's output on the built weights. A ``W'`` to be rebuilt in the backward is handed over (this
        object forgets it, so it is freed after the layer's forward) and the linear saves the recipe in its place,
        unless other saved-tensor hooks are active (gradient checkpointing, offloading), which then own what is
        saved."""
        weight = w0 if self.weight is None else self.weight
        bias = b0 if self.bias is None else self.bias
        recipe = self.recipe
        if recipe is None or _saved_tensor_hooks_active():
            return F.linear(x, weight, bias)
        self.weight, self.spent = None, True
        recipe.weight = weight
        try:
            with torch.autograd.graph.saved_tensors_hooks(recipe.pack, recipe.unpack):
                return F.linear(x, weight, bias)
        finally:
            recipe.weight = None


class _Recipe:
    """Saved-tensor hooks that store ``W'`` (or a view of it, such as the transpose the linear saves) as this
    recipe and rebuild it from ``W0`` and the factors when the backward asks for it."""

    __slots__ = ("plan", "w0", "factors", "dtype", "versions", "weight")

    def __init__(self, job: _Job, factors: tuple[Optional[Tensor], ...], versions: tuple[int, ...]) -> None:
        self.plan, self.w0, self.dtype, self.factors, self.versions = (
            job.plan,
            job.w0,
            job.dtype,
            factors[:4],
            versions[:4],
        )
        self.weight: Optional[Tensor] = None  # set for the layer's forward only

    def pack(self, t: Tensor) -> Union[Tensor, tuple]:
        w = self.weight
        if w is not None and (t is w or t._base is w):
            return (t.size(), t.stride(), t.storage_offset())
        return t

    def unpack(self, saved: Union[Tensor, tuple]) -> Tensor:
        if not isinstance(saved, tuple):
            return saved
        if versions(self.factors) != self.versions:
            raise RuntimeError(
                "a GLoRA factor (Ad, Au, Bd or Bu) was modified in place between the forward and the "
                "backward; the backward needs the values the forward used"
            )
        ad, au, bd, bu = self.factors
        assert ad is not None and au is not None and bd is not None and bu is not None  # every layer has them
        device_type = self.w0.device.type
        if torch.is_grad_enabled() or torch.is_autocast_enabled(
            device_type
        ):  # a double backward, or one under autocast
            with torch.no_grad(), no_autocast(device_type):
                weight = effective_weight(self.plan, self.w0, ad, au, bd, bu, self.dtype)
        else:  # the usual backward: no context to enter, a cost paid per layer and step
            weight = effective_weight(self.plan, self.w0, ad, au, bd, bu, self.dtype)
        return weight.as_strided(*saved)


class BatchedWeights:
    """The forward pre-hook of a wrapped model: builds the weights of its GLoRA layers (listed once: walking the
    module tree on every forward would cost the host more than it saves) and hands each its :class:`Built`."""

    def __init__(self, layers: list[GLoRALayer], switches: list[tuple[nn.Module, str]], options: Options) -> None:
        self.layers, self.switches, self.options = layers, switches, options
        self.per_layer = False  # see per_layer_nodes

    def __call__(self, model: nn.Module, args: Any) -> None:
        if is_compiling():
            return  # a compiled forward is given its weights by the trainer (give), or forms them in its graph
        layers = self.layers
        for layer in layers:
            layer.prepare(None)
        if self.per_layer or not torch.is_grad_enabled():
            return
        always = self.options.batched_weights == "always"
        checkpointing = any(getattr(module, name, False) is True for module, name in self.switches)
        jobs, factors = _jobs([_taking_part(layer, always, checkpointing) for layer in layers], compiled=False)
        if not jobs:
            return
        outputs = iter(_BuildWeights.apply(jobs, *factors))
        for k, job in enumerate(jobs):
            weight = next(outputs) if job.dense else None
            bias = next(outputs) if job.bias_terms else None
            own = tuple(factors[8 * k : 8 * k + 8])
            built_versions = versions(own)
            recipe = None if job.keep or weight is None else _Recipe(job, own, built_versions)
            job.layer.prepare(Built(job.plan, weight, bias, job.dtype, built_versions, recipe))

    def give(self) -> int:
        """Before a compiled forward (``TrainConfig(compile=True)``): build ``W'`` (and ``b'`` where the layer offers
        bias terms) of every frozen linear layer for the plans set now, in the current autocast dtype, in one
        autograd node as the eager hook does, and hand them to the layers, whose compiled forward takes them as
        graph inputs. The graph then holds one plain linear per layer whatever the path (no recompilation, no
        per-layer Python in it), and the factor gradients of all layers come from this node's one backward call.
        Every ``W'`` and ``b'`` is built, even for a path without their terms, so that the graph's inputs keep
        their kinds. Returns how many layers were given weights (the others read the path's codes)."""
        self.take_back()  # a layer not taking part now keeps no earlier weights
        jobs, factors = _jobs([_taking_part(layer, True, False) for layer in self.layers], compiled=True)
        if not jobs:
            return 0
        outputs = iter(_BuildWeights.apply(jobs, *factors))
        for job in jobs:
            weight = next(outputs)
            job.layer.give_weights((weight, next(outputs) if job.bias_terms else None))
        return len(jobs)

    def take_back(self) -> None:
        """After the backward of a compiled forward: the layers forget the weights :meth:`give` handed them (their
        memory is freed before the optimizer step, and no later forward can use them)."""
        for layer in self.layers:
            layer.give_weights(None)


def install(model: nn.Module, layers: list[GLoRALayer], options: Options) -> None:
    """Build the weights of ``layers`` (the model's GLoRA layers) at the start of every forward of ``model``, in
    the mode ``options.batched_weights`` holds then; called by ``glora.wrap``."""
    model.register_forward_pre_hook(BatchedWeights(layers, _checkpointing_switches(model), options))


def weight_builders(model: nn.Module) -> list[BatchedWeights]:
    """The hooks of ``model`` and of every module in it (a trainer may be given a model that holds the wrapped
    one), found once by a trainer whose compiled forward takes the frozen linear layers' weights as inputs: before
    each compiled forward it calls their :meth:`BatchedWeights.give`, after its backward
    :meth:`BatchedWeights.take_back`."""
    return [
        hook
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, BatchedWeights)
    ]


def uninstall(model: nn.Module) -> None:
    """Remove the hook (from a merged model, which has no GLoRA layers)."""
    for key, _ in list(_hooks(model)):
        del model._forward_pre_hooks[key]


@contextlib.contextmanager
def per_layer_nodes(model: nn.Module) -> Iterator[None]:
    """Testing route: inside the block no weights are built for the whole forward, so every linear layer runs its
    own node (the path gradient checkpointing and convolutions take), the reference the batched path must match."""
    hooks = [hook for _, hook in _hooks(model)]
    for hook in hooks:
        hook.per_layer = True
    try:
        yield
    finally:
        for hook in hooks:
            hook.per_layer = False


def _hooks(model: nn.Module) -> Iterator[tuple[int, BatchedWeights]]:
    """The model's :class:`BatchedWeights` hooks with their keys in PyTorch's registry of forward pre-hooks."""
    for key, hook in model._forward_pre_hooks.items():
        if isinstance(hook, BatchedWeights):
            yield key, hook


def versions(factors: tuple[Optional[Tensor], ...]) -> tuple[int, ...]:
    """The factors' version counters (an in-place update, such as the optimizer's step, changes them)."""
    return tuple(-1 if f is None else f._version for f in factors)


def _checkpointing_switches(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The attributes that turn gradient checkpointing on, found once: ``gradient_checkpointing`` (transformers;
    its ``is_activation_checkpointing`` walks every module on each call, a millisecond per step on a 1 B model)
    and timm's ``grad_checkpointing`` on any module, and both on the model itself even when not set yet."""
    names = ("gradient_checkpointing", "grad_checkpointing")
    found = [(m, n) for m in model.modules() if m is not model for n in names if isinstance(getattr(m, n, None), bool)]
    return found + [(model, n) for n in names]


def _saved_tensor_hooks_active() -> bool:
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is not None and top(False) is not None


def _taking_part(layer: GLoRALayer, always: bool, checkpointing: bool) -> Optional[tuple]:
    """``(layer, W0, b0, compute dtype, keep W')`` when the layer takes part in this forward, else None."""
    if layer.is_folded:
        return None
    w0, b0 = layer.weight_matrix(), layer.base_layer.bias
    if not layer.trains_through_node(w0, b0):
        return None
    device_type = w0.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else w0.dtype
    keep = always or keeps_cast_copy(w0, dtype)
    if not keep and checkpointing:
        return None
    if not any(f is not None and f.requires_grad for f in layer.factors()):
        return None
    if layer.fixed_plan is None and layer.sampler is None:
        return None  # the layer's own forward raises the error that says what to do
    return layer, w0, b0, dtype, keep


def _jobs(parts: list[Optional[tuple]], compiled: bool) -> tuple[list[_Job], list[Optional[Tensor]]]:
    """The jobs of the layers taking part (``parts`` from :func:`_taking_part`, None for the others) and their
    factors in order. Eagerly a job builds only the terms its plan has; for a compiled forward every ``W'``, and
    ``b'`` wherever the layer offers bias terms (see :meth:`BatchedWeights.give`)."""
    taking_part = [t for t in parts if t is not None]
    jobs: list[_Job] = []
    factors: list[Optional[Tensor]] = []
    for (layer, w0, b0, dtype, keep), plan in zip(taking_part, _plans([t[0] for t in taking_part])):
        dense = compiled or has_weight_terms(plan)
        bias_terms = layer.offers_bias_terms() if compiled else has_bias_terms(plan)
        if dense or bias_terms:
            jobs.append(_Job(layer, plan, dtype, dense, bias_terms, w0, b0, keep))
            factors.extend(layer.factors())
    return jobs, factors


def _plans(layers: list[GLoRALayer]) -> list[Plan]:
    """Each layer's configuration for this forward, in order; layers sharing ``supernet_mode``'s sampler draw
    together from one call to its generator (the same configurations as drawn one by one)."""
    drawing = [layer for layer in layers if layer.fixed_plan is None]
    sampler = drawing[0].sampler if drawing else None
    if sampler is None or not (hasattr(sampler, "draw_all") and all(layer.sampler is sampler for layer in drawing)):
        return [layer.current_plan() for layer in layers]
    drawn = iter(sampler.draw_all(drawing))
    return [layer.fixed_plan if layer.fixed_plan is not None else next(drawn) for layer in layers]


class _BuildWeights(torch.autograd.Function):
    """Inputs: the jobs, then the eight factors of each job's layer. Outputs: per job, ``W'`` if ``dense`` and
    ``b'`` if ``bias_terms``, in the compute dtype (new tensors, also for a path without their terms)."""

    @staticmethod
    def forward(ctx, jobs, *factors):  # noqa: D102 (see the class)
        outputs: list[Optional[Tensor]] = []  # effective_bias is never None for a plan with bias terms
        with no_autocast(factors[0].device.type):
            for k, job in enumerate(jobs):
                ad, au, bd, bu, cd, cu, d, e = factors[8 * k : 8 * k + 8]
                # fresh and contiguous whatever the path (a path without the terms gives W0 or b0 itself, Conv1D's
                # W0 is a transposed view, a scalar E an expanded one), so that a compiled graph taking them as
                # inputs sees the same layout at every path
                if job.dense:
                    weight = effective_weight(job.plan, job.w0, ad, au, bd, bu, job.dtype)
                    if weight is job.w0 or not weight.is_contiguous():
                        weight = weight.clone(memory_format=torch.contiguous_format)
                    outputs.append(weight)
                if job.bias_terms:
                    bias = effective_bias(job.plan, job.w0, job.b0, cd, cu, d, e, job.dtype)
                    if bias is None:
                        bias = job.w0.new_zeros(job.w0.shape[0], dtype=job.dtype)
                    elif bias is job.b0 or not bias.is_contiguous():
                        bias = bias.clone(memory_format=torch.contiguous_format)
                    outputs.append(bias)
        ctx.jobs = jobs
        ctx.set_materialize_grads(False)  # a layer that did not run gets None, not a weight-sized zero
        # the factors are kept as plain references, not saved tensors: under reentrant checkpointing each
        # checkpointed segment runs its own backward pass, which calls this node for its layers' gradients
        # (saved tensors would be freed after the first)
        ctx.factors = factors
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # noqa: D102
        factors = ctx.factors
        out: list[Optional[Tensor]] = [None] * len(factors)
        given = iter(grads)
        with no_autocast(factors[0].device.type):
            for k, job in enumerate(ctx.jobs):
                ad, au, bd, bu, cd, cu, d, e = factors[8 * k : 8 * k + 8]
                gw = next(given) if job.dense else None
                gb = next(given) if job.bias_terms else None
                precision = factor_precision(job.w0.dtype, ad.dtype)
                slots: list[Optional[Tensor]] = [None] * 8
                if gw is not None:
                    factor_grads(slots, job.plan, precision, gw, job.w0, ad, au, bd, bu)
                if gb is not None:
                    bias_grads(slots, job.plan, gb.to(precision), job.w0, job.b0, cd, cu, d, e)
                out[8 * k : 8 * k + 8] = slots
        return (None, *out)
