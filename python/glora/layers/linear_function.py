"""The training-time GLoRA linear op as one autograd node: ``y = x W'^T + b'`` (``docs/method.md``,
"One layer").

Why a hand-written node: an eager training step of a model with many small layers is bound by the host (kernel
launches and autograd bookkeeping), not by the GPU. Built from plain ops a GLoRA layer costs 20-30 autograd nodes
and about 30 kernel launches per step, where PEFT's LoRA costs about a dozen. This node forms ``W'`` and ``b'``
with one kernel per present term (the cast to the compute dtype fused into the last one), saves only the cast input
and the compute-dtype ``W'`` (what ``F.linear`` on ``W'`` would save), and in the backward derives every factor's
gradient from the one weight gradient ``g^T x`` (``factor_grads``). Over a base already in the compute dtype (an
LLM's bf16 weights, which the plain layer saves without a copy) ``W'`` is rebuilt in the backward instead of kept,
so peak memory stays that of the plain layer.

The forward calls ``functional.effective_weight`` / ``effective_bias`` (the same arithmetic as merging): the terms
in the factors' precision (float32, or float64 for float64 factors), rounded once to the compute dtype; autocast
is off inside the node.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from glora.layers.choices import Choice, has_bias_terms, has_weight_terms
from glora.layers.dtypes import factor_precision, keeps_cast_copy, no_autocast
from glora.layers.factor_grads import bias_grads, factor_grads
from glora.layers.functional import effective_bias, effective_weight

Tensor = torch.Tensor


class GLoRALinearFunction(torch.autograd.Function):
    """``F.linear(x, W', b')`` for one plan. Inputs: x, W0 (out x in view of the frozen weight), b0, the plan,
    the compute dtype, then Ad, Au, Bd, Bu, Cd, Cu, D, E (None where a layer lacks them)."""

    @staticmethod
    def forward(ctx, x, w0, b0, plan, dtype, ad, au, bd, bu, cd, cu, d, e):  # noqa: D102 (see the class)
        precision = factor_precision(w0.dtype, ad.dtype)
        dense = has_weight_terms(plan)
        with no_autocast(x.device.type):
            weight = effective_weight(plan, w0, ad, au, bd, bu, dtype) if dense else w0.to(dtype)
            bias = effective_bias(plan, w0, b0, cd, cu, d, e, dtype)
            xc = x.to(dtype)
            y = F.linear(xc, weight, bias)
        keep = not dense or keeps_cast_copy(w0, dtype)
        ctx.plan, ctx.precision, ctx.dense, ctx.dtype = plan, precision, dense, dtype
        ctx.save_for_backward(xc, weight if keep else None, w0, b0, ad, au, bd, bu, cd, cu, d, e)
        return y

    @staticmethod
    @once_differentiable  # the backward writes into fresh buffers; a second derivative gets a clear error
    def backward(ctx, gy):  # noqa: D102
        xc, weight, w0, b0, ad, au, bd, bu, cd, cu, d, e = ctx.saved_tensors
        plan, precision, needs = ctx.plan, ctx.precision, ctx.needs_input_grad
        grads: list[Optional[Tensor]] = [None] * 8
        with no_autocast(gy.device.type):
            if needs[0] and weight is None:
                weight = effective_weight(plan, w0, ad, au, bd, bu, ctx.dtype)
            gx = gy.matmul(weight) if needs[0] else None
            del weight  # weight-sized buffers are freed as soon as they are used: the backward's peak stays low
            g2 = gy.reshape(-1, gy.shape[-1])
            if ctx.dense and any(needs[5:9]):
                gw = g2.t() @ xc.reshape(-1, xc.shape[-1])
                factor_grads(grads, plan, precision, gw, w0, ad, au, bd, bu)
                del gw
            if has_bias_terms(plan) and any(needs[9:13]):
                bias_grads(grads, plan, g2.sum(0, dtype=precision), w0, b0, cd, cu, d, e)
        return (gx, None, None, None, None, *grads)


def glora_linear(
    x: Tensor,
    w0: Tensor,
    b0: Optional[Tensor],
    plan: tuple[Choice, ...],
    dtype: torch.dtype,
    factors: tuple[Optional[Tensor], ...],
) -> Tensor:
    """``y = x W'^T + b'`` for ``plan`` (a linear or transposed Conv1D weight viewed as out x in)."""
    return GLoRALinearFunction.apply(x, w0, b0, plan, dtype, *factors)
