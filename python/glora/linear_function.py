"""The training-time GLoRA linear op as one autograd node: ``y = x W'^T + b'`` (METHOD.md section 1).

Why a hand-written node: an eager training step of a model with many small layers is bound by the host (kernel
launches and autograd bookkeeping), not by the GPU. Built from plain ops a GLoRA layer costs 20-30 autograd
nodes and about 30 kernel launches per step, where PEFT's LoRA costs about a dozen. This node forms ``W'`` and
``b'`` with one kernel per present term (the cast to the compute dtype fused into the last one), saves only the
cast input and the compute-dtype ``W'`` (what ``F.linear`` on ``W'`` would save), and in the backward derives
every factor's gradient from the one weight gradient ``g^T x``, written straight into its slice of a zeroed
gradient when a choice uses part of a factor. Over a base already in the compute dtype (an LLM's bf16 weights,
which the plain layer saves without a copy) ``W'`` is rebuilt in the backward instead of kept, so peak memory
stays that of the plain layer.

The forward calls ``functional.effective_weight`` / ``effective_bias`` (the same arithmetic as merging): the terms
in the factors' precision (float32, or float64 for float64 factors), rounded once to the compute dtype; autocast
is off inside the node.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .choices import LORA, NONE, SCALAR, VECTOR, Choice
from .functional import effective_bias, effective_weight, fused_weight_grads, fused_weight_value, uses_fused_weight

Tensor = torch.Tensor


class _AutocastOff:
    """Autocast off by toggling the thread's flag directly: entering a ``torch.autocast`` context costs tens of
    microseconds, paid by every layer on every step."""

    __slots__ = ("device_type",)

    def __init__(self, device_type: str) -> None:
        self.device_type = device_type

    def __enter__(self) -> None:
        torch.set_autocast_enabled(self.device_type, False)

    def __exit__(self, *exc: object) -> None:
        torch.set_autocast_enabled(self.device_type, True)


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off inside the node (its casts are explicit): nothing to do when it is off; under torch.compile
    the ``torch.autocast`` context, which the compiler traces (it cannot trace the direct toggle)."""
    if not torch.is_autocast_enabled(device_type):
        return contextlib.nullcontext()
    if torch.compiler.is_compiling():
        return torch.autocast(device_type, enabled=False)
    return _AutocastOff(device_type)


def _weight(plan: tuple[Choice, ...], w0: Tensor, ad: Tensor, au: Tensor, bd: Tensor, bu: Tensor, dtype: torch.dtype, fused: bool) -> Tensor:
    """W' in ``dtype``: one Triton pass over W0 where the kernels serve (opt-in, CUDA), else the PyTorch terms."""
    if fused:
        return fused_weight_value(plan, w0, ad, au, bd, bu, dtype)
    return effective_weight(plan, w0, ad, au, bd, bu, dtype)


def _rank_mask(max_rank: int, rank: int, rows: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Ones for the first ``rank`` of ``max_rank`` columns (a 1 x R row) or rows (an R x 1 column), zeros after.

    A factor multiplied by it before a gradient product yields the whole factor's gradient, zero outside the
    slice a ``lora_<rank>`` choice uses: one kernel instead of a zeroed buffer and a copy."""
    make = _make_rank_mask if torch.compiler.is_compiling() else _cached_rank_mask  # the compiler traces it
    return make(max_rank, rank, rows, device, dtype)


def _make_rank_mask(max_rank: int, rank: int, rows: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    mask = torch.zeros(max_rank, device=device, dtype=dtype)
    mask[:rank] = 1
    return mask.view(-1, 1) if rows else mask.view(1, -1)


def _first(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A one-hot tensor of ``shape`` at its first element: ``s * _first(shape)`` is the gradient of a factor whose
    first element (a scalar choice) or, for a 1 x R shape broadcast over rows, first column (a vector) was used."""
    make = _make_first if torch.compiler.is_compiling() else _cached_first
    return make(shape, device, dtype)


def _make_first(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    one = torch.zeros(shape, device=device, dtype=dtype)
    one.view(-1)[0] = 1
    return one


_cached_rank_mask = functools.lru_cache(maxsize=None)(_make_rank_mask)
_cached_first = functools.lru_cache(maxsize=None)(_make_first)


def _masked(factor: Tensor, rank: int, rows: bool) -> Tensor:
    """``factor`` with its entries past ``rank`` zeroed (itself when the choice uses all of it)."""
    size = factor.shape[0 if rows else 1]
    return factor if rank == size else factor * _rank_mask(size, rank, rows, factor.device, factor.dtype)


def _broadcast_grad(source: Tensor, factor: Tensor, choice: Choice) -> Tensor:
    """The gradient of a down factor (or of D, E) whose first column (vector) or first element (scalar) was
    broadcast: ``source`` summed over the broadcast dimensions, placed at that column or element."""
    dtype = factor.dtype
    if factor.dim() == 1:
        return source.sum(dtype=dtype) * _first(tuple(factor.shape), factor.device, dtype)
    if choice.kind == VECTOR:
        return source.sum(1, keepdim=True, dtype=dtype) * _first((1, factor.shape[1]), factor.device, dtype)
    return source.sum(dtype=dtype) * _first(tuple(factor.shape), factor.device, dtype)


def _padded(block: Tensor, factor: Tensor) -> Tensor:
    """A block gradient of the leading rows and columns of ``factor`` (the fused kernels' output) as the whole
    factor's gradient, zero elsewhere."""
    if block.shape == factor.shape:
        return block
    return F.pad(block, (0, factor.shape[1] - block.shape[1], 0, factor.shape[0] - block.shape[0]))


class GLoRALinear(torch.autograd.Function):
    """``F.linear(x, W', b')`` for one plan. Inputs: x, W0 (out x in view of the frozen weight), b0, the plan,
    the compute dtype, then Ad, Au, Bd, Bu, Cd, Cu, D, E (None where a layer lacks them)."""

    @staticmethod
    def forward(ctx, x, w0, b0, plan, dtype, ad, au, bd, bu, cd, cu, d, e):  # noqa: D102 (see the class)
        precision = torch.promote_types(w0.dtype, ad.dtype)
        dense = plan[0].kind != NONE or plan[1].kind != NONE
        fused = dense and uses_fused_weight(plan, w0)
        with no_autocast(x.device.type):
            weight = _weight(plan, w0, ad, au, bd, bu, dtype, fused) if dense else w0.to(dtype)
            bias = effective_bias(plan, w0, b0, cd, cu, d, e, dtype)
            xc = x.to(dtype)
            y = F.linear(xc, weight, bias)
        # keep W' when the plain layer would keep a cast copy of W0 of the same size anyway (a float32 base under
        # autocast); over a base already in the compute dtype (an LLM's bf16 weights) rebuild it in the backward
        keep = not dense or w0.dtype != dtype
        ctx.plan, ctx.precision, ctx.dense, ctx.fused, ctx.dtype = plan, precision, dense, fused, dtype
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
                weight = _weight(plan, w0, ad, au, bd, bu, ctx.dtype, ctx.fused)
            gx = gy.matmul(weight) if needs[0] else None
            del weight  # weight-sized buffers are freed as soon as they are used: the backward's peak stays low
            g2 = gy.reshape(-1, gy.shape[-1])
            if ctx.dense and any(needs[5:9]):
                gw = g2.t() @ xc.reshape(-1, xc.shape[-1])
                if ctx.fused:
                    _fused_factor_grads(grads, plan, gw, w0, ad, au, bd, bu)
                else:
                    factor_grads(grads, plan, precision, gw, w0, ad, au, bd, bu)
                del gw
            if has_bias_terms(plan) and any(needs[9:13]):
                bias_grads(grads, plan, g2.sum(0, dtype=precision), w0, b0, cd, cu, d, e)
        return (gx, None, None, None, None, *grads)


def has_bias_terms(plan: tuple[Choice, ...]) -> bool:
    """Whether C, D or E is present (the plan changes the bias)."""
    return plan[2].kind != NONE or plan[3].kind != NONE or plan[4].kind != NONE


def bias_grads(grads: list, plan: tuple[Choice, ...], gb: Tensor, w0: Tensor, b0: Optional[Tensor],
               cd: Optional[Tensor], cu: Optional[Tensor], d: Optional[Tensor], e: Optional[Tensor]) -> None:
    """Cd, Cu, D, E's gradients (slots 4-7 of ``grads``) from ``gb``, the gradient of ``b'`` in the factors'
    precision."""
    c, dc, ec = plan[2], plan[3], plan[4]
    if dc.kind != NONE:
        grads[6] = gb * b0 if dc.kind == VECTOR else _broadcast_grad(gb * b0, d, dc)
    if ec.kind != NONE:
        grads[7] = gb if ec.kind == VECTOR else _broadcast_grad(gb, e, ec)
    if c.kind != NONE:
        gc = torch.mv((w0 if w0.dtype == gb.dtype else w0.to(gb.dtype)).t(), gb)
        if c.kind == LORA:
            grads[4] = torch.outer(gc, _masked(cu, c.rank, rows=True)[:, 0])
            grads[5] = (_masked(cd, c.rank, rows=False).t() @ gc).unsqueeze(1)
        else:
            grads[4] = gc.unsqueeze(1) * _first((1, cd.shape[1]), cd.device, cd.dtype)


def factor_grads(grads: list, plan: tuple[Choice, ...], precision: torch.dtype, gw: Tensor, w0: Tensor,
                  ad: Tensor, au: Tensor, bd: Tensor, bu: Tensor) -> None:
    """Ad, Au, Bd, Bu's gradients from ``gw``, the gradient of ``W'`` (``W0 * gw`` for A's)."""
    a, b = plan[0], plan[1]
    if a.kind != NONE:
        ga = torch.mul(gw, w0, out=torch.empty(gw.shape, dtype=precision, device=gw.device))
        if a.kind == LORA:
            grads[0] = ga @ _masked(au, a.rank, rows=True).t()
            grads[1] = _masked(ad, a.rank, rows=False).t() @ ga
        else:
            grads[0] = _broadcast_grad(ga, ad, a)
        del ga
    if b.kind == LORA:
        gw32 = gw.to(precision)
        grads[2] = gw32 @ _masked(bu, b.rank, rows=True).t()
        grads[3] = _masked(bd, b.rank, rows=False).t() @ gw32
    elif b.kind != NONE:
        grads[2] = _broadcast_grad(gw, bd, b)


def _fused_factor_grads(grads: list, plan: tuple[Choice, ...], gw: Tensor, w0: Tensor,
                        ad: Tensor, au: Tensor, bd: Tensor, bu: Tensor) -> None:
    """As ``factor_grads``, from the Triton kernel's one pass (which returns the used slices' gradients)."""
    gpd, gpu, gqd, gqu = fused_weight_grads(plan, gw, w0, ad, au, bd, bu)
    for i, choice, down, up, fd, fu in ((0, plan[0], gpd, gpu, ad, au), (2, plan[1], gqd, gqu, bd, bu)):
        if choice.kind == SCALAR:
            grads[i] = _broadcast_grad(down, fd, choice)
        elif choice.kind != NONE:  # a lora slice, or a vector's one column
            grads[i] = _padded(down, fd)
            grads[i + 1] = None if up is None else _padded(up, fu)


def glora_linear(x: Tensor, w0: Tensor, b0: Optional[Tensor], plan: tuple[Choice, ...], dtype: torch.dtype, factors: tuple[Optional[Tensor], ...]) -> Tensor:
    """``y = x W'^T + b'`` for ``plan`` (a linear or transposed Conv1D weight viewed as out x in)."""
    return GLoRALinear.apply(x, w0, b0, plan, dtype, *factors)
