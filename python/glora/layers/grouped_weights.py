"""The weights a compiled training forward takes as inputs, built for all frozen linear layers in a few launches.

Why: a compiled supernet step is bound by the host. Built layer by layer (``batched_weights._BuildWeights``),
``W'`` and ``b'`` cost about 8 tensor operations per layer in the forward and 12 in the backward, each a
dispatch and a launch: on ViT-B/16 more host time than the compiled graph itself. Here layers whose tensors have
the same shapes and dtypes form a group, stacked along a new first dimension (in chunks of at most
``CHUNK_ELEMENTS`` weight elements, which bound the transient memory), and each group's weights are formed by
batched products under the paths' codes (``plan_tensors``: a rank mask and vector and scalar flags per gene):

    A = (Ad * m_A) @ Au + v_A * Ad[:, :1] + s_A * Ad[:1, :1]        W' = W0 + W0 * A + B          (B alike)
    c = (Cd * m_C) @ Cu + v_C * Cd[:, :1]                           b' = b0 + W0 @ c + b0 * D + E  (D, E: v, s)

The result is each layer's plan exactly, in about as many operations per group as the per-layer build spends on
one layer. Terms no layer of a group offers are left out. Its backward forms every factor's gradient in the same
batched way, zero outside what the plan used (a trainer drops the gradients of factors a step's paths left out,
``PathSampler.drop_unused_gradients``); ``W0`` is stacked again there rather than kept, so the node holds no copy
of the frozen weights between forward and backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Optional, cast

import torch

from glora.layers.choices import LORA, SCALAR, VECTOR, Plan
from glora.layers.dtypes import factor_precision, no_autocast
from glora.layers.layer import GLoRALayer
from glora.layers.plan_tensors import code_rows

Tensor = torch.Tensor

CHUNK_ELEMENTS = 1 << 26
"""The most weight elements (layers x out x in) one batched operation forms: 256 MiB in float32."""


class Member(NamedTuple):
    """A layer's part in a group: its plan, ``W0`` (out x in), ``b0`` and its eight factors."""

    plan: Plan
    w0: Tensor
    b0: Optional[Tensor]
    factors: tuple[Optional[Tensor], ...]


class Terms(NamedTuple):
    """What a group forms: per gene, whether its lora, vector and scalar forms occur in any member's offer; and
    whether ``b'`` is formed at all (some member offers a bias term)."""

    lora: tuple[bool, ...]
    vector: tuple[bool, ...]
    scalar: tuple[bool, ...]
    bias: bool


class Chunk(NamedTuple):
    """Members built together (their positions in the list :meth:`GroupedWeights.build` is given), the terms they
    form and their factors' rank."""

    members: tuple[int, ...]
    terms: Terms
    rank: int


class GroupedWeights:
    """Builds the given weights of a model's frozen linear layers for each compiled forward; the grouping of its
    layers into chunks is worked out once for the layers taking part (and again if they change)."""

    def __init__(self) -> None:
        self._signature: Optional[tuple] = None
        self._chunks: list[Chunk] = []
        self._order: list[int] = []
        self._rows: dict[tuple, list[float]] = {}

    def build(
        self, layers: Sequence[GLoRALayer], members: Sequence[Member], bias_terms: Sequence[bool], dtype: torch.dtype
    ) -> list[tuple[Tensor, Optional[Tensor]]]:
        """Each member's ``W'`` and ``b'`` (None where ``bias_terms`` is False: the layer uses ``b0``), in
        ``dtype``, under its plan; ``layers`` are the members' layers."""
        signature = (dtype, *((id(layer), m.w0.dtype, m.w0.device) for layer, m in zip(layers, members)))
        if signature != self._signature:
            self._layout(layers, members, bias_terms)
            self._signature = signature
        max_rank = max(chunk.rank for chunk in self._chunks)
        code = self._codes([members[i].plan for i in self._order], max_rank, members[0].w0.device)
        out: list[tuple[Tensor, Optional[Tensor]]] = [None] * len(members)  # type: ignore[list-item]
        start = 0
        for chunk in self._chunks:
            part = [members[i] for i in chunk.members]
            factors = [f for m in part for f in m.factors]
            rows = code[start : start + len(part)]
            start += len(part)
            weight, bias = BuildGroup.apply(part, chunk.terms, dtype, rows, chunk.rank, *factors)
            biases = bias.unbind(0) if bias is not None else (None,) * len(part)
            for i, w, b in zip(chunk.members, weight.unbind(0), biases):
                out[i] = (w, b if bias_terms[i] else None)
        return out

    def _layout(self, layers: Sequence[GLoRALayer], members: Sequence[Member], bias_terms: Sequence[bool]) -> None:
        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(members):
            key = tuple(None if t is None else (t.shape, t.dtype, t.device) for t in (m.w0, m.b0, *m.factors))
            groups.setdefault(key, []).append(i)
        self._chunks = []
        for indices in groups.values():
            first = members[indices[0]]
            size = max(1, CHUNK_ELEMENTS // max(1, first.w0.numel()))
            for k in range(0, len(indices), size):
                part = tuple(indices[k : k + size])
                kinds = [layers[i].offered_kinds() for i in part]
                union = [frozenset().union(*(member[g] for member in kinds)) for g in range(5)]
                terms = Terms(
                    tuple(LORA in u for u in union),
                    tuple(VECTOR in u for u in union),
                    tuple(SCALAR in u for u in union),
                    any(bias_terms[i] for i in part),
                )
                self._chunks.append(Chunk(part, terms, first.factors[0].shape[1]))  # type: ignore[union-attr]
        self._order = [i for chunk in self._chunks for i in chunk.members]

    def _codes(self, plans: Sequence[Plan], max_rank: int, device: torch.device) -> Tensor:
        """The plans' codes (``len(plans) x 5 x (max_rank + 2)``, float32, ``plan_tensors``' layout) on ``device``,
        in one transfer; each choice's row made once."""
        rows = self._rows
        table = []
        for plan in plans:
            code = []
            for choice in plan:
                row = rows.get((choice, max_rank))
                if row is None:
                    row = rows[(choice, max_rank)] = code_rows((choice,), max_rank)[0]
                code.append(row)
            table.append(code)
        return torch.tensor(table, dtype=torch.float32).to(device)


class BuildGroup(torch.autograd.Function):
    """Inputs: the group's members, its :class:`Terms`, the compute dtype, the codes (``G x 5 x (R' + 2)``, R' at
    least the factors' rank R), R, then the members' factors (eight each, in order). Outputs: ``W'`` stacked (``G x out x in``) and ``b'`` stacked
    (``G x out``) or None, in the compute dtype."""

    @staticmethod
    def forward(ctx, members, terms, dtype, code, rank, *factors):  # noqa: D102 (see the class)
        ctx.members, ctx.terms, ctx.code, ctx.rank = members, terms, code, rank
        ctx.set_materialize_grads(False)
        first = members[0]
        with no_autocast(first.w0.device.type):
            w0 = _stacked_w0(members)
            # kept for the backward: the factors are small beside W0 (rank columns)
            stacked = ctx.stacked = _stacked_factors(factors)
            ad, au, bd, bu = stacked[:4]
            assert ad is not None and au is not None and bd is not None and bu is not None  # every layer has them
            a, b = _term(terms, 0, code, rank, ad, au), _term(terms, 1, code, rank, bd, bu)
            delta = None if a is None else a.mul_(w0)
            if b is not None:
                delta = b if delta is None else delta.add_(b)
            weight = torch.empty(w0.shape, dtype=dtype, device=w0.device)
            if delta is None:
                weight.copy_(w0)
            else:
                torch.add(w0, delta, out=weight)
            del delta, a, b
            bias = _bias(members, terms, code, rank, w0, stacked, dtype) if terms.bias else None
        return weight, bias

    @staticmethod
    def backward(ctx, grad_weight, grad_bias):  # noqa: D102
        members, terms, code, rank, stacked = ctx.members, ctx.terms, ctx.code, ctx.rank, ctx.stacked
        first = members[0]
        grads: list[Optional[Tensor]] = [None] * 8
        with torch.no_grad(), no_autocast(first.w0.device.type):
            precision = factor_precision(first.w0.dtype, first.factors[0].dtype)
            if grad_weight is not None:
                g = grad_weight.to(precision)
                if offers(terms, 0):  # W0 stacked again: the forward kept no copy
                    _term_grads(grads, 0, terms, code, rank, g * _stacked_w0(members), stacked[0], stacked[1])
                if offers(terms, 1):
                    _term_grads(grads, 2, terms, code, rank, g, stacked[2], stacked[3])
                del g
            if grad_bias is not None:
                _bias_grads(grads, members, terms, code, rank, grad_bias.to(precision), stacked)
        per_member = [(None,) * len(members) if g is None else g.unbind(0) for g in grads]
        return (None, None, None, None, None, *(g for member in zip(*per_member) for g in member))


def _stacked_w0(members: Sequence[Member]) -> Tensor:
    return torch.stack([m.w0 for m in members])


def _stacked_factors(factors: Sequence[Optional[Tensor]]) -> list[Optional[Tensor]]:
    """Each of the eight factors stacked over the members (None where the layers lack it)."""
    n = len(factors) // 8
    return [
        None if factors[i] is None else torch.stack([cast(Tensor, factors[8 * k + i]) for k in range(n)])
        for i in range(8)
    ]


def _flags(code: Tensor, gene: int, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """The gene's rank masks (``G x 1 x R``) and vector and scalar flags (``G x 1 x 1``) for factors of rank R."""
    row = code[:, gene]
    full = code.shape[2] - 2
    return row[:, None, :rank], row[:, full, None, None], row[:, full + 1, None, None]


def _term(terms: Terms, gene: int, code: Tensor, rank: int, down: Tensor, up: Tensor) -> Optional[Tensor]:
    """A or B (``G x out x in``, or ``G x in x 1`` for C) under the codes; None when the group offers neither form."""
    mask, vector, scalar = _flags(code, gene, rank)
    term = torch.bmm(down * mask, up) if terms.lora[gene] else None
    if terms.vector[gene]:
        part = vector * down[:, :, :1]
        term = part.expand(*down.shape[:2], up.shape[2]).clone() if term is None else term.add_(part)
    if terms.scalar[gene]:
        part = scalar * down[:, :1, :1]
        term = part.expand(*down.shape[:2], up.shape[2]).clone() if term is None else term.add_(part)
    return term


def _term_grads(
    grads: list, slot: int, terms: Terms, code: Tensor, rank: int, source: Tensor, down: Tensor, up: Tensor
) -> None:
    """The gradients of a term's down and up factors (slots ``slot`` and ``slot + 1``) from ``source``, the
    gradient of the term itself (``G x out x in``)."""
    gene = slot // 2
    mask, vector, scalar = _flags(code, gene, rank)
    g_down = torch.bmm(source, up.transpose(1, 2)).mul_(mask) if terms.lora[gene] else torch.zeros_like(down)
    if terms.lora[gene]:
        grads[slot + 1] = torch.bmm((down * mask).transpose(1, 2), source)
    if terms.vector[gene]:
        g_down[:, :, :1] += vector * source.sum(2, keepdim=True)
    if terms.scalar[gene]:
        g_down[:, :1, :1] += scalar * source.sum((1, 2), keepdim=True)
    grads[slot] = g_down


def _bias(
    members: Sequence[Member],
    terms: Terms,
    code: Tensor,
    rank: int,
    w0: Tensor,
    stacked: list[Optional[Tensor]],
    dtype: torch.dtype,
) -> Tensor:
    """``b'`` stacked (``G x out``) in ``dtype``."""
    b0 = _stacked_b0(members)
    precision = stacked[0].dtype if stacked[0] is not None else torch.float32
    bias = torch.zeros(w0.shape[:2], dtype=precision, device=w0.device) if b0 is None else b0.to(precision)
    cd, cu, d, e = stacked[4:]
    if cd is not None and cu is not None:
        c = _term(terms, 2, code, rank, cd, cu)
        if c is not None:
            bias = bias + torch.bmm(w0.to(precision), c)[:, :, 0]
    if d is not None and b0 is not None and offers(terms, 3):
        bias = bias + b0 * _vector_term(terms, 3, code, d)
    if e is not None and offers(terms, 4):
        bias = bias + _vector_term(terms, 4, code, e)
    return bias.to(dtype)


def _stacked_b0(members: Sequence[Member]) -> Optional[Tensor]:
    return None if members[0].b0 is None else torch.stack([cast(Tensor, m.b0) for m in members])


def _vector_term(terms: Terms, gene: int, code: Tensor, v: Tensor) -> Tensor:
    """D or E (``G x out``) under the codes."""
    row = code[:, gene]
    full = code.shape[2] - 2
    term = torch.zeros_like(v)
    if terms.vector[gene]:
        term = term + row[:, full, None] * v
    if terms.scalar[gene]:
        term = term + row[:, full + 1, None] * v[:, :1]
    return term


def _bias_grads(
    grads: list,
    members: Sequence[Member],
    terms: Terms,
    code: Tensor,
    rank: int,
    gb: Tensor,
    stacked: list[Optional[Tensor]],
) -> None:
    """Cd, Cu, D, E's gradients (slots 4-7) from ``gb`` (``G x out``, the factors' precision)."""
    cd, cu, d, e = stacked[4:]
    full = code.shape[2] - 2
    if e is not None and offers(terms, 4):
        row = code[:, 4]
        ge = row[:, full, None] * gb if terms.vector[4] else torch.zeros_like(e)
        if terms.scalar[4]:
            ge[:, :1] += row[:, full + 1, None] * gb.sum(1, keepdim=True)
        grads[7] = ge
    b0 = _stacked_b0(members)
    if d is not None and b0 is not None and offers(terms, 3):
        row = code[:, 3]
        source = gb * b0
        gd = row[:, full, None] * source if terms.vector[3] else torch.zeros_like(d)
        if terms.scalar[3]:
            gd[:, :1] += row[:, full + 1, None] * source.sum(1, keepdim=True)
        grads[6] = gd
    if cd is not None and cu is not None and offers(terms, 2):
        w0 = _stacked_w0(members).to(gb.dtype)
        gc = torch.bmm(w0.transpose(1, 2), gb[:, :, None])  # G x in x 1
        _term_grads(grads, 4, terms, code, rank, gc, cd, cu)


def offers(terms: Terms, gene: int) -> bool:
    """Whether the group forms the gene's term in any form."""
    return terms.lora[gene] or terms.vector[gene] or terms.scalar[gene]
