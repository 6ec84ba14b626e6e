"""Dtypes of GLoRA's training ops: the dtype a base operation runs in, the one factor gradients are formed in,
and autocast switched off inside the autograd nodes (whose casts are explicit)."""

from __future__ import annotations

import contextlib

import torch

Tensor = torch.Tensor


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a base operation runs in: the autocast dtype when autocast is on, else the input's."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


_PRECISIONS: dict[tuple[torch.dtype, torch.dtype], torch.dtype] = {}


def factor_precision(base: torch.dtype, factors: torch.dtype) -> torch.dtype:
    """The dtype the factor gradients are formed in, looked up once per pair (``torch.promote_types`` goes through
    the dispatcher: a cost per layer and step)."""
    precision = _PRECISIONS.get((base, factors))
    if precision is None:
        precision = _PRECISIONS[base, factors] = torch.promote_types(base, factors)
    return precision


def keeps_cast_copy(w0: Tensor, dtype: torch.dtype) -> bool:
    """Whether a plain linear layer computing in ``dtype`` keeps a cast copy of ``W0`` for its backward (a float32
    base under bf16 autocast), so that keeping ``W'`` in its place costs no memory; over a base already in
    ``dtype`` (an LLM's bf16 weights) it keeps ``W0`` itself, and GLoRA rebuilds ``W'`` in the backward instead."""
    return w0.dtype != dtype


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
