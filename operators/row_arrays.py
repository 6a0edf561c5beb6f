"""Rows of numpy arrays that grow on demand and reuse freed rows: the storage of the array device stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Column:
    """One array of a :class:`RowArrays`: the shape of a row, its type, and what a new row holds."""

    shape: tuple[int, ...]
    dtype: type
    initial: float


class RowArrays:
    """Arrays with one row per item (a field, a device), all of the same length.

    Subclasses name their arrays in ``columns``; each becomes an attribute. :meth:`new_row`
    hands out a row in its initial state, growing the arrays by a quarter when they are full
    (so at most a fifth of their rows lie unused, at the price of more copies while they grow
    than doubling would make), and :meth:`release` resets rows for reuse, so the arrays stay
    as long as the most rows ever live at once.
    """

    columns: dict[str, Column]

    def __init__(self, capacity: int = 64) -> None:
        self.free: list[int] = []
        self.used = 0
        self.capacity = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        for name, column in self.columns.items():
            new = np.full((capacity, *column.shape), column.initial, dtype=column.dtype)
            if self.capacity:
                new[: self.capacity] = getattr(self, name)
            setattr(self, name, new)
        self.capacity = capacity

    def new_row(self) -> int:
        if self.free:
            return self.free.pop()
        if self.used == self.capacity:
            self._grow(self.capacity + max(64, self.capacity // 4))
        self.used += 1
        return self.used - 1

    def release(self, rows: list[int]) -> None:
        if not rows:
            return
        index = np.asarray(rows)
        for name, column in self.columns.items():
            getattr(self, name)[index] = column.initial
        self.free.extend(rows)
