"""Every GLoRA linear layer's ``W'`` and ``b'`` for one forward, built by one autograd node before the forward.

Why: an eager training step of a model with many small layers is bound by the host, not the GPU. Per layer, the
``GLoRALinear`` node costs one Python autograd function in the forward and one in the backward, plus the Python
that forms ``W'`` and the factor gradients. Here, when the model's forward starts, one node forms the weights of
all layers that can take part; each layer then runs a plain ``F.linear`` whose backward (the input gradient and
``g^T x``) is PyTorch's own, and the factor gradients of all layers are formed in one backward call.

By default (``MODE = "auto"``) a layer takes part when the plain layer would keep a cast copy of ``W0`` for the
backward anyway: a linear (or ``Conv1D``) layer with a frozen base under autocast to a dtype other than the
base's (a float32 ViT under bf16). Over a base already in the compute dtype (an LLM's bf16 weights) keeping every
``W'`` would add a copy of the weights to peak memory, so those layers keep the ``GLoRALinear`` node, which
rebuilds ``W'`` in the backward, unless ``glora.set_batched_weights("always")`` trades that memory for speed.

The built weights stay with the layers until the next forward of the model, so a forward recomputed under
gradient checkpointing uses the same tensors. A layer uses them only while they are current: same plan, factors
not modified since (their version counters), gradients enabled and the same compute dtype; otherwise it runs the
``GLoRALinear`` node as before (a submodule called on its own, inference, a step after the optimizer's). The
weights are formed by the PyTorch terms; the opt-in Triton kernels (``GLORA_FUSED_KERNELS=1``) serve only the
per-layer node, where they were measured (slower on host-bound steps).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .choices import Choice, has_bias_terms, has_weight_terms
from .functional import effective_bias, effective_weight
from .dtypes import no_autocast
from .factor_grads import bias_grads, factor_grads

Tensor = torch.Tensor

MODES = ("auto", "always", "off")
MODE = "auto"
"""``auto``: the layers described above; ``always``: also layers over a base in the compute dtype, and without
autocast (faster on a host-bound step, at the cost of keeping every ``W'`` until the backward: a copy of the
adapted weights in peak memory); ``off``: every layer runs its own ``GLoRALinear`` node. Set it with
``glora.set_batched_weights``."""


def set_batched_weights(mode: str) -> None:
    """Choose which layers build their weights for the whole forward (see ``MODE``)."""
    global MODE
    if mode not in MODES:
        raise ValueError(f"batched weights mode must be one of {list(MODES)}, got {mode!r}")
    MODE = mode


class _Job(NamedTuple):
    """A layer taking part in this forward: its plan, the compute dtype, whether A or B is present (``W'`` is
    built) and whether C, D or E is (``b'`` is built), and its ``W0`` (out x in) and ``b0``."""

    layer: nn.Module
    plan: tuple[Choice, ...]
    dtype: torch.dtype
    dense: bool
    bias_terms: bool
    w0: Tensor
    b0: Optional[Tensor]


class Built:
    """One layer's weights for the current forward: its plan, ``W'`` (None: ``W0``), ``b'`` (None: ``b0``), the
    compute dtype and the factors' versions when built."""

    __slots__ = ("plan", "weight", "bias", "dtype", "versions")

    def __init__(self, plan: tuple[Choice, ...], weight: Optional[Tensor], bias: Optional[Tensor], dtype: torch.dtype, versions: tuple[int, ...]) -> None:
        self.plan, self.weight, self.bias, self.dtype, self.versions = plan, weight, bias, dtype, versions


def install(model: nn.Module, layers: list[nn.Module]) -> None:
    """Build the weights of ``layers`` (the model's GLoRA layers, listed once: walking the module tree on every
    forward would cost the host more than it saves) at the start of every forward of ``model``; called by
    ``glora.wrap``."""
    handle = model.register_forward_pre_hook(_build_all)
    model.__dict__["_glora_batched"] = (handle.id, layers)


def uninstall(model: nn.Module) -> None:
    """Remove the hook (from a merged copy, which has no GLoRA layers)."""
    hook_id, _ = model.__dict__.pop("_glora_batched", (None, None))
    if hook_id is not None:
        model._forward_pre_hooks.pop(hook_id, None)


def versions(factors: tuple[Optional[Tensor], ...]) -> tuple[int, ...]:
    """The factors' version counters (an in-place update, such as the optimizer's step, changes them)."""
    return tuple(-1 if f is None else f._version for f in factors)


def _build_all(model: nn.Module, args: Any) -> None:
    layers = model.__dict__["_glora_batched"][1]
    for layer in layers:
        layer.__dict__["_built"] = None  # plain attributes set directly: nn.Module.__setattr__ is slow
    if MODE == "off" or not torch.is_grad_enabled():
        return
    jobs, factors = [], []
    for layer in layers:
        job = _job(layer)
        if job is not None:
            jobs.append(job)
            factors.extend(layer._factors())
    if not jobs:
        return
    outputs = iter(_BuildWeights.apply(jobs, *factors))
    for k, job in enumerate(jobs):
        weight = next(outputs) if job.dense else None
        bias = next(outputs) if job.bias_terms else None
        job.layer.__dict__["_built"] = Built(job.plan, weight, bias, job.dtype, versions(tuple(factors[8 * k : 8 * k + 8])))


def _job(layer: nn.Module) -> Optional[_Job]:
    """The layer's job when it takes part in this forward, else None."""
    if layer._folded is not None:
        return None
    w0, b0 = layer._weight_matrix(), layer.base_layer.bias
    if not layer.trains_through_node(w0, b0):
        return None
    device_type = w0.device.type
    autocast = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type) if autocast else w0.dtype
    if MODE == "auto" and (not autocast or dtype == w0.dtype):
        return None
    if not any(f is not None and f.requires_grad for f in layer._factors()):
        return None
    if layer._fixed is None and layer._sampler is None:
        return None  # the layer's own forward raises the error that says what to do
    plan = layer._current()
    dense = has_weight_terms(plan)
    bias_terms = has_bias_terms(plan)
    if not (dense or bias_terms):
        return None
    return _Job(layer, plan, dtype, dense, bias_terms, w0, b0)


class _BuildWeights(torch.autograd.Function):
    """Inputs: the jobs, then the eight factors of each job's layer. Outputs: per job, ``W'`` if dense and ``b'``
    if the plan has bias terms, in the compute dtype."""

    @staticmethod
    def forward(ctx, jobs, *factors):  # noqa: D102 (see the class)
        outputs = []
        with no_autocast(factors[0].device.type):
            for k, job in enumerate(jobs):
                ad, au, bd, bu, cd, cu, d, e = factors[8 * k : 8 * k + 8]
                if job.dense:
                    outputs.append(effective_weight(job.plan, job.w0, ad, au, bd, bu, job.dtype))
                if job.bias_terms:
                    outputs.append(effective_bias(job.plan, job.w0, job.b0, cd, cu, d, e, job.dtype))
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
                precision = torch.promote_types(job.w0.dtype, ad.dtype)
                slots: list[Optional[Tensor]] = [None] * 8
                if gw is not None:
                    factor_grads(slots, job.plan, precision, gw, job.w0, ad, au, bd, bu)
                if gb is not None:
                    bias_grads(slots, job.plan, gb.to(precision), job.w0, job.b0, cd, cu, d, e)
                out[8 * k : 8 * k + 8] = slots
        return (None, *out)
