"""How far the fields of one device have moved apart from how they usually move together."""

from __future__ import annotations

import math

MEMORY = 500
"""The relations are exponentially weighted over about this many readings."""
WARMUP = 50
"""Readings of a relation before its residual counts."""
RESIDUAL_CAP = 50.0
WINSOR = 5.0


class FieldRelations:
    """For each field of a multi-field device, a running regression of its z-score on the mean
    z-score of the device's other fields, and the spread of what that regression leaves.

    A machine's temperature, CPU and latency follow its load together; a field that stops
    following the others (a broken sensor, a cable swapped, a cooling fault) can stay in its
    usual range, where no one field's evidence sees it. :meth:`update` returns the largest
    residual, in its own spreads, and its field's index (``(0.0, -1)`` for one field, or
    until a relation has seen :data:`WARMUP` readings).

    Examples
    --------
    >>> import math
    >>> relations = FieldRelations()
    >>> for t in range(300):
    ...     load = math.sin(t / 20)
    ...     _ = relations.update(["cpu", "temperature"], [load + 0.1 * math.sin(t), load + 0.1 * math.cos(t)])
    >>> residual, field = relations.update(["cpu", "temperature"], [1.0, -1.0])
    >>> field, residual > 5
    (0, True)
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: dict[str, list[float]] = {}
        """Per field: readings, E[z·m], E[m²], E[residual²] (m: the other fields' mean z)."""

    def update(self, fields: list[str], z_scores: list[float]) -> tuple[float, int]:
        n = len(z_scores)
        if n < 2:
            return 0.0, -1
        total = math.fsum(z_scores)
        best, best_index = 0.0, -1
        state = self._state
        for i in range(n):
            z = z_scores[i]
            others = (total - z) / (n - 1)
            relation = state.get(fields[i])
            if relation is None:
                relation = state[fields[i]] = [0.0, 0.0, 0.0, 0.0]
            count, zm, mm, rr = relation
            residual = z - (zm / mm if mm > 0.0 else 0.0) * others
            if count >= WARMUP and rr > 0.0:
                spread = math.sqrt(rr)
                standardised = abs(residual) / spread
                if standardised > best:
                    best, best_index = standardised, i
                if standardised > WINSOR:  # an outlier does not widen its own yardstick
                    residual = math.copysign(WINSOR * spread, residual)
            count += 1.0
            rate = 1.0 / (count if count < MEMORY else MEMORY)
            relation[0] = count
            relation[1] = zm + rate * (z * others - zm)
            relation[2] = mm + rate * (others * others - mm)
            relation[3] = rr + rate * (residual * residual - rr)
        return (best if best < RESIDUAL_CAP else RESIDUAL_CAP), best_index

    def __getstate__(self) -> dict[str, list[float]]:
        return self._state

    def __setstate__(self, state: dict[str, list[float]]) -> None:
        self._state = state
