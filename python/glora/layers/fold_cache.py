"""Folded weights kept between subnet evaluations.

A search scores many subnets that share most layers' choices (a child takes each layer's choice from a parent
unless that gene mutates), and a layer's ``W'`` depends only on its A and B choices, ``b'`` only on C, D and E.
So each is formed once and reused: a :class:`FoldCache` keeps them on their device within a byte limit, least
recently used out first. An entry stays valid while the tensors it was made from are the same storage at the
same version of autograd's counter (an in-place op, ``load_state_dict`` or a move to another device makes the layer
form it anew); a fused optimizer's step and writes through ``.data`` leave the counter as it was, which is why an
evaluator keeps folds only for the span of a search (``SubnetEvaluator.search_scope``) and drops them at its end.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Callable, Optional

import torch

Tensor = torch.Tensor
Stamp = tuple[tuple[int, int], ...]
"""The storage and version counter of each tensor an entry was made from."""


def stamp_of(tensors: Sequence[Optional[Tensor]]) -> Stamp:
    """What identifies the state of ``tensors``: their storages and in-place versions (absent ones skipped)."""
    return tuple((t.data_ptr(), t._version) for t in tensors if t is not None)


class FoldCache:
    """Tensors by key, each with the :func:`stamp_of` of its sources, within ``max_bytes`` (0 keeps nothing; the
    evaluator checks the size it is given, ``fold_cache_bytes``)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[Stamp, Optional[Tensor]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, stamp: Stamp, make: Callable[[], Optional[Tensor]]) -> Optional[Tensor]:
        """The tensor kept under ``key`` if it was made from sources in the state ``stamp``; else ``make()``, kept
        when it fits (the least recently used entries leave to make room)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        if entry is not None:
            self._drop(key)
        value = make()
        size = _size(value)
        if size <= self.max_bytes and self.max_bytes > 0:
            while self.bytes + size > self.max_bytes:
                self._drop(next(iter(self._entries)))
            self._entries[key] = (stamp, value)
            self.bytes += size
        return value

    def clear(self) -> None:
        """Drop every entry (the hit and miss counts stay)."""
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: Hashable) -> None:
        self.bytes -= _size(self._entries.pop(key)[1])


def _size(value: Optional[Tensor]) -> int:
    return 0 if value is None else value.numel() * value.element_size()
