"""Class labels of a classification task: the classes seen in the training split, in a fixed id order, and the
mapping of every split's labels to those ids.

Labels are strings or integers. Integers (also ``True``/``False`` and whole floats such as ``1.0``, as JSON and
Parquet may write them) are named ``str(i)`` and ordered numerically; strings are stripped of surrounding spaces
and ordered alphabetically, except that strings which all spell integers (a CSV's ``0``, ``1``, ``10``) are ordered
numerically too. One split may not mix integer and string values.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any, Optional

from glora.errors import DataError

__all__ = ["LabelSet"]

_INTEGER = re.compile(r"[+-]?\d+")


def _error(message: str, path: str, column: str, **more: Any) -> DataError:
    return DataError(message, kind="labels", details={"path": path, "column": column, **more})


def _as_label(value: Any) -> Optional[tuple[str, str]]:
    """``("int", name)`` or ``("str", name)``; None for what is not a label (None, NaN, a fraction, a list)."""
    if isinstance(value, str):
        text = value.strip()
        return ("str", text) if text else None
    if isinstance(value, numbers.Integral):  # bool, int, numpy integers
        return ("int", str(int(value)))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return ("int", str(int(number)))
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return repr(value)


class LabelSet:
    """The class names in id order; ``LabelSet(names=[...])`` rebuilds one from a saved model's label names."""

    def __init__(self, names: Sequence[str]) -> None:
        names = list(names)
        if not all(isinstance(name, str) and name for name in names):
            raise ValueError(f"label names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be distinct, got {names!r}")
        self.names: list[str] = names
        self.integer = bool(names) and all(_INTEGER.fullmatch(name) and str(int(name)) == name for name in names)
        """Whether the names are integers (``"0"``, ``"1"``): then ``"01"``, ``1`` and ``1.0`` all mean ``"1"``."""
        self._ids = {name: i for i, name in enumerate(names)}

    def __repr__(self) -> str:
        return f"LabelSet(names={self.names!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and other.names == self.names

    def __hash__(self) -> int:
        return hash(tuple(self.names))

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_train(cls, values: list, path: str, column: str) -> LabelSet:
        """The classes of the training split's labels ``values``; DataError naming the row for a value that is no
        label or of the other type than the first, and for fewer than two classes."""
        where = f"train file {path}"
        first: dict[str, tuple[int, Any]] = {}
        names: set[str] = set()
        for row, value in enumerate(values, start=1):
            label = _as_label(value)
            if label is None:
                what = "an empty label" if isinstance(value, str) else f"a value that is not a label: {_shown(value)}"
                raise _error(
                    f"{where}: column {column!r} holds {what} at row {row} (labels are strings or whole numbers)",
                    path,
                    column,
                    row=row,
                )
            kind, name = label
            first.setdefault(kind, (row, value))
            if len(first) > 1:
                (int_row, int_value), (str_row, str_value) = first["int"], first["str"]
                raise _error(
                    f"{where}: column {column!r} mixes integer labels (row {int_row}: {int_value!r}) and string "
                    f"labels (row {str_row}: {str_value!r}); use one kind",
                    path,
                    column,
                    row=row,
                )
            names.add(name)
        if "str" in first and all(_INTEGER.fullmatch(name) for name in names):
            canonical = {str(int(name)) for name in names}
            if len(canonical) == len(names):  # "1" and "01" stay strings rather than merge
                names = canonical
        numeric = bool(names) and all(_INTEGER.fullmatch(name) for name in names)
        ordered = sorted(names, key=lambda name: (int(name), name)) if numeric else sorted(names)
        if len(ordered) < 2:
            held = f"only the class {ordered[0]!r}" if ordered else "no labels"
            raise _error(f"{where}: column {column!r} holds {held}; classification needs at least two", path, column)
        return cls(ordered)

    def ids(self, values: list, path: str, column: str, role: str) -> list[int]:
        """The class id of each label of a split; DataError naming the row for a label the training split has not."""
        out = []
        for row, value in enumerate(values, start=1):
            label = _as_label(value)
            if label is None:
                what = "an empty label" if isinstance(value, str) else f"a value that is not a label: {_shown(value)}"
                raise _error(f"{role} file {path}: column {column!r} holds {what} at row {row}", path, column, row=row)
            name = label[1]
            if self.integer and _INTEGER.fullmatch(name):
                name = str(int(name))
            i = self._ids.get(name)
            if i is None:
                raise _error(
                    f"{role} file {path}: label {name!r} (row {row}) is not among the training split's labels "
                    f"{self.names}",
                    path,
                    column,
                    row=row,
                )
            out.append(i)
        return out
