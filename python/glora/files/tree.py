"""Nested states (an optimizer's, a scheduler's, the RNGs') as a JSON document plus named tensors, so they are
stored without pickle and read back equal: the same types (tuples, integer keys, NumPy arrays), the same bits.

A tensor becomes ``{"__tensor__": name}``, a NumPy array ``{"__ndarray__": name, "dtype": ...}`` (kept as an
int64 or float64 tensor), a tuple ``{"__tuple__": [...]}``, a dict with keys other than plain strings
``{"__items__": [[key, value], ...]}``; floats keep every bit through JSON (``repr``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

TENSOR, NDARRAY, TUPLE, ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"
SCALARS = (bool, int, float, str, type(None))
NUMPY_KINDS = "biuf"  # bool, signed, unsigned, floating arrays (a RandomState key is uint32)

__all__ = ["flatten", "unflatten"]


def flatten(value: Any, root: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON form of ``value``; its tensors are added to ``tensors`` under names that start with ``root``."""

    def name() -> str:
        return f"{root}.{len(tensors)}"

    def walk(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            key = name()
            tensors[key] = v.detach().cpu().contiguous()
            return {TENSOR: key}
        if isinstance(v, np.ndarray) and v.dtype.kind in NUMPY_KINDS:
            key = name()
            tensors[key] = torch.from_numpy(v.astype(np.float64 if v.dtype.kind == "f" else np.int64))
            return {NDARRAY: key, "dtype": v.dtype.str}
        if isinstance(v, SCALARS):
            return v
        if isinstance(v, tuple):
            return {TUPLE: [walk(x) for x in v]}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in v):
                return {k: walk(x) for k, x in v.items()}
            if all(isinstance(k, SCALARS) for k in v):
                return {ITEMS: [[k, walk(x)] for k, x in v.items()]}
        raise TypeError(f"{root}: a {type(v).__name__} cannot be stored without pickle")

    return walk(value)


def unflatten(doc: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The value :func:`flatten` made ``doc`` of; a malformed ``doc`` raises ValueError saying where."""

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, SCALARS):
            return v
        if isinstance(v, list):
            return [walk(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            raise ValueError(f"{where}: unexpected {type(v).__name__}")
        if TENSOR in v:
            return _tensor(v, TENSOR, tensors, where)
        if NDARRAY in v:
            dtype = np.dtype(str(v.get("dtype")))
            if dtype.kind not in NUMPY_KINDS:
                raise ValueError(f"{where}: unsupported array type {dtype}")
            return _tensor(v, NDARRAY, tensors, where).numpy().astype(dtype)
        if TUPLE in v:
            items = _list(v, TUPLE, where)
            return tuple(walk(x, f"{where}[{i}]") for i, x in enumerate(items))
        if ITEMS in v:
            pairs = _list(v, ITEMS, where)
            if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], SCALARS) for p in pairs):
                raise ValueError(f"{where}: {ITEMS} must hold [key, value] pairs")
            return {k: walk(x, f"{where}[{k!r}]") for k, x in pairs}
        return {k: walk(x, f"{where}.{k}") for k, x in v.items()}

    return walk(doc, "state")


def _tensor(v: dict[str, Any], tag: str, tensors: dict[str, torch.Tensor], where: str) -> torch.Tensor:
    key = v[tag]
    if not isinstance(key, str) or key not in tensors:
        raise ValueError(f"{where}: refers to a tensor {key!r} that the file lacks")
    return tensors[key]


def _list(v: dict[str, Any], tag: str, where: str) -> list[Any]:
    items = v[tag]
    if not isinstance(items, list):
        raise ValueError(f"{where}: {tag} must be a list")
    return items
