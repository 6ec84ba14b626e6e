"""The per-layer training node of ``linear_function`` as ``torch.library`` custom ops, ``glora::linear`` and its
backward ``glora::linear_backward``, for a compiled supernet step (``docs/method.md``, "Supernet training").

Why: traced by ``torch.compile``, a layer would have to form every term its choices offer, masked by the path's
codes (``plan_tensors.coded_weights``), since the compiler cannot branch on which terms a path uses. A custom op is
opaque to the compiler: inside it the layer runs exactly the eager node's arithmetic for the path, which it reads
from a host tensor of plans (:class:`~glora.layers.plan_tensors.PlanTensors`' ``host`` table; reading it costs no
device sync), while the compiler fuses everything around it. The graph stays one for every path.

The ops take ``x`` already in the compute dtype (the caller casts it in the graph, where the cast fuses with the
op before). A factor the plan leaves out gets a zero gradient, as under ``coded_weights``; the trainer drops those
(``PathSampler.drop_unused_gradients``). The forward also returns ``W'`` when a plain linear layer would keep a
cast copy of ``W0`` in its place (``dtypes.keeps_cast_copy``), else an empty tensor, and the backward rebuilds
``W'``. The plans table must hold the path until the path's backward has run, which the trainer's order (apply,
forward, backward for each path) ensures; a table written in between fails the backward with autograd's error
for a saved tensor modified in place.
"""

# no ``from __future__ import annotations``: torch.library reads the ops' schemas from these annotations, and
# releases before 2.5 cannot read them as strings
from typing import List, Optional, Tuple  # noqa: UP035 (see above)

import torch
import torch.nn.functional as F

from glora.layers.choices import Choice, Plan, has_bias_terms, has_weight_terms
from glora.layers.dtypes import factor_precision, keeps_cast_copy, no_autocast
from glora.layers.factor_grads import bias_grads, factor_grads
from glora.layers.functional import effective_bias, effective_weight
from glora.layers.plan_tensors import KINDS

Tensor = torch.Tensor


def _plan(plans: Tensor, row: int) -> Plan:
    """Row ``row`` of a host plans table as a plan."""
    return tuple(Choice(KINDS[kind], rank) for kind, rank in plans[row].tolist())


@torch.library.custom_op("glora::linear", mutates_args=())
def linear(
    x: Tensor,
    w0: Tensor,
    b0: Optional[Tensor],
    plans: Tensor,
    row: int,
    ad: Tensor,
    au: Tensor,
    bd: Tensor,
    bu: Tensor,
    cd: Optional[Tensor],
    cu: Optional[Tensor],
    d: Optional[Tensor],
    e: Optional[Tensor],
) -> Tuple[Tensor, Tensor]:  # noqa: UP006 (typing forms, see the imports)
    """``(F.linear(x, W', b'), W' or an empty tensor)`` for the plan in row ``row`` of ``plans``; ``x`` in the
    compute dtype, ``W0`` the base's out x in weight."""
    plan, dtype = _plan(plans, row), x.dtype
    with no_autocast(x.device.type):
        weight = effective_weight(plan, w0, ad, au, bd, bu, dtype) if has_weight_terms(plan) else w0.to(dtype)
        y = F.linear(x, weight, effective_bias(plan, w0, b0, cd, cu, d, e, dtype))
    # kept contiguous, as the fake op states (the transposed view of a Conv1D's weight would keep its strides)
    return y, weight.contiguous() if keeps_cast_copy(w0, dtype) else x.new_empty(0)


@linear.register_fake
def _linear_fake(x, w0, b0, plans, row, ad, au, bd, bu, cd, cu, d, e):  # noqa: ANN001, ANN202 (the op's signature)
    y = x.new_empty((*x.shape[:-1], w0.shape[0]))
    return y, x.new_empty(w0.shape) if keeps_cast_copy(w0, x.dtype) else x.new_empty(0)


@torch.library.custom_op("glora::linear_backward", mutates_args=())
def linear_backward(
    gy: Tensor,
    x: Tensor,
    kept: Tensor,
    w0: Tensor,
    b0: Optional[Tensor],
    plans: Tensor,
    row: int,
    ad: Tensor,
    au: Tensor,
    bd: Tensor,
    bu: Tensor,
    cd: Optional[Tensor],
    cu: Optional[Tensor],
    d: Optional[Tensor],
    e: Optional[Tensor],
    needs_x: bool,
    needs_weight_factors: bool,
    needs_bias_factors: bool,
) -> List[Tensor]:  # noqa: UP006
    """The gradients of ``x`` (empty unless ``needs_x``) and of the eight factors (a zero gradient for a factor
    the plan leaves out or that needs none, an empty tensor for one the layer lacks), as the eager node's backward
    forms them; ``needs_weight_factors`` / ``needs_bias_factors``: whether any of A, B's / C, D, E's factors
    needs a gradient (else those products are skipped)."""
    plan, dtype = _plan(plans, row), x.dtype
    factors = (ad, au, bd, bu, cd, cu, d, e)
    grads: list[Optional[Tensor]] = [None] * 8
    dense = has_weight_terms(plan)
    with no_autocast(gy.device.type):
        gx = x.new_empty(0)
        if needs_x:
            weight = kept if kept.numel() else None
            if weight is None:
                weight = effective_weight(plan, w0, ad, au, bd, bu, dtype) if dense else w0.to(dtype)
            gx = gy.matmul(weight)
            del weight
        g2 = gy.reshape(-1, gy.shape[-1])
        if dense and needs_weight_factors:
            gw = g2.t() @ x.reshape(-1, x.shape[-1])
            factor_grads(grads, plan, factor_precision(w0.dtype, ad.dtype), gw, w0, ad, au, bd, bu)
            del gw
        if has_bias_terms(plan) and needs_bias_factors:
            bias_grads(grads, plan, g2.sum(0, dtype=factor_precision(w0.dtype, ad.dtype)), w0, b0, cd, cu, d, e)
    out = [gx]
    for grad, factor in zip(grads, factors):
        if factor is None:
            out.append(ad.new_empty(0))
        else:
            out.append(torch.zeros_like(factor) if grad is None else grad.to(factor.dtype))
    return out


@linear_backward.register_fake
def _linear_backward_fake(gy, x, kept, w0, b0, plans, row, ad, au, bd, bu, cd, cu, d, e, needs_x, needs_w, needs_b):  # noqa: ANN001, ANN202, E501
    factors = (ad, au, bd, bu, cd, cu, d, e)
    return [x.new_empty(x.shape) if needs_x else x.new_empty(0)] + [
        ad.new_empty(0) if f is None else torch.empty_like(f) for f in factors
    ]


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (torch.library's protocol)
    x, w0, b0, plans, row, *factors = inputs
    ctx.row = row
    ctx.save_for_backward(x, output[1], w0, b0, plans, *factors)


def _backward(ctx, gy: Tensor, _gkept: Tensor) -> tuple[Optional[Tensor], ...]:  # noqa: ANN001
    x, kept, w0, b0, plans, *factors = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grads = linear_backward(gy, x, kept, w0, b0, plans, ctx.row, *factors, needs[0], any(needs[5:9]), any(needs[9:13]))
    factor_grads_ = [g if need and f is not None else None for g, f, need in zip(grads[1:], factors, needs[5:])]
    return (grads[0] if needs[0] else None, None, None, None, None, *factor_grads_)


linear.register_autograd(_backward, setup_context=_setup_context)
