"""An online forecaster for one telemetry field, and how far a reading lands from its forecast."""

from __future__ import annotations

import math
from array import array

DAY_BINS = 48
"""Half-hour bins of the time of day."""
WEEK_BINS = 168
"""Hour bins of the time of the week."""
_BIN_SECONDS = (0.0, 86_400.0 / DAY_BINS, 3_600.0)
_BINS = (0, DAY_BINS, WEEK_BINS)
_WEEK_START = 345_600.0
"""Unix time 0 was a Thursday: the week's bins start on Monday 00:00 UTC."""

LEVEL_RATE = 0.2
"""How fast a level follows the deseasonalised readings (exponential smoothing)."""
PROFILE_RATE = 0.2
"""How fast a seasonal bin follows what its readings show."""
ERROR_RATE = 0.01
"""How fast the spread of the forecast errors follows them."""
WINSOR = 5.0
"""An error counts into the spread at most this many spreads large, so an anomaly does not
widen the yardstick it is measured with."""
LEVEL_WARMUP = 20
SEASONAL_WARMUP = 200
"""Forecasts a forecaster must have made before its error counts: a seasonal one sees each
bin several times first."""
RESIDUAL_CAP = 50.0


class FieldForecaster:
    """Three forecasts of the next reading, and the standardised error of the best of them.

    - *level*: an exponentially smoothed level;
    - *daily*: the level plus a profile of the time of day (48 bins);
    - *weekly*: the level plus a profile of the time of week (168 bins).

    Each forecaster keeps the spread of its own errors (their root mean square, smoothed).
    :meth:`push` returns the error of the forecaster with the smallest spread, in that
    spread: a series with a daily rhythm is judged against yesterday's shape, a flat one
    against its level, without a setting. The seasonal forecasters need the readings'
    timestamps and enough history; until then the level forecaster speaks.

    The state is three small arrays and two profiles (1.7 KiB), pickled as a tuple.

    Examples
    --------
    >>> forecaster = FieldForecaster()
    >>> for i in range(100):
    ...     _ = forecaster.push(i * 300.0, 20.0 + (i % 2) * 0.5)
    >>> round(forecaster.push(100 * 300.0, 20.0), 2), round(forecaster.push(101 * 300.0, 30.0), 1)
    (-0.99, 34.7)
    """

    __slots__ = ("_count", "_level", "_profiles", "_spread")

    def __init__(self) -> None:
        nan = math.nan
        self._level = array("d", (nan, nan, nan))
        self._spread = array("d", (nan, nan, nan))
        self._count = array("l", (0, 0, 0))
        self._profiles = (None, array("d", (nan,) * DAY_BINS), array("d", (nan,) * WEEK_BINS))

    def push(self, timestamp: float, reading: float) -> float:
        """The signed error of the forecaster with the smallest spread, in that spread (0 until one
        is ready); then every forecaster learns ``reading``."""
        best, best_spread = 0.0, math.inf
        week_time = timestamp - _WEEK_START
        for k in range(3):
            profile = self._profiles[k]
            if profile is None:
                bin_index, seasonal = -1, 0.0
            else:
                bin_index = int(week_time // _BIN_SECONDS[k]) % _BINS[k]
                seasonal = profile[bin_index]
            level = self._level[k]
            if level == level and seasonal == seasonal:  # neither is NaN: a forecast exists
                error = reading - seasonal - level
                spread = self._spread[k]
                count = self._count[k]
                if spread == spread and spread > 0.0 and count >= LEVEL_WARMUP:
                    ready = count >= (LEVEL_WARMUP if profile is None else SEASONAL_WARMUP)
                    if ready and spread < best_spread:
                        best, best_spread = error / spread, spread
                    bound = WINSOR * spread
                    error = bound if error > bound else -bound if error < -bound else error
                squared = error * error
                # The mean of the squared errors so far, until it holds 1/ERROR_RATE of them; then smoothed.
                rate = max(ERROR_RATE, 1.0 / (count + 1))
                variance = squared if spread != spread else spread * spread + rate * (squared - spread * spread)
                self._spread[k] = math.sqrt(variance)
                self._count[k] = count + 1
            self._learn(k, bin_index, reading)
        return best if -RESIDUAL_CAP < best < RESIDUAL_CAP else math.copysign(RESIDUAL_CAP, best)

    def _learn(self, k: int, bin_index: int, reading: float) -> None:
        level = self._level[k]
        profile = self._profiles[k]
        if profile is None:
            self._level[k] = reading if level != level else level + LEVEL_RATE * (reading - level)
            return
        if level != level:
            level = self._level[k] = 0.0
        seasonal = profile[bin_index]
        if seasonal != seasonal:
            profile[bin_index] = seasonal = reading - level
        else:
            profile[bin_index] = seasonal = seasonal + PROFILE_RATE * (reading - level - seasonal)
        self._level[k] = level + LEVEL_RATE * (reading - seasonal - level)

    def __getstate__(self) -> tuple:
        return self._level, self._spread, self._count, self._profiles

    def __setstate__(self, state: tuple) -> None:
        self._level, self._spread, self._count, self._profiles = state
