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
    hands out a row in its initial state, growing the arrays by an eighth when they are full
    (so at most a ninth of their rows lie unused), and :meth:`release` resets rows for reuse,
    so the arrays stay as long as the most rows ever live at once.

    An array grows in place where it can (``ndarray.resize``: glibc moves a large block's
    pages with ``mremap`` rather than copying them), so a growth does not hold the old and
    the new array at once. That is the common case; an array that does not own its memory
    (unpickled from a snapshot) or is referenced elsewhere is copied into a new one instead.
    """

    columns: dict[str, Column]

    def __init__(self, capacity: int = 64) -> None:
        self.free: list[int] = []
        self.used = 0
        for name, column in self.columns.items():
            setattr(self, name, np.full((capacity, *column.shape), column.initial, dtype=column.dtype))
        self.capacity = capacity

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        for name, column in self.columns.items():
            shape = (capacity, *column.shape)
            try:
                getattr(self, name).resize(shape)  # refused: not its own memory, or referenced elsewhere
            except ValueError:
                grown = np.empty(shape, dtype=column.dtype)
                grown[:old] = getattr(self, name)
                setattr(self, name, grown)
            getattr(self, name)[old:] = column.initial
        self.capacity = capacity

    def new_row(self) -> int:
        if self.free:
            return self.free.pop()
        if self.used == self.capacity:
            self._grow(self.capacity + max(64, self.capacity // 8))
        self.used += 1
        return self.used - 1

    def release(self, rows: list[int]) -> None:
        if not rows:
            return
        index = np.asarray(rows)
        for name, column in self.columns.items():
            getattr(self, name)[index] = column.initial
        self.free.extend(rows)
