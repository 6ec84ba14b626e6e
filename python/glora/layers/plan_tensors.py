"""Plans entering a compiled forward as tensors, so that supernet training under ``torch.compile`` runs one graph
whatever paths a step draws (``docs/method.md``, "Supernet training").

Eagerly a layer branches on its plan in Python, which suits eager execution (no work for absent terms) but would
make ``torch.compile`` specialise the graph on every layer's plan: a recompilation for each new path. Here a
plan is a *code*, a ``5 x (R + 2)`` tensor, one row per gene: the first R columns are a ``lora_r`` choice's rank
mask (ones on the first r), column R flags ``vector`` and column R + 1 flags ``scalar``; ``none`` is a row of
zeros. The compiled forward forms every term a layer offers, each scaled by its part of the code:

    A = (Ad * m_A) @ Au + v_A * Ad[:, :1] + s_A * Ad[:1, :1]        (B alike; C = (Cd * m_C) @ Cu + v_C * Cd[:, :1])
    D = v_D * D + s_D * D[:1]                                        (E alike)

which is the plan's ``W'`` and ``b'`` exactly (the other terms are zero), and whose gradients are the plan's: zero
outside the slices the plan uses. A factor the plan does not use at all gets a zero gradient here where eager
execution gives it none; :func:`unused_factors` names them, so a trainer can drop those gradients (AdamW then
skips the factor, as eagerly).

:class:`PlanTensors` holds the codes of all of a model's layers in one tensor, written with one copy per path; each
layer reads a view of its own row, so identical blocks compiled one by one share one graph (a row picked by a
Python index would specialise each block's graph on it). (A frozen linear layer in compiled supernet training reads
no code, but on one GPU with one backward per step: its weights are built for the path outside the graph,
``BatchedWeights.give``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from glora.layers.choices import LORA, NONE, SCALAR, VECTOR, Plan

Tensor = torch.Tensor

FACTORS = ("Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E")


def code_rows(plan: Plan, max_rank: int) -> list[list[float]]:
    """``plan``'s code: per gene, the rank mask (``max_rank`` values), the vector flag, the scalar flag."""
    rows = []
    for choice in plan:
        row = [0.0] * (max_rank + 2)
        if choice.kind == LORA:
            row[: choice.rank] = [1.0] * choice.rank
        elif choice.kind == VECTOR:
            row[max_rank] = 1.0
        elif choice.kind == SCALAR:
            row[max_rank + 1] = 1.0
        rows.append(row)
    return rows


def unused_factors(plan: Plan) -> tuple[bool, ...]:
    """Per factor (``FACTORS`` order), whether ``plan`` leaves it out entirely (eagerly its gradient stays None)."""
    a, b, c, d, e = plan
    return (
        a.kind == NONE,
        a.kind != LORA,
        b.kind == NONE,
        b.kind != LORA,
        c.kind == NONE,
        c.kind != LORA,
        d.kind == NONE,
        e.kind == NONE,
    )


class PlanTensors:
    """The codes of ``count`` layers at maximum rank ``max_rank`` in one ``count x 5 x (max_rank + 2)`` tensor on
    ``device`` (float32); layer ``i`` reads ``views[i]``, a view of row ``i``. :meth:`write` replaces them all with
    one copy."""

    def __init__(self, count: int, max_rank: int, device: torch.device) -> None:
        self.max_rank = max_rank
        self.codes = torch.zeros(count, 5, max_rank + 2, device=device)
        self.views: tuple[Tensor, ...] = self.codes.unbind(0)
        # on a GPU two pinned host buffers in turn, so that a write queues its copy without waiting for the device
        pinned = self.codes.is_cuda
        self._staged = [torch.empty(self.codes.shape, pin_memory=pinned) for _ in range(2 if pinned else 1)]
        self._copied: list[Optional[torch.cuda.Event]] = [None] * len(self._staged)
        self._turn = 0
        self._rows: dict[Plan, Tensor] = {}

    def write(self, plans: Sequence[Plan]) -> None:
        """Set the codes to ``plans`` (one per layer, in order), stacked on the host and copied in one transfer. On a
        GPU the copy is queued in stream order without blocking the host (a blocking copy would wait for all the
        work queued before it); a host buffer is refilled only once its previous copy is done."""
        turn = self._turn
        self._turn = (turn + 1) % len(self._staged)
        copied = self._copied[turn]
        if copied is not None:
            copied.synchronize()
        staged = self._staged[turn]
        torch.stack(self._codes_of(plans), out=staged)
        self.codes.copy_(staged, non_blocking=True)
        if self.codes.is_cuda:
            copied = self._copied[turn] = torch.cuda.Event()
            copied.record(torch.cuda.current_stream(self.codes.device))

    def table(self, subnets: Sequence[Sequence[Plan]]) -> Tensor:
        """The codes of several subnets (each a plan per layer, in order) on the host, ``len(subnets) x count x 5 x
        (max_rank + 2)``: each copied into :attr:`codes` in turn (``codes.copy_(table[j])``, once the table is on
        the device) sets that subnet without a transfer from the host."""
        return torch.stack([torch.stack(self._codes_of(plans)) for plans in subnets])

    def _codes_of(self, plans: Sequence[Plan]) -> list[Tensor]:
        """Each plan's code, made once per plan."""
        rows = self._rows
        table = []
        for plan in plans:
            code = rows.get(plan)
            if code is None:
                code = rows[plan] = torch.tensor(code_rows(plan, self.max_rank))
            table.append(code)
        return table


def coded_weights(
    choices: Sequence[Sequence[str]],
    code: Tensor,
    w0: Tensor,
    b0: Optional[Tensor],
    factors: Sequence[Optional[Tensor]],
) -> tuple[Tensor, Optional[Tensor]]:
    """``W' = W0 + W0 * A + B`` (out x in, the factors' precision) and ``b' = b0 + W0 @ C + b0 * D + E`` (None for
    a bias-free layer offering no C, E) for the plan ``code`` holds; ``choices`` are the layer's offered choices per
    gene (terms no choice offers are left out), ``factors`` its ``Ad, Au, Bd, Bu, Cd, Cu, D, E``."""
    ad, au, bd, bu, cd, cu, d, e = factors
    assert ad is not None and au is not None and bd is not None and bu is not None  # every layer has them
    a = _term(choices[0], code[0], ad, au)
    b = _term(choices[1], code[1], bd, bu)
    weight = w0 if a is None else torch.addcmul(w0, w0, a)
    if b is not None:
        weight = weight + b
    bias = b0
    if cd is not None and cu is not None:
        c = _term(choices[2], code[2], cd, cu)
        if c is not None:
            wc = (w0 if w0.dtype == c.dtype else w0.to(c.dtype)) @ c[:, 0]
            bias = wc if bias is None else bias + wc
    if d is not None and b0 is not None:
        dv = _vector_term(choices[3], code[3], d)
        if dv is not None:
            assert bias is not None  # b0 is not None
            bias = torch.addcmul(bias, b0, dv)
    if e is not None:
        ev = _vector_term(choices[4], code[4], e)
        if ev is not None:
            bias = ev.expand(w0.shape[0]) if bias is None else bias + ev
    return weight, bias


def _term(offered: Sequence[str], row: Tensor, down: Tensor, up: Tensor) -> Optional[Tensor]:
    """A, B or C under one code row (broadcastable to out x in, or in x 1 for C; the row's last two columns flag
    vector and scalar); None when only ``none`` is offered."""
    rank = down.shape[1]
    term = None
    if any(name.startswith("lora_") for name in offered):
        term = (down * row[:rank]) @ up
    if VECTOR in offered:
        vector = down[:, :1] * row[-2]
        term = vector if term is None else term + vector
    if SCALAR in offered:
        scalar = down[:1, :1] * row[-1]
        term = scalar if term is None else term + scalar
    return term


def _vector_term(offered: Sequence[str], row: Tensor, v: Tensor) -> Optional[Tensor]:
    """D or E under one code row (the code's last two columns flag vector and scalar)."""
    term = None
    if VECTOR in offered:
        term = v * row[-2]
    if SCALAR in offered:
        scalar = v[:1] * row[-1]
        term = scalar if term is None else term + scalar
    return term
