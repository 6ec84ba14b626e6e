"""The gradients of the factors A..E from those of ``W'`` and ``b'`` (``docs/method.md``, "One layer"), shared
by the per-layer node (``linear_function``) and the node that builds every layer's weights (``batched_weights``).

A factor a choice uses only part of (a ``lora_r`` slice, a vector's first column, a scalar's first element) gets a
gradient of its full shape, zero elsewhere: slices by masking the other factor before the product, broadcast
choices by a one-hot placement, one kernel each instead of a zeroed buffer and a copy.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch

from glora.layers.choices import LORA, NONE, SCALAR, VECTOR, Choice

Tensor = torch.Tensor


def _rank_mask(max_rank: int, rank: int, rows: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Ones for the first ``rank`` of ``max_rank`` columns (a 1 x R row) or rows (an R x 1 column), zeros after.

    A factor multiplied by it before a gradient product yields the whole factor's gradient, zero outside the
    slice a ``lora_<rank>`` choice uses: one kernel instead of a zeroed buffer and a copy."""
    return _constant(_make_rank_mask, max_rank, rank, rows, device, dtype)


def _first(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A one-hot tensor of ``shape`` at its first element: ``s * _first(shape)`` is the gradient of a factor whose
    first element (a scalar choice) or, for a 1 x R shape broadcast over rows, first column (a vector) was used."""
    return _constant(_make_first, shape, device, dtype)


def _make_rank_mask(max_rank: int, rank: int, rows: bool, device: torch.device, dtype: torch.dtype) -> Tensor:
    mask = torch.zeros(max_rank, device=device, dtype=dtype)
    mask[:rank] = 1
    return mask.view(-1, 1) if rows else mask.view(1, -1)


def _make_first(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    one = torch.zeros(shape, device=device, dtype=dtype)
    one.view(-1)[0] = 1
    return one


def _constant(make: Callable[..., Tensor], *key: Any) -> Tensor:
    """``make(*key)``, made once per key; made inline while torch.compile traces (it ignores such caches)."""
    return make(*key) if torch.compiler.is_compiling() else _cached(make, *key)


@functools.cache
def _cached(make: Callable[..., Tensor], *key: Any) -> Tensor:
    return make(*key)


def _masked(factor: Tensor, rank: int, rows: bool) -> Tensor:
    """``factor`` with its entries past ``rank`` zeroed (itself when the choice uses all of it)."""
    size = factor.shape[0 if rows else 1]
    return factor if rank == size else factor * _rank_mask(size, rank, rows, factor.device, factor.dtype)


def _broadcast_grad(source: Tensor, factor: Tensor, choice: Choice) -> Tensor:
    """The gradient of a down factor (or of D, E) whose first column (vector) or first element (scalar) was
    broadcast: ``source`` summed over the broadcast dimensions, placed at that column or element. A source in the
    factor's dtype is summed row by row and placed in one product with a column selector."""
    dtype = factor.dtype
    if choice.kind == VECTOR and factor.dim() == 2:
        if source.dtype == dtype:
            return source @ _constant(_make_column_selector, source.shape[1], factor.shape[1], factor.device, dtype)
        return source.sum(1, keepdim=True, dtype=dtype) * _first((1, factor.shape[1]), factor.device, dtype)
    return source.sum(dtype=dtype) * _first(tuple(factor.shape), factor.device, dtype)


def _make_column_selector(rows: int, columns: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A rows x columns matrix of zeros with a first column of ones: ``m @ selector`` puts the row sums of ``m``
    in the first column."""
    selector = torch.zeros(rows, columns, device=device, dtype=dtype)
    selector[:, 0] = 1
    return selector


def bias_grads(
    grads: list,
    plan: tuple[Choice, ...],
    gb: Tensor,
    w0: Tensor,
    b0: Optional[Tensor],
    cd: Optional[Tensor],
    cu: Optional[Tensor],
    d: Optional[Tensor],
    e: Optional[Tensor],
) -> None:
    """Cd, Cu, D, E's gradients (slots 4-7 of ``grads``) from ``gb``, the gradient of ``b'`` in the factors'
    precision."""
    c, dc, ec = plan[2], plan[3], plan[4]
    if dc.kind == VECTOR:
        assert b0 is not None  # a layer offers D only when it has a bias
        grads[6] = gb * b0
    elif dc.kind == SCALAR:
        assert b0 is not None and d is not None  # a layer offers D only when it has a bias
        total = torch.dot(gb, b0) if b0.dtype == gb.dtype else (gb * b0).sum()
        grads[6] = total * _first(tuple(d.shape), d.device, d.dtype)
    if ec.kind != NONE:
        assert e is not None  # a layer offers E only when it has E's factor
        grads[7] = gb if ec.kind == VECTOR else _broadcast_grad(gb, e, ec)
    if c.kind != NONE:
        assert cd is not None and cu is not None  # a layer offers C only when it has C's factors
        gc = torch.mv((w0 if w0.dtype == gb.dtype else w0.to(gb.dtype)).t(), gb)
        if c.kind == LORA:
            grads[4] = torch.outer(gc, _masked(cu, c.rank, rows=True)[:, 0])
            grads[5] = (_masked(cd, c.rank, rows=False).t() @ gc).unsqueeze(1)
        else:
            grads[4] = gc.unsqueeze(1) * _first((1, cd.shape[1]), cd.device, cd.dtype)


def factor_grads(
    grads: list,
    plan: tuple[Choice, ...],
    precision: torch.dtype,
    gw: Tensor,
    w0: Tensor,
    ad: Tensor,
    au: Tensor,
    bd: Tensor,
    bu: Tensor,
) -> None:
    """Ad, Au, Bd, Bu's gradients from ``gw``, the gradient of ``W'`` (``W0 * gw`` for A's)."""
    a, b = plan[0], plan[1]
    if a.kind != NONE:
        # W0 * gw in the factors' precision: type promotion gives it when W0 is in it, else an output of that dtype
        ga = (
            gw * w0
            if w0.dtype == precision
            else torch.mul(gw, w0, out=torch.empty(gw.shape, dtype=precision, device=gw.device))
        )
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
