"""The GLoRA arithmetic of ``docs/method.md`` ("One layer"), shared by the layer's forward and by merging.

    W' = W0 + W0 * A + B          b' = b0 + W0 @ C + b0 * D + E

The terms are formed in the factors' precision (float32) from the stored ``W0`` and cast once to the compute
dtype. Absent terms cost nothing: no zero tensors are made and no operation runs for them. Merging and
convolution layers use these functions under plain autograd; linear layers train through
``linear_function.GLoRALinearFunction``, which calls them inside one autograd node.
"""

from __future__ import annotations

from typing import Optional

import torch

from glora.layers.choices import LORA, NONE, SCALAR, VECTOR, Choice

Tensor = torch.Tensor


def factor(down: Tensor, up: Tensor, choice: Choice) -> Optional[Tensor]:
    """A or B broadcastable to out x in: ``lora_r`` a product, ``vector`` a column, ``scalar`` a 1 x 1 block (not a
    0-d tensor, which would not lift a low-precision ``W0`` to the factors' precision in type promotion)."""
    if choice.kind == NONE:
        return None
    if choice.kind == SCALAR:
        return down[:1, :1]
    if choice.kind == VECTOR:
        return down[:, :1]
    down, up = lora_slices(down, up, choice.rank)
    return down @ up


def lora_slices(down: Tensor, up: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """The first ``rank`` columns of ``down`` and rows of ``up`` (the factors themselves at full rank: the training
    forward runs this for every layer, and a slice is a call the host pays for even when it selects everything)."""
    if rank == up.shape[0]:
        return down, up
    return down[:, :rank], up[:rank]


def effective_weight(
    plan: tuple[Choice, ...],
    w0: Tensor,
    ad: Tensor,
    au: Tensor,
    bd: Tensor,
    bu: Tensor,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """``W' = W0 + W0 * A + B`` as an out x in matrix (type promotion: float32 factors give a float32 ``W'``);
    ``W0`` itself when A and B are absent.

    With ``dtype`` the result is rounded once to it and built without autograd (merging, the per-layer node, the
    batched weights): the terms accumulate in place in one buffer of the factors' precision, which a low-precision
    ``W0`` enters exactly, so no copy of ``W0`` in that precision is made.
    """
    if dtype is not None:
        return _rounded_weight(plan, w0, ad, au, bd, bu, dtype)
    a = factor(ad, au, plan[0])
    b = factor(bd, bu, plan[1])
    if b is not None:
        base = w0 + b
        return base if a is None else torch.addcmul(base, w0, a)
    return w0 if a is None else torch.addcmul(w0, w0, a)


def _rounded_weight(
    plan: tuple[Choice, ...], w0: Tensor, ad: Tensor, au: Tensor, bd: Tensor, bu: Tensor, dtype: torch.dtype
) -> Tensor:
    a_choice, b_choice = plan[0], plan[1]
    delta = None
    if a_choice.kind != NONE:
        a = factor(ad, au, a_choice)
        assert a is not None  # factor() is None only for NONE
        delta = a.mul_(w0) if a_choice.kind == LORA else torch.mul(w0, a)
    if b_choice.kind == LORA:
        bd, bu = lora_slices(bd, bu, b_choice.rank)
        delta = bd @ bu if delta is None else delta.addmm_(bd, bu)
    elif b_choice.kind != NONE:
        b = factor(bd, bu, b_choice)
        assert b is not None  # factor() is None only for NONE
        delta = b.expand(w0.shape) if delta is None else delta.add_(b)
    if delta is None:
        return w0.to(dtype)
    return torch.add(w0, delta, out=torch.empty(w0.shape, dtype=dtype, device=w0.device))


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
    """``b' = b0 + W0 @ C + b0 * D + E`` (type promotion as for ``W'``); ``b0`` itself when C, D, E are absent.

    With ``dtype`` the result is rounded to it, by the last elementwise term when there is one (no extra cast);
    that form writes into fresh outputs, so it is for use without autograd (inside the training nodes).
    """
    c_choice, d_choice, e_choice = plan[2], plan[3], plan[4]
    last = "E" if e_choice.kind != NONE else "D" if d_choice.kind != NONE else None
    bias = b0
    if c_choice.kind != NONE:
        assert cd is not None and cu is not None  # a layer offers C only when it has C's factors
        if c_choice.kind == VECTOR:
            c = cd[:, 0]
        else:
            cd_r, cu_r = lora_slices(cd, cu, c_choice.rank)
            c = torch.mv(cd_r, cu_r[:, 0])
        w = w0 if w0.dtype == c.dtype else w0.to(c.dtype)
        bias = torch.mv(w, c) if b0 is None else torch.addmv(b0 if b0.dtype == c.dtype else b0.to(c.dtype), w, c)
    if d_choice.kind != NONE:
        # a layer offers D only when it has a bias (so C's term, if any, made ``bias`` from it)
        assert d is not None and b0 is not None and bias is not None
        out = _fresh(w0, dtype) if last == "D" else None
        bias = torch.addcmul(bias, b0, d if d_choice.kind == VECTOR else d[:1], out=out)  # [:1]: see factor()
    if e_choice.kind != NONE:
        assert e is not None  # a layer offers E only when it has E's factor
        ev = e if e_choice.kind == VECTOR else e[:1]
        bias = (
            ev.expand(w0.shape[0])
            if bias is None
            else torch.add(bias, ev, out=_fresh(w0, dtype) if last == "E" else None)
        )
    return bias if dtype is None or bias is None or bias.dtype == dtype else bias.to(dtype)


def _fresh(w0: Tensor, dtype: Optional[torch.dtype]) -> Optional[Tensor]:
    """An empty bias-sized output in ``dtype`` for the last bias term to write (rounding in the same kernel)."""
    return None if dtype is None else torch.empty(w0.shape[0], dtype=dtype, device=w0.device)
