"""The GLoRA arithmetic of METHOD.md section 1, shared by the layer's forward and by merging.

    W' = W0 + W0 * A + B          b' = b0 + b0 * D + E + W0 @ C

Everything is computed in ``W0``'s dtype; the layer passes ``W0`` already cast to the compute dtype (bf16 under
autocast), so ``W'`` needs no further cast and the factors are cast once each. Absent terms cost nothing: no zero
tensors are made and no operation runs for them. The forward always uses the
materialised ``W'`` when A or B is present: on a GPU the weight is far smaller than the activations, so forming
``W'`` (a few weight-sized operations and the weight-gradient product that full fine-tuning also pays) is cheaper
than applying vector or scalar terms to every activation. Plain autograd ops are used throughout; their
backward runs in C++, which keeps the per-layer launch overhead low.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import kernels
from .choices import NONE, SCALAR, VECTOR, Choice

Tensor = torch.Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a base operation runs in: the autocast dtype when autocast is on, else the input's."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def factor(down: Tensor, up: Tensor, choice: Choice, dtype: torch.dtype) -> Optional[Tensor]:
    """A or B broadcastable to out x in, in ``dtype``: ``lora_r`` a product, ``vector`` a column, ``scalar`` 0-d."""
    if choice.kind == NONE:
        return None
    if choice.kind == SCALAR:
        return _as(down[0, 0], dtype)
    if choice.kind == VECTOR:
        return _as(down[:, :1], dtype)
    r = choice.rank
    return _as(down[:, :r] @ up[:r, :], dtype)


def effective_weight(plan: tuple[Choice, ...], w0: Tensor, ad: Tensor, au: Tensor, bd: Tensor, bu: Tensor) -> Tensor:
    """``W' = W0 + W0 * A + B`` as an out x in matrix in ``w0``'s dtype; ``W0`` itself when A and B are absent."""
    a = factor(ad, au, plan[0], w0.dtype)
    b = factor(bd, bu, plan[1], w0.dtype)
    if b is not None:
        base = w0 + b
        return base if a is None else torch.addcmul(base, w0, a)
    return w0 if a is None else torch.addcmul(w0, w0, a)


def _low_rank(down: Tensor, up: Tensor, choice: Choice, ones: Tensor) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """A or B as low-rank factors for the fused kernel: a vector is its column times a row of ones."""
    if choice.kind == NONE:
        return None, None
    if choice.kind == VECTOR:
        return down[:, :1], ones
    if choice.kind == SCALAR:
        return down[:1, :1].expand(down.shape[0], 1), ones
    return down[:, : choice.rank], up[: choice.rank, :]


def uses_fused_weight(plan: tuple[Choice, ...], w0: Tensor) -> bool:
    """Whether ``fused_weight`` serves this configuration (A or B present, CUDA, Triton, rank within range)."""
    a, b = plan[0], plan[1]
    if a.kind == NONE and b.kind == NONE:
        return False
    return kernels.available(w0) and max(a.rank, b.rank) <= kernels.MAX_RANK


def fused_weight(plan: tuple[Choice, ...], w0: Tensor, ad: Tensor, au: Tensor, bd: Tensor, bu: Tensor, dtype: torch.dtype, ones: Tensor) -> Tensor:
    """``W'`` from the stored ``W0`` straight into ``dtype`` with one Triton kernel (and one for its backward)."""
    pd, pu = _low_rank(ad, au, plan[0], ones)
    qd, qu = _low_rank(bd, bu, plan[1], ones)
    return kernels.FusedGLoRAWeight.apply(w0, pd, pu, qd, qu, dtype)


def effective_bias(
    plan: tuple[Choice, ...],
    w0: Tensor,
    b0: Optional[Tensor],
    cd: Optional[Tensor],
    cu: Optional[Tensor],
    d: Optional[Tensor],
    e: Optional[Tensor],
    dtype: Optional[torch.dtype] = None,
) -> Optional[Tensor]:
    """``b' = b0 + b0 * D + E + W0 @ C`` in ``dtype`` (default ``w0``'s); ``b0`` itself when C, D, E are absent."""
    c_choice, d_choice, e_choice = plan[2], plan[3], plan[4]
    dtype = dtype or w0.dtype
    bias = b0
    if d_choice.kind != NONE:
        bias = torch.addcmul(b0, b0, _as(d if d_choice.kind == VECTOR else d[0], dtype))
    if e_choice.kind != NONE:
        ev = _as(e if e_choice.kind == VECTOR else e[0], dtype)
        bias = ev.expand(w0.shape[0]) if bias is None else bias + ev
    if c_choice.kind != NONE:
        c = _as(cd[:, 0] if c_choice.kind == VECTOR else (cd[:, : c_choice.rank] @ cu[: c_choice.rank, 0]), dtype)
        wc = _as(w0, dtype)
        bias = torch.mv(wc, c) if bias is None else torch.addmv(bias, wc, c)
    return bias
