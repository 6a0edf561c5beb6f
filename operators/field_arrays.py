"""The per-field state of many devices as arrays: rolling windows, forecasters and field relations.

Each telemetry field of each device is a *slot*: one row of every array here. A step takes a
set of distinct slots and one new reading for each, and does for all of them at once what
:class:`operators.rolling_stats.RollingStats`, :class:`operators.forecast.FieldForecaster` and
:class:`operators.correlation.FieldRelations` do for one: the same operations on the same
numbers, in the same order, so the results are those classes' results (a test holds them to
it). Those classes stay the definition; these arrays are how a shard runs them.
"""

from __future__ import annotations

import math

import numpy as np

from operators import correlation, forecast
from operators.rolling_stats import Z_CAP, RollingStats
from operators.row_arrays import Column, RowArrays

_LEVEL, _DAY, _WEEK = 0, 1, 2
_READY = np.array([forecast.LEVEL_WARMUP, forecast.SEASONAL_WARMUP, forecast.SEASONAL_WARMUP])
"""Each forecaster's readings before it may be chosen."""


class FieldArrays(RowArrays):
    """Windows, forecasters and relations of up to ``capacity`` slots, grown on demand.

    Parameters
    ----------
    window
        Readings in each long window (``FLEAD_WINDOW``).
    short_window
        Readings in each short window.
    """

    def __init__(self, window: int, short_window: int, capacity: int = 64) -> None:
        RollingStats(window, short_window)  # checks the sizes, with its own messages
        self.window = window
        self.short_window = short_window
        self.columns = _columns(window)
        super().__init__(capacity)

    def push(self, slots: np.ndarray, readings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each slot's ``RollingStats.push``: the readings' z-scores against their windows,
        then the readings join them. Returns the z-scores and the previous readings' ``last_z``."""
        count = self.count[slots]
        shift = self.shift[slots]
        total = self.sum[slots]
        total_sq = self.sumsq[slots]
        previous_z = self.last_z[slots]

        # RollingStats.z
        n = np.maximum(count, 1)
        centred_mean = total / n
        variance = total_sq / n - centred_mean * centred_mean
        deviation = readings - shift - centred_mean
        std = np.sqrt(np.where(variance > 0.0, variance, 0.0))
        spread_ok = (variance > 0.0) & (std > 1e-12 * np.maximum(1.0, np.abs(shift + centred_mean)))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.clip(deviation / std, -Z_CAP, Z_CAP)
        flat = np.where(deviation == 0.0, 0.0, np.copysign(Z_CAP, deviation))
        z = np.where(count == 0, 0.0, np.where(spread_ok, z, flat))

        # RollingStats.push
        size, short = self.window, self.short_window
        pos = self.pos[slots]
        shift = np.where(count == 0, readings, shift)
        full = count == size
        leaving = self.ring[slots, pos] - shift
        total = np.where(full, total - leaving, total)
        total_sq = np.where(full, total_sq - leaving * leaving, total_sq)
        count = np.where(full, count, count + 1)
        short_sum = self.short_sum[slots]
        short_sq = self.short_sumsq[slots]
        leaves_short = self.count[slots] >= short
        leaving_short = self.ring[slots, (pos - short) % size] - shift
        short_sum = np.where(leaves_short, short_sum - leaving_short, short_sum)
        short_sq = np.where(leaves_short, short_sq - leaving_short * leaving_short, short_sq)
        self.ring[slots, pos] = readings
        self.pos[slots] = (pos + 1) % size
        centred = readings - shift
        self.sum[slots] = total + centred
        self.sumsq[slots] = total_sq + centred * centred
        self.short_sum[slots] = short_sum + centred
        self.short_sumsq[slots] = short_sq + centred * centred
        self.count[slots] = count
        self.shift[slots] = shift
        pushes = self.pushes[slots] + 1
        self.pushes[slots] = pushes
        self.last_z[slots] = z
        for slot in slots[pushes % RollingStats._RESUM_EVERY == 0].tolist():
            self._resum(slot)
        return z, previous_z

    def _resum(self, slot: int) -> None:
        """``RollingStats._resum`` for one slot: the running sums again from the ring."""
        size, count, pos, shift = self.window, int(self.count[slot]), int(self.pos[slot]), float(self.shift[slot])
        ring = self.ring[slot].tolist()
        window = [ring[(pos - 1 - i) % size] - shift for i in range(count)]
        short = window[: min(count, self.short_window)]
        self.sum[slot] = math.fsum(window)
        self.sumsq[slot] = math.fsum(x * x for x in window)
        self.short_sum[slot] = math.fsum(short)
        self.short_sumsq[slot] = math.fsum(x * x for x in short)

    def short_vs_long(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``RollingStats.short_vs_long`` of each slot (every slot here holds a reading)."""
        n = self.count[slots]
        m = np.minimum(n, self.short_window)
        mean = self.sum[slots] / n
        variance = self.sumsq[slots] / n - mean * mean
        short_mean = self.short_sum[slots] / m
        short_variance = self.short_sumsq[slots] / m - short_mean * short_mean
        return (
            np.abs(short_mean - mean),
            np.sqrt(np.where(short_variance > 0.0, short_variance, 0.0)),
            np.sqrt(np.where(variance > 0.0, variance, 0.0)),
        )

    def mean(self, slots: np.ndarray) -> np.ndarray:
        return self.shift[slots] + self.sum[slots] / self.count[slots]

    def forecast(self, slots: np.ndarray, timestamps: np.ndarray, readings: np.ndarray) -> np.ndarray:
        """Each slot's ``FieldForecaster.push``: the best forecaster's standardised error on the
        reading, then every forecaster learns it."""
        # Readings near the largest accepted value overflow a single-precision bin to inf and
        # inf - inf to NaN, silently, as Python's floats and array('f') do in FieldForecaster.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._forecast(slots, timestamps, readings)

    def _forecast(self, slots: np.ndarray, timestamps: np.ndarray, readings: np.ndarray) -> np.ndarray:
        week_time = timestamps - forecast._WEEK_START
        day_bin = (week_time // forecast._DAY_BIN_SECONDS).astype(np.int64) % forecast.DAY_BINS
        week_bin = (week_time // forecast._WEEK_BIN_SECONDS).astype(np.int64) % forecast.WEEK_BINS
        day_seasonal = self.day[slots, day_bin].astype(np.float64)
        week_seasonal = self.week[slots, week_bin].astype(np.float64)
        levels = self.level[slots]
        spreads = self.spread[slots]
        counts = self.forecasts[slots]

        errors = np.stack(
            (
                readings - levels[:, _LEVEL],
                readings - day_seasonal - levels[:, _DAY],
                readings - week_seasonal - levels[:, _WEEK],
            ),
            axis=1,
        )
        # FieldForecaster._judge, for the three forecasters at once: each is chosen over the
        # ones before it when its spread is smaller; then each learns its error.
        judged = ~np.isnan(errors)
        bounded = (counts >= forecast.LEVEL_WARMUP) & (spreads > 0.0)
        eligible = bounded & (counts >= _READY) & judged
        with np.errstate(divide="ignore", invalid="ignore"):
            standardised = errors / spreads
        best = np.zeros(len(slots))
        best_spread = np.full(len(slots), math.inf)
        for k in (_LEVEL, _DAY, _WEEK):
            better = eligible[:, k] & (spreads[:, k] < best_spread)
            best = np.where(better, standardised[:, k], best)
            best_spread = np.where(better, spreads[:, k], best_spread)
        bound = forecast.WINSOR * spreads
        errors = np.where(bounded, np.minimum(np.maximum(errors, -bound), bound), errors)
        squared = errors * errors
        rate = np.maximum(1.0 / (counts + 1), forecast.ERROR_RATE)
        variance = np.where(np.isnan(spreads), squared, spreads * spreads + rate * (squared - spreads * spreads))
        spreads = np.where(judged, np.sqrt(variance), spreads)
        counts = np.where(judged, counts + 1, counts)
        self.spread[slots] = spreads
        self.forecasts[slots] = counts

        level = levels[:, _LEVEL]
        levels[:, _LEVEL] = np.where(np.isnan(level), readings, level + forecast.LEVEL_RATE * (readings - level))
        levels[:, _DAY] = self._learn_seasonal(self.day, slots, day_bin, levels[:, _DAY], day_seasonal, readings)
        levels[:, _WEEK] = self._learn_seasonal(self.week, slots, week_bin, levels[:, _WEEK], week_seasonal, readings)
        self.level[slots] = levels
        cap = forecast.RESIDUAL_CAP
        return np.where((-cap < best) & (best < cap), best, np.copysign(cap, best))

    @staticmethod
    def _learn_seasonal(
        profile: np.ndarray,
        slots: np.ndarray,
        bins: np.ndarray,
        level: np.ndarray,
        seasonal: np.ndarray,
        readings: np.ndarray,
    ) -> np.ndarray:
        """``forecast._learn_seasonal``: the bins and the levels learn the readings; returns the new levels.
        The level learns from the bin's new value before it is rounded to single precision."""
        level = np.where(np.isnan(level), 0.0, level)
        seasonal = np.where(
            np.isnan(seasonal), readings - level, seasonal + forecast.PROFILE_RATE * (readings - level - seasonal)
        )
        profile[slots, bins] = seasonal
        return level + forecast.LEVEL_RATE * (readings - seasonal - level)

    def relate(self, slots: np.ndarray, smoothed: np.ndarray, fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``FieldRelations.update`` for many devices: ``slots`` and ``smoothed`` are (devices ×
        fields), each row's first ``fields`` entries used and the rest zero. Returns each
        device's largest standardised residual and its field's index (-1: none)."""
        totals = np.array([math.fsum(row) for row in smoothed.tolist()])
        device, field = np.nonzero(np.arange(slots.shape[1]) < fields[:, None])
        slot = slots[device, field]
        z = smoothed[device, field]
        others = (totals[device] - z) / (fields[device] - 1)
        count, zm, mm, rr = self.relation[slot].T
        with np.errstate(divide="ignore", invalid="ignore"):
            residual = z - np.where(mm > 0.0, zm / mm, 0.0) * others
            spread = np.sqrt(rr)
            standardised = np.abs(residual) / spread
        counted = (count >= correlation.WARMUP) & (rr > 0.0)
        # Each device's largest standardised residual above 0, its first field on a tie.
        candidates = np.zeros(slots.shape)
        candidates[device, field] = np.where(counted & (standardised > 0.0), standardised, 0.0)
        best_index = candidates.argmax(axis=1)
        best = candidates[np.arange(len(best_index)), best_index]
        best_index = np.where(best > 0.0, best_index, -1)
        winsorised = counted & (standardised > correlation.WINSOR)
        residual = np.where(winsorised, np.copysign(correlation.WINSOR * spread, residual), residual)
        count = count + 1.0
        rate = 1.0 / np.minimum(count, correlation.MEMORY)
        self.relation[slot] = np.stack(
            (
                count,
                zm + rate * (z * others - zm),
                mm + rate * (others * others - mm),
                rr + rate * (residual * residual - rr),
            ),
            axis=1,
        )
        return np.minimum(best, correlation.RESIDUAL_CAP), best_index


def _columns(window: int) -> dict[str, Column]:
    """Every per-slot array, and what a new field's slot holds."""
    f64, i64, nan = np.float64, np.int64, math.nan
    return {
        "ring": Column((window,), f64, 0.0),
        "pos": Column((), i64, 0),
        "count": Column((), i64, 0),
        "shift": Column((), f64, 0.0),
        "sum": Column((), f64, 0.0),
        "sumsq": Column((), f64, 0.0),
        "short_sum": Column((), f64, 0.0),
        "short_sumsq": Column((), f64, 0.0),
        "pushes": Column((), i64, 0),
        "last_z": Column((), f64, 0.0),
        "level": Column((3,), f64, nan),
        "spread": Column((3,), f64, nan),
        "forecasts": Column((3,), i64, 0),
        # Single precision, as FieldForecaster keeps its profiles.
        "day": Column((forecast.DAY_BINS,), np.float32, nan),
        "week": Column((forecast.WEEK_BINS,), np.float32, nan),
        "relation": Column((4,), f64, 0.0),
    }
