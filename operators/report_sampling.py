"""Which readings the run report keeps: every reading of a short stream, an evenly spaced
subset of a long one, chosen without knowing how long the stream will be.

Reading ``n`` (from 1) of a device is kept while the device has at most ``capacity`` readings;
after that every second, fourth, ... reading, the spacing a power of two that keeps at most
``capacity`` of the first ``n``. As the spacing only doubles, every reading kept at the end
was also kept when it arrived, so the shards can send the report a growing but bounded share
of each stream and the report thins it further when the stream ends.

>>> [n for n in range(1, 21) if is_kept(n, capacity=5)]
[1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20]
>>> [n for n in range(1, 21) if n % stride(20, capacity=5) == 0]
[4, 8, 12, 16, 20]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from operators.device import Detection

MIN_POINTS_PER_DEVICE = 50
"""However large the fleet, the report keeps at least this many readings of every device it
draws; so it draws at most ``FLEAD_REPORT_POINTS`` / this many devices."""


class ReportPoint(NamedTuple):
    """A reading as the run report takes it: what its chart shows of it, and no more. A
    shard's points cross to the summary's worker, where a detection would cost ten times as
    much to pickle."""

    device_id: str
    reading_index: int
    """The reading's place in its device's stream, from 1."""
    timestamp: float
    values: dict[str, float]
    score: float
    severity: str | None
    """``None``: not an anomaly."""
    field: str
    """The field whose evidence was rarest (an anomaly's; empty otherwise)."""
    alert: bool


class ReportPoints(list[ReportPoint]):
    """A shard's points of one batch, as they go to the summary's worker.

    They cross between processes as plain tuples: pickle calls back into Python for each
    named tuple, and a point took 1.28 µs to dump and load that way against 0.32 µs as a
    tuple (300 points of the benchmark fleet's shape).
    """

    def __reduce__(self) -> tuple[Any, tuple[list[tuple[Any, ...]]]]:
        return _report_points, ([tuple(point) for point in self],)


def _report_points(rows: list[tuple[Any, ...]]) -> ReportPoints:
    new = tuple.__new__
    return ReportPoints([new(ReportPoint, row) for row in rows])


def report_point(detection: Detection) -> ReportPoint:
    reading = detection.reading
    severity, field = (detection.severity or "warning", detection.field) if detection.is_anomaly else (None, "")
    return ReportPoint(
        reading.device_id,
        detection.reading_index,
        reading.timestamp,
        reading.values,
        detection.score,
        severity,
        field,
        detection.alert,
    )


def stride(readings: int, capacity: int) -> int:
    """The spacing, a power of two, that keeps at most ``capacity`` of ``readings`` readings."""
    return 1 if readings <= capacity else 1 << ((readings - 1) // capacity).bit_length()


def is_kept(index: int, capacity: int) -> bool:
    """Whether reading ``index`` (from 1) is kept when it arrives."""
    return index <= capacity or index % stride(index, capacity) == 0


def kept_many(indexes: np.ndarray, capacity: int) -> np.ndarray:
    """:func:`is_kept` of each of ``indexes`` (integers below 2⁵³).

    ``frexp`` gives the exponent ``e`` with ``q = m·2^e``, ``0.5 ≤ m < 1``: the bit length of
    ``q``, exactly, for an integer a float holds exactly.

    >>> kept_many(np.arange(1, 21), capacity=5).nonzero()[0].tolist() == [n - 1 for n in range(1, 21) if is_kept(n, 5)]
    True
    """
    _, bits = np.frexp(((indexes - 1) // capacity).astype(np.float64))
    return (indexes <= capacity) | (indexes % (np.int64(1) << bits.astype(np.int64)) == 0)


def capacity_per_device(points: int, devices: int) -> int:
    """Readings per device when ``points`` are shared by ``devices`` devices."""
    return max(MIN_POINTS_PER_DEVICE, points // max(1, devices))
