"""The fused forward and backward of a linear GLoRA layer, as one autograd node.

Plain autograd records a dozen small nodes per layer (factor products, casts, bias terms) and, under autocast,
re-casts every operand on every use; on a GPU the training step then waits on the CPU. This function computes
exactly the same values with the fewest kernels:

- dense path (A or B is ``lora_r``): ``W' = W0 + W0 * A + B`` is formed in the factors' precision, cast once to
  the compute dtype and used in one GEMM; it is NOT kept for the backward pass, which recomputes it. The
  backward forms the weight-sized gradient ``g^T x`` once (as full fine-tuning does) and reduces it onto the
  factors with skinny products.
- factorised path (A, B in vector / scalar / none): ``y = (x W0^T) * (1 + a) + sum(x) * b + b'``; nothing
  weight-sized is allocated and ``W0`` receives no gradient product.

The compute dtype is the autocast dtype when autocast is on, else the input's dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .choices import NONE, SCALAR, VECTOR, Choice

Tensor = torch.Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def factor(down: Optional[Tensor], up: Optional[Tensor], choice: Choice) -> Optional[Tensor]:
    """A or B broadcastable to out x in: ``lora_r`` a product, ``vector`` a column, ``scalar`` a 0-d tensor."""
    if choice.kind == NONE:
        return None
    if choice.kind == SCALAR:
        return down[0, 0]
    if choice.kind == VECTOR:
        return down[:, :1]
    return down[:, : choice.rank] @ up[: choice.rank, :]


def bias_vector(vec: Optional[Tensor], choice: Choice) -> Optional[Tensor]:
    """D or E: the vector, its first element, or None."""
    if choice.kind == NONE:
        return None
    return vec[:1] if choice.kind == SCALAR else vec


def c_vector(cd: Optional[Tensor], cu: Optional[Tensor], choice: Choice) -> Optional[Tensor]:
    """C as a vector of length in."""
    if choice.kind == NONE:
        return None
    if choice.kind == VECTOR:
        return cd[:, 0]
    return (cd[:, : choice.rank] @ cu[: choice.rank, :]).squeeze(1)


def effective_bias(plan: tuple[Choice, ...], w0: Tensor, b0: Optional[Tensor], cd, cu, d, e, out_features: int) -> Optional[Tensor]:
    """``b' = b0 + b0 * D + E + W0 @ C``, or ``b0`` itself when C, D and E are absent."""
    _, _, c_choice, d_choice, e_choice = plan
    total = None
    dv = bias_vector(d, d_choice)
    if dv is not None:
        total = b0 * dv
    ev = bias_vector(e, e_choice)
    if ev is not None:
        ev = ev.expand(out_features)
        total = ev if total is None else total + ev
    cv = c_vector(cd, cu, c_choice)
    if cv is not None:
        wc = torch.mv(w0.to(cv.dtype), cv)
        total = wc if total is None else total + wc
    if total is None:
        return b0
    return total if b0 is None else b0 + total


def effective_weight(plan: tuple[Choice, ...], w0: Tensor, ad, au, bd, bu, dtype: torch.dtype) -> Tensor:
    """``W' = W0 + W0 * A + B`` in ``dtype`` (the factors' precision or wider)."""
    a_choice, b_choice = plan[0], plan[1]
    w = w0.to(dtype)
    if b_choice.kind == "lora":
        w = torch.addmm(w, bd[:, : b_choice.rank], bu[: b_choice.rank, :])
    elif b_choice.kind != NONE:
        w = w + factor(bd, bu, b_choice)
    a = factor(ad, au, a_choice)
    return w if a is None else torch.addcmul(w, w0.to(dtype), a)


def is_dense(plan: tuple[Choice, ...]) -> bool:
    return plan[0].kind == "lora" or plan[1].kind == "lora"


class GLoRALinearFunction(torch.autograd.Function):
    """``y = x W'^T + b'`` for a linear-kind GLoRA layer; inputs after ``plan`` may be None when unused."""

    @staticmethod
    def forward(ctx, x: Tensor, w0: Tensor, b0: Optional[Tensor], plan: tuple[Choice, ...], ad, au, bd, bu, cd, cu, d, e) -> Tensor:
        cdt = compute_dtype(x)
        pdt = ad.dtype
        out_features = w0.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(cdt)
            bias = effective_bias(plan, w0, b0, cd, cu, d, e, out_features)
            bias_c = None if bias is None else bias.to(cdt)
            saved_z = saved_s = None
            if is_dense(plan):
                w = effective_weight(plan, w0, ad, au, bd, bu, torch.promote_types(pdt, w0.dtype))
                y = F.linear(xc, w.to(cdt), bias_c)
            else:
                y = F.linear(xc, w0.to(cdt), bias_c)
                a = factor(ad, au, plan[0])
                if a is not None:
                    saved_z = y if bias_c is None else y - bias_c
                    y = torch.addcmul(y, saved_z, a.reshape(-1).to(cdt))
                b = factor(bd, bu, plan[1])
                if b is not None:
                    saved_s = xc.sum(dim=-1, keepdim=True)
                    y = torch.addcmul(y, saved_s, b.reshape(-1).to(cdt))
        ctx.plan = plan
        ctx.cdt = cdt
        ctx.has_b0 = b0 is not None
        ctx.save_for_backward(xc, w0, b0, ad, au, bd, bu, cd, cu, d, e, saved_z, saved_s)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        xc, w0, b0, ad, au, bd, bu, cd, cu, d, e, z, s = ctx.saved_tensors
        plan, cdt = ctx.plan, ctx.cdt
        a_choice, b_choice, c_choice, d_choice, e_choice = plan
        pdt = ad.dtype
        out_features, in_features = w0.shape
        grads = dict.fromkeys(("x", "ad", "au", "bd", "bu", "cd", "cu", "d", "e"))
        with torch.autocast(g.device.type, enabled=False):
            g = g.to(cdt)
            g2 = g.reshape(-1, out_features)
            gb = g2.sum(0, dtype=pdt)
            if is_dense(plan):
                w = effective_weight(plan, w0, ad, au, bd, bu, torch.promote_types(pdt, w0.dtype))
                if ctx.needs_input_grad[0]:
                    grads["x"] = (g2 @ w.to(cdt)).reshape(xc.shape)
                gw = (g2.t() @ xc.reshape(-1, in_features)).to(pdt)
                _reduce_weight_grad(grads, "a", gw * w0.to(pdt), ad, au, a_choice)
                _reduce_weight_grad(grads, "b", gw, bd, bu, b_choice)
            else:
                a = factor(ad, au, a_choice)
                b = factor(bd, bu, b_choice)
                if a is not None:
                    prod = (g2 * z.reshape(-1, out_features)).sum(0, dtype=pdt)
                    grads["ad"] = _scatter_column(ad, prod if a_choice.kind == VECTOR else prod.sum())
                if b is not None:
                    prod = (g2 * s.reshape(-1, 1)).sum(0, dtype=pdt)
                    grads["bd"] = _scatter_column(bd, prod if b_choice.kind == VECTOR else prod.sum())
                if ctx.needs_input_grad[0]:
                    gx_in = g2 if a is None else g2 * (1 + a.reshape(-1)).to(cdt)
                    gx = gx_in @ w0.to(cdt)
                    if b is not None:
                        gx = gx + (g2 @ b.reshape(-1).expand(out_features).to(cdt)).unsqueeze(1)
                    grads["x"] = gx.reshape(xc.shape)
            _bias_grads(grads, plan, gb, w0, b0, cd, cu, d, e, pdt)
        return (grads["x"], None, None, None, grads["ad"], grads["au"], grads["bd"], grads["bu"], grads["cd"], grads["cu"], grads["d"], grads["e"])


def _scatter_column(down: Tensor, value: Tensor) -> Tensor:
    """Gradient of the stored down factor when only its first column (vector) or element (scalar) was used."""
    grad = torch.zeros_like(down)
    if value.dim() == 0:
        grad[0, 0] = value
    else:
        grad[:, 0] = value
    return grad


def _reduce_weight_grad(grads: dict, name: str, gfull: Tensor, down: Tensor, up: Tensor, choice: Choice) -> None:
    """Push the gradient of a materialised A or B (out x in) onto its stored factors."""
    if choice.kind == NONE:
        return
    if choice.kind == SCALAR:
        grads[name + "d"] = _scatter_column(down, gfull.sum())
        return
    if choice.kind == VECTOR:
        grads[name + "d"] = _scatter_column(down, gfull.sum(1))
        return
    r = choice.rank
    gd = gfull @ up[:r, :].t()
    gu = down[:, :r].t() @ gfull
    if r == down.shape[1]:
        grads[name + "d"], grads[name + "u"] = gd, gu
    else:
        grads[name + "d"] = torch.zeros_like(down)
        grads[name + "d"][:, :r] = gd
        grads[name + "u"] = torch.zeros_like(up)
        grads[name + "u"][:r, :] = gu


def _bias_grads(grads: dict, plan, gb: Tensor, w0: Tensor, b0, cd, cu, d, e, pdt) -> None:
    """Gradients of C, D, E from the gradient ``gb`` of the effective bias."""
    _, _, c_choice, d_choice, e_choice = plan
    if d_choice.kind != NONE:
        gd = gb * b0.to(pdt)
        grads["d"] = gd if d_choice.kind == VECTOR else _first(d, gd.sum())
    if e_choice.kind != NONE:
        grads["e"] = gb if e_choice.kind == VECTOR else _first(e, gb.sum())
    if c_choice.kind != NONE:
        gc = torch.mv(w0.to(pdt).t(), gb)
        if c_choice.kind == VECTOR:
            grads["cd"] = _scatter_column(cd, gc)
        else:
            r = c_choice.rank
            grads["cd"] = torch.zeros_like(cd)
            grads["cd"][:, :r] = torch.outer(gc, cu[:r, 0])
            grads["cu"] = torch.zeros_like(cu)
            grads["cu"][:r, 0] = cd[:, :r].t() @ gc


def _first(vec: Tensor, value: Tensor) -> Tensor:
    grad = torch.zeros_like(vec)
    grad[0] = value
    return grad
