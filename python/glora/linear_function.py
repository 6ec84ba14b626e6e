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
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .choices import LORA, NONE, SCALAR, VECTOR, Choice
from .functional import effective_bias, effective_weight, fused_weight_grads, fused_weight_value, uses_fused_weight

Tensor = torch.Tensor


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off inside the node (its casts are explicit); entering a context only when autocast is on."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _weight(plan: tuple[Choice, ...], w0: Tensor, ad: Tensor, au: Tensor, bd: Tensor, bu: Tensor, dtype: torch.dtype, fused: bool) -> Tensor:
    """W' in ``dtype``: one Triton pass over W0 where the kernels serve (opt-in, CUDA), else the PyTorch terms."""
    if fused:
        return fused_weight_value(plan, w0, ad, au, bd, bu, dtype)
    return effective_weight(plan, w0, ad, au, bd, bu, dtype)


class _Zeroed:
    """Zeroed gradients for the factors a choice uses only part of, all carved from one buffer (one fill per
    layer and step instead of one per factor)."""

    def __init__(self, factors: tuple[Optional[Tensor], ...]) -> None:
        self.factors = factors
        self.flat: Optional[Tensor] = None

    def __getitem__(self, i: int) -> Tensor:
        if self.flat is None:
            self.flat = self.factors[0].new_zeros(sum(f.numel() for f in self.factors if f is not None))
        start = sum(f.numel() for f in self.factors[:i] if f is not None)
        factor = self.factors[i]
        return self.flat[start : start + factor.numel()].view(factor.shape)

    def slice(self, i: int, block: Tensor, rank: int, up: bool = False) -> Tensor:
        """The gradient of factor ``i`` from that of its lora slice (rows of an up factor, else columns)."""
        if block.shape == self.factors[i].shape:
            return block
        full = self[i]
        (full[:rank] if up else full[:, :rank]).copy_(block)
        return full

    def summed(self, i: int, source: Tensor, choice: Choice) -> Tensor:
        """The gradient of factor ``i`` when its first column (vector) or first element (scalar) was broadcast:
        ``source`` summed over the broadcast dimensions, written in place by one reduction."""
        full = self[i]
        if full.dim() == 1:
            torch.sum(source, 0, keepdim=True, dtype=full.dtype, out=full[:1])
        elif choice.kind == VECTOR:
            torch.sum(source, 1, keepdim=True, dtype=full.dtype, out=full[:, :1])
        else:
            torch.sum(source, (0, 1), keepdim=True, dtype=full.dtype, out=full[:1, :1])
        return full


class GLoRALinear(torch.autograd.Function):
    """``F.linear(x, W', b')`` for one plan. Inputs: x, W0 (out x in view of the frozen weight), b0, the plan,
    the compute dtype, then Ad, Au, Bd, Bu, Cd, Cu, D, E (None where a layer lacks them)."""

    @staticmethod
    def forward(ctx, x, w0, b0, plan, dtype, ad, au, bd, bu, cd, cu, d, e):  # noqa: D102 (see the class)
        precision = torch.promote_types(w0.dtype, ad.dtype)
        dense = plan[0].kind != NONE or plan[1].kind != NONE
        fused = dense and uses_fused_weight(plan, w0)
        with _no_autocast(x.device.type):
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
        a, b, c, dc, ec = plan
        grads: list[Optional[Tensor]] = [None] * 8
        zeroed = _Zeroed((ad, au, bd, bu, cd, cu, d, e))
        with _no_autocast(gy.device.type):
            if needs[0] and weight is None:
                weight = _weight(plan, w0, ad, au, bd, bu, ctx.dtype, ctx.fused)
            gx = gy.matmul(weight) if needs[0] else None
            del weight  # weight-sized buffers are freed as soon as they are used: the backward's peak stays low
            g2 = gy.reshape(-1, gy.shape[-1])
            if ctx.fused and any(needs[5:9]):
                gpd, gpu, gqd, gqu = fused_weight_grads(plan, g2.t() @ xc.reshape(-1, xc.shape[-1]), w0, ad, au, bd, bu)
                for i, choice, down, up in ((0, a, gpd, gpu), (2, b, gqd, gqu)):
                    if choice.kind == SCALAR:
                        grads[i] = zeroed.summed(i, down, choice)
                    elif choice.kind != NONE:  # a lora slice, or a vector's one column
                        grads[i] = zeroed.slice(i, down, max(choice.rank, 1))
                        grads[i + 1] = None if up is None else zeroed.slice(i + 1, up, choice.rank, up=True)
            elif ctx.dense and any(needs[5:9]):
                gw = g2.t() @ xc.reshape(-1, xc.shape[-1])
                if a.kind != NONE:
                    ga = torch.mul(gw, w0, out=torch.empty(gw.shape, dtype=precision, device=gw.device))
                    if a.kind == LORA:
                        grads[0] = zeroed.slice(0, ga @ au[: a.rank].t(), a.rank)
                        grads[1] = zeroed.slice(1, ad[:, : a.rank].t() @ ga, a.rank, up=True)
                    else:
                        grads[0] = zeroed.summed(0, ga, a)
                    del ga
                if b.kind == LORA:
                    gw32 = gw.to(precision)
                    grads[2] = zeroed.slice(2, gw32 @ bu[: b.rank].t(), b.rank)
                    grads[3] = zeroed.slice(3, bd[:, : b.rank].t() @ gw32, b.rank, up=True)
                    del gw32
                elif b.kind != NONE:
                    grads[2] = zeroed.summed(2, gw, b)
                del gw
            if (c.kind != NONE or dc.kind != NONE or ec.kind != NONE) and any(needs[9:13]):
                gb = g2.sum(0, dtype=precision)
                if dc.kind != NONE:
                    grads[6] = gb * b0 if dc.kind == VECTOR else zeroed.summed(6, gb * b0, dc)
                if ec.kind != NONE:
                    grads[7] = gb if ec.kind == VECTOR else zeroed.summed(7, gb, ec)
                if c.kind != NONE:
                    w = w0 if w0.dtype == precision else w0.to(precision)
                    gc = torch.mv(w.t(), gb)
                    if c.kind == LORA:
                        grads[4] = zeroed.slice(4, torch.outer(gc, cu[: c.rank, 0]), c.rank)
                        grads[5] = zeroed.slice(5, (cd[:, : c.rank].t() @ gc).unsqueeze(1), c.rank, up=True)
                    else:
                        grads[4] = zeroed.slice(4, gc.unsqueeze(1), 1)
        return (gx, None, None, None, None, *grads)


def glora_linear(x: Tensor, w0: Tensor, b0: Optional[Tensor], plan: tuple[Choice, ...], dtype: torch.dtype, factors: tuple[Optional[Tensor], ...]) -> Tensor:
    """``y = x W'^T + b'`` for ``plan`` (a linear or transposed Conv1D weight viewed as out x in)."""
    return GLoRALinear.apply(x, w0, b0, plan, dtype, *factors)
