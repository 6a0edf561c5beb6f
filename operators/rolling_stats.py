"""Rolling mean and population standard deviation over the last N readings."""

from __future__ import annotations

import math
from array import array

Z_CAP = 1000.0
"""|z| is capped here so that a reading off a perfectly flat window stays a finite number."""


class RollingStats:
    """Mean, std and z-score over a window of the last ``size`` readings of one field.

    A reading is scored against the window *before* it joins the window, so a spike
    does not dilute its own z-score. A second, shorter window (the last ``short_size``
    readings) shares the same ring buffer and gives the short-term spread and level
    that the features compare against the long window.

    The state is one ``array('d')`` ring buffer plus running sums of the readings minus
    the first reading (which keeps ``E[x²] - E[x]²`` accurate for large offsets). It
    pickles to little more than the ring's bytes, which keeps recovery snapshots small.

    Parameters
    ----------
    size
        Readings in the long window (at least 2).
    short_size
        Readings in the short window (1 to ``size``).

    Examples
    --------
    >>> stats = RollingStats(size=100)
    >>> for reading in [42.1, 42.3, 41.9, 42.0, 42.2]:
    ...     _ = stats.push(reading)
    >>> round(stats.mean, 3), round(stats.std, 3), round(stats.z(45.0), 1)
    (42.1, 0.141, 20.5)
    """

    __slots__ = (
        "_pos",
        "_pushes",
        "_ring",
        "_shift",
        "_short_size",
        "_short_sum",
        "_short_sumsq",
        "_sum",
        "_sumsq",
        "count",
        "last_z",
    )

    _RESUM_EVERY = 10_000
    """Running sums drift with float rounding; they are recomputed from the ring this often."""

    def __init__(self, size: int, short_size: int = 10) -> None:
        if size < 2:
            raise ValueError(f"size must be at least 2, got {size}")
        if not 1 <= short_size <= size:
            raise ValueError(f"short_size must be between 1 and size ({size}), got {short_size}")
        self._ring = array("d", bytes(8 * size))
        self._pos = 0
        self.count = 0
        self._shift = 0.0
        self._sum = 0.0
        self._sumsq = 0.0
        self._short_size = short_size
        self._short_sum = 0.0
        self._short_sumsq = 0.0
        self._pushes = 0
        self.last_z = 0.0  # the latest reading's z, for the change of z between readings

    @property
    def size(self) -> int:
        return len(self._ring)

    @property
    def mean(self) -> float:
        return self._shift + self._sum / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        return _std(self._sum, self._sumsq, self.count)

    @property
    def short_count(self) -> int:
        return min(self.count, self._short_size)

    @property
    def short_mean(self) -> float:
        n = self.short_count
        return self._shift + self._short_sum / n if n else 0.0

    @property
    def short_std(self) -> float:
        return _std(self._short_sum, self._short_sumsq, self.short_count)

    def z(self, reading: float) -> float:
        """The z-score of ``reading`` against the window as it is now (0 for an empty window)."""
        n = self.count
        if n == 0:
            return 0.0
        centred_mean = self._sum / n
        variance = self._sumsq / n - centred_mean * centred_mean
        deviation = reading - self._shift - centred_mean
        if variance > 0.0:
            std = math.sqrt(variance)
            if std > 1e-12 * max(1.0, abs(self._shift + centred_mean)):
                z = deviation / std
                return Z_CAP if z > Z_CAP else -Z_CAP if z < -Z_CAP else z
        if deviation == 0.0:
            return 0.0
        return math.copysign(Z_CAP, deviation)

    def short_vs_long(self) -> tuple[float, float, float]:
        """``(|short mean − long mean|, short std, long std)`` from the running sums in one go."""
        n = self.count
        if n == 0:
            return 0.0, 0.0, 0.0
        m = n if n < self._short_size else self._short_size
        mean = self._sum / n
        variance = self._sumsq / n - mean * mean
        short_mean = self._short_sum / m
        short_variance = self._short_sumsq / m - short_mean * short_mean
        return (
            abs(short_mean - mean),
            math.sqrt(short_variance) if short_variance > 0.0 else 0.0,
            math.sqrt(variance) if variance > 0.0 else 0.0,
        )

    def push(self, reading: float) -> float:
        """Score ``reading`` against the window, then add it; returns its z-score."""
        z = self.z(reading)
        ring = self._ring
        size = len(ring)
        pos = self._pos
        before = self.count
        if before == 0:
            self._shift = reading
        if before == size:
            leaving = ring[pos] - self._shift
            self._sum -= leaving
            self._sumsq -= leaving * leaving
        else:
            self.count += 1
        if before >= self._short_size:
            leaving_short = ring[(pos - self._short_size) % size] - self._shift
            self._short_sum -= leaving_short
            self._short_sumsq -= leaving_short * leaving_short
        ring[pos] = reading
        self._pos = (pos + 1) % size
        centred = reading - self._shift
        self._sum += centred
        self._sumsq += centred * centred
        self._short_sum += centred
        self._short_sumsq += centred * centred
        self._pushes += 1
        if self._pushes % self._RESUM_EVERY == 0:
            self._resum()
        self.last_z = z
        return z

    def __getstate__(self) -> tuple:
        """A tuple rather than a dict of slot names: a shard snapshot holds thousands of these."""
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple) -> None:
        if len(state) != len(self.__slots__):
            raise ValueError(
                f"a RollingStats snapshot holds {len(self.__slots__)} values, this one {len(state)}:"
                " it was written by another version of FLEAD"
            )
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)

    def _resum(self) -> None:
        size = len(self._ring)
        window = [self._ring[(self._pos - 1 - i) % size] - self._shift for i in range(self.count)]
        short = window[: self.short_count]
        self._sum = math.fsum(window)
        self._sumsq = math.fsum(x * x for x in window)
        self._short_sum = math.fsum(short)
        self._short_sumsq = math.fsum(x * x for x in short)


def _std(total: float, total_sq: float, n: int) -> float:
    if n == 0:
        return 0.0
    mean = total / n
    variance = total_sq / n - mean * mean
    return math.sqrt(variance) if variance > 0.0 else 0.0
