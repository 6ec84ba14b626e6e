"""Seeded splits of a training file: the validation and test splits that have no file of their own are cut from
it, and the training split may be capped; stratified by class when the labels are given.

Sizes are counts or shares in (0, 1). A cut split's share is of the training file's examples (at least one); the
train split's share is of the examples left after the cuts. The index lists returned are sorted ascending, disjoint,
and depend only on the inputs and the seed.

Stratified, each split's count of class ``c`` is within 1 of its proportional share, ``size * n_c / n`` (a
controlled rounding: every count is that share rounded down or up, and every split has exactly its size), and
every class keeps at least one training example. Where the bounds cannot give both (many rare classes, a small
train split), the training examples win: a missing class takes one from the class most above its share in train
(swapped, so the sizes stay exact), and those counts then move off their shares by more than 1; a class stays out
of train only when train is smaller than the number of classes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from glora.errors import DataError

__all__ = ["plan_splits"]

Size = Union[int, float, None]
CUT_ROLES = ("validation", "test")


def _error(message: str, setting: Optional[str] = None) -> DataError:
    return DataError(message, kind="split_size", details={} if setting is None else {"setting": setting})


def _count(size: Size, of: int, setting: str, least: int) -> int:
    """A count or share ``size`` of ``of`` examples as a count (a share rounds half up, to at least ``least``)."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise _error(f"{setting} must be a count or a share in (0, 1), got {size!r}", setting)
    if isinstance(size, float):
        if not 0 < size < 1:
            raise _error(f"{setting} must be a count or a share in (0, 1), got {size!r}", setting)
        return max(least, int(size * of + 0.5))
    if size < 1:
        raise _error(f"{setting} must be a positive count or a share in (0, 1), got {size!r}", setting)
    return int(size)


def plan_splits(
    n: int,
    labels: Optional[Sequence[int]],
    cut: Sequence[str],
    sizes: Mapping[str, Union[int, float, None]],
    seed: int,
    default_share: float = 0.1,
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """The indices of ``n`` training-file examples that form ``"train"`` and each role in ``cut`` (splits without
    their own file, ``"validation"`` and/or ``"test"``), and the record of the split for ``result.json``.

    ``sizes[role]`` is a count, a share, or None (``default_share`` for a cut split, everything left for train).
    A size larger than what is left, an empty split, or a share outside (0, 1) raises DataError naming the
    setting (``validation_size``, ``test_size``, ``train_size``)."""
    cut = list(cut)
    if any(role not in CUT_ROLES for role in cut) or len(set(cut)) != len(cut):
        raise ValueError(f"cut must be distinct roles among {CUT_ROLES}, got {cut}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} values for {n} examples")
    if n < 1:
        raise _error("the training file holds no examples")
    counts: dict[str, int] = {}
    left = n
    for role in cut:
        size = sizes.get(role)
        setting = f"{role}_size"
        k = _count(default_share if size is None else size, n, setting, least=1)
        if k > left:
            before = f" after {_listed(counts)}" if counts else ""
            raise _error(
                f"{setting} {size!r} asks for {k} examples, more than the {left} of the training file left{before}",
                setting,
            )
        counts[role] = k
        left -= k
    if left == 0:
        raise _error(
            f"the train split would be empty: {_listed(counts)} take all {n} examples of the training file",
            "train_size",
        )
    train_size = sizes.get("train")
    train = left if train_size is None else _count(train_size, left, "train_size", least=1)
    if train > left:
        after = f" after {_listed(counts)}" if counts else ""
        raise _error(
            f"train_size {train_size!r} is more than the {left} examples of the training file left{after}", "train_size"
        )
    columns = [counts[role] for role in cut] + [train, left - train]
    rng = np.random.default_rng(seed)
    parts = _allocate(n, labels, columns, keep=len(cut), rng=rng)
    splits = {"train": parts[len(cut)]}
    splits.update({role: parts[i] for i, role in enumerate(cut)})
    record = {
        "cut_from_train": list(cut),
        "sizes": {role: len(indices) for role, indices in splits.items()},
        "seed": seed,
        "stratified": labels is not None,
    }
    return splits, record


def _listed(counts: Mapping[str, int]) -> str:
    return " and ".join(f"{role} ({k})" for role, k in counts.items())


def _allocate(
    n: int, labels: Optional[Sequence[int]], sizes: list[int], keep: int, rng: np.random.Generator
) -> list[list[int]]:
    """Split ``range(n)`` into parts of ``sizes`` (summing to ``n``), sorted; stratified by ``labels`` when given,
    every class keeping at least one example in part ``keep`` where the rounding bounds allow."""
    if labels is None:
        order = rng.permutation(n)
        bounds = np.cumsum([0, *sizes])
        return [sorted(int(i) for i in order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    values = np.asarray(labels)
    classes, inverse = np.unique(values, return_inverse=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    table = _controlled_rounding([len(m) for m in members], sizes, n, keep, rng)
    parts: list[list[int]] = [[] for _ in sizes]
    for c, indices in enumerate(members):
        shuffled = rng.permutation(indices)
        start = 0
        for part, k in enumerate(table[c]):
            parts[part].extend(int(i) for i in shuffled[start : start + k])
            start += k
    return [sorted(part) for part in parts]


def _controlled_rounding(
    rows: list[int], cols: list[int], n: int, keep: int, rng: np.random.Generator
) -> list[list[int]]:
    """Integer table ``x[c][r]`` with row sums ``rows`` and column sums ``cols`` (both summing to ``n``), each
    entry the floor or the ceiling of ``rows[c] * cols[r] / n``; entries ``x[c][keep]`` at least 1 where the
    ceiling allows and a solution with that exists.

    The floors are fixed, and the remaining ones (one per cell with a fractional share at most) are a bipartite
    b-matching between classes and columns, found greedily and completed by augmenting paths; it exists because
    the fractional parts themselves are a fractional solution."""
    base = [[(rc * k) // n for k in cols] for rc in rows]
    frac = [[(rc * k) % n != 0 for k in cols] for rc in rows]
    forced = [rc > 0 and base[c][keep] == 0 and frac[c][keep] for c, rc in enumerate(rows)]
    ones = _match(rows, cols, base, frac, forced, keep, rng)
    if ones is not None:
        return [[base[c][r] + ones[c][r] for r in range(len(cols))] for c in range(len(rows))]
    ones = _match(rows, cols, base, frac, [False] * len(rows), keep, rng)
    if ones is None:  # unreachable: the unforced problem is feasible
        raise AssertionError("controlled rounding found no solution")
    table = [[base[c][r] + ones[c][r] for r in range(len(cols))] for c in range(len(rows))]
    _cover(table, rows, cols, n, keep)
    return table


def _cover(table: list[list[int]], rows: list[int], cols: list[int], n: int, keep: int) -> None:
    """Give each class without an example in part ``keep`` one, swapped with an example of the class most above
    its share there among those with two or more; classes stay uncovered only when none has two left to give."""
    for c, row_total in enumerate(rows):
        if row_total == 0 or table[c][keep] > 0:
            continue
        # the part most above its share gives up the class's example, the class most above its share in part keep
        # gives one back; both compared as (count - share) * n, in integers
        src = max(
            (r for r in range(len(cols)) if r != keep and table[c][r] > 0),
            key=lambda r: table[c][r] * n - row_total * cols[r],
        )
        donors = [d for d in range(len(rows)) if table[d][keep] >= 2]
        if not donors:
            return
        d = max(donors, key=lambda d: table[d][keep] * n - rows[d] * cols[keep])
        table[c][src] -= 1
        table[c][keep] += 1
        table[d][keep] -= 1
        table[d][src] += 1


def _match(
    rows: list[int],
    cols: list[int],
    base: list[list[int]],
    frac: list[list[bool]],
    forced: list[bool],
    keep: int,
    rng: np.random.Generator,
) -> Optional[list[list[int]]]:
    m, k = len(rows), len(cols)
    row_need = [rows[c] - sum(base[c]) for c in range(m)]
    col_need = [cols[r] - sum(base[c][r] for c in range(m)) for r in range(k)]
    ones = [[0] * k for _ in range(m)]
    for c in range(m):
        if forced[c]:
            ones[c][keep] = 1
            row_need[c] -= 1
            col_need[keep] -= 1
    if col_need[keep] < 0:
        return None
    for c in (int(i) for i in rng.permutation(m)):  # greedy: the columns that need most first
        while row_need[c] > 0:
            free = [r for r in range(k) if frac[c][r] and not ones[c][r] and col_need[r] > 0]
            if not free:
                break
            r = max(free, key=lambda r: col_need[r])
            ones[c][r] = 1
            row_need[c] -= 1
            col_need[r] -= 1
    for c in range(m):
        while row_need[c] > 0:
            if not _augment(c, ones, frac, forced, keep, col_need):
                return None
            row_need[c] -= 1
    return ones


def _augment(
    start: int, ones: list[list[int]], frac: list[list[bool]], forced: list[bool], keep: int, col_need: list[int]
) -> bool:
    """One more one for class ``start``: a path class -> column (a free cell) -> class (a cell holding a one,
    moved away) -> ... ending at a column that still needs one; forced cells never move."""
    m, k = len(ones), len(col_need)
    came: dict[int, tuple[int, int]] = {}  # column -> (class it was reached from, that class's incoming column or -1)
    seen_class = {start: -1}
    queue = deque([start])
    while queue:
        c = queue.popleft()
        for r in range(k):
            if r in came or not frac[c][r] or ones[c][r]:
                continue
            came[r] = (c, seen_class[c])
            if col_need[r] > 0:
                col_need[r] -= 1
                while True:  # flip the path back to its start
                    cls, prev = came[r]
                    ones[cls][r] = 1
                    if prev == -1:
                        return True
                    ones[cls][prev] = 0
                    r = prev
            for c2 in range(m):
                if c2 not in seen_class and ones[c2][r] and not (forced[c2] and r == keep):
                    seen_class[c2] = r
                    queue.append(c2)
    return False
