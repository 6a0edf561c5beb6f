"""An online forecaster for one telemetry field, and how far a reading lands from its forecast."""

from __future__ import annotations

import math
from array import array

DAY_BINS = 48
"""Half-hour bins of the time of day."""
WEEK_BINS = 168
"""Hour bins of the time of the week."""
_DAY_BIN_SECONDS = 86_400.0 / DAY_BINS
_WEEK_BIN_SECONDS = 604_800.0 / WEEK_BINS
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

    The state is three small lists and two single-precision profiles (about 1 KiB), pickled
    as a tuple.

    Examples
    --------
    >>> forecaster = FieldForecaster()
    >>> for i in range(100):
    ...     _ = forecaster.push(i * 300.0, 20.0 + (i % 2) * 0.5)
    >>> round(forecaster.push(100 * 300.0, 20.0), 2), round(forecaster.push(101 * 300.0, 30.0), 1)
    (-0.99, 34.7)
    """

    __slots__ = ("_count", "_day", "_level", "_spread", "_week")

    def __init__(self) -> None:
        nan = math.nan
        self._level = [nan, nan, nan]
        self._spread = [nan, nan, nan]
        self._count = [0, 0, 0]
        # Single precision: a profile holds deviations from the level, and 4 bytes a bin halve
        # the largest part of a field's state.
        self._day = array("f", (nan,) * DAY_BINS)
        self._week = array("f", (nan,) * WEEK_BINS)

    def push(self, timestamp: float, reading: float) -> float:
        """The signed error of the forecaster with the smallest spread, in that spread (0 until one
        is ready); then every forecaster learns ``reading``."""
        levels = self._level
        week_time = timestamp - _WEEK_START
        day_bin = int(week_time // _DAY_BIN_SECONDS) % DAY_BINS
        week_bin = int(week_time // _WEEK_BIN_SECONDS) % WEEK_BINS
        day, week = self._day, self._week
        day_seasonal, week_seasonal = day[day_bin], week[week_bin]

        # Each forecaster's error on this reading (NaN while it has no forecast), then its spread.
        level = levels[0]
        best, best_spread = self._judge(0, reading - level, LEVEL_WARMUP, 0.0, math.inf)
        best, best_spread = self._judge(1, reading - day_seasonal - levels[1], SEASONAL_WARMUP, best, best_spread)
        best, best_spread = self._judge(2, reading - week_seasonal - levels[2], SEASONAL_WARMUP, best, best_spread)

        # Then each learns the reading.
        levels[0] = reading if level != level else level + LEVEL_RATE * (reading - level)
        levels[1] = _learn_seasonal(day, day_bin, levels[1], reading)
        levels[2] = _learn_seasonal(week, week_bin, levels[2], reading)
        return best if -RESIDUAL_CAP < best < RESIDUAL_CAP else math.copysign(RESIDUAL_CAP, best)

    @property
    def level(self) -> float:
        """The smoothed level: the level forecaster's next forecast (NaN before a reading)."""
        return self._level[0]

    def _judge(self, k: int, error: float, ready_at: int, best: float, best_spread: float) -> tuple[float, float]:
        """Update forecaster ``k``'s spread with ``error``; returns the best standardised error so far."""
        if error != error:  # no forecast yet
            return best, best_spread
        spread = self._spread[k]
        count = self._count[k]
        if count >= LEVEL_WARMUP and spread > 0.0:  # (False for a NaN spread)
            if count >= ready_at and spread < best_spread:
                best, best_spread = error / spread, spread
            bound = WINSOR * spread
            error = bound if error > bound else -bound if error < -bound else error
        squared = error * error
        # The mean of the squared errors so far, until it holds 1/ERROR_RATE of them; then smoothed.
        if spread != spread:
            variance = squared
        else:
            rate = 1.0 / (count + 1)
            if rate < ERROR_RATE:
                rate = ERROR_RATE
            variance = spread * spread + rate * (squared - spread * spread)
        self._spread[k] = math.sqrt(variance)
        self._count[k] = count + 1
        return best, best_spread

    def __getstate__(self) -> tuple:
        return self._level, self._spread, self._count, self._day, self._week

    def __setstate__(self, state: tuple) -> None:
        self._level, self._spread, self._count, self._day, self._week = state


def _learn_seasonal(profile: array, bin_index: int, level: float, reading: float) -> float:
    """The profile's bin and the level learn ``reading``; returns the new level."""
    if level != level:
        level = 0.0
    seasonal = profile[bin_index]
    if seasonal != seasonal:
        profile[bin_index] = seasonal = reading - level
    else:
        profile[bin_index] = seasonal = seasonal + PROFILE_RATE * (reading - level - seasonal)
    return level + LEVEL_RATE * (reading - seasonal - level)
