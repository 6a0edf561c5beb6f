"""Scale-free features of one reading, the same in meaning on every device.

FedAvg averages weights across devices, so a feature must mean the same thing on a
thermometer in °C and on a CPU gauge in %: every feature here is built from
standardized quantities (z-scores and ratios of spreads), never from raw levels.
A device with several fields contributes the most extreme field to each feature, so
the vector has the same length on every device.
"""

from __future__ import annotations

import math

from operators.rolling_stats import RollingStats

FEATURE_NAMES = (
    "abs_z",
    "abs_z_mean",
    "z_change",
    "level_shift",
    "spread_ratio",
    "flat",
)
"""
- ``abs_z``: the largest |z| of the reading's fields against their long windows;
- ``abs_z_mean``: the mean |z| over the fields;
- ``z_change``: the largest change of z since the field's previous reading;
- ``level_shift``: the largest |short-window mean − long-window mean| in long-window stds;
- ``spread_ratio``: the largest log of short-window std over long-window std;
- ``flat``: 1 when some field has not moved over its whole short window (stuck sensor).
"""

FEATURE_CAP = 10.0
"""Features are clipped to ±10 so that one absurd reading cannot blow up a model's weights."""


def _clip(x: float) -> float:
    return FEATURE_CAP if x > FEATURE_CAP else -FEATURE_CAP if x < -FEATURE_CAP else x


def reading_features(z_scores: list[float], z_changes: list[float], windows: list[RollingStats]) -> dict[str, float]:
    """Features of one reading from its fields' z-scores and their windows *after* the reading."""
    abs_z = 0.0
    abs_z_sum = 0.0
    z_change = 0.0
    level_shift = 0.0
    spread_ratio = -FEATURE_CAP
    flat = 0.0
    for z, dz, window in zip(z_scores, z_changes, windows, strict=True):
        a = z if z >= 0.0 else -z
        abs_z_sum += a
        if a > abs_z:
            abs_z = a
        if dz < 0.0:
            dz = -dz
        if dz > z_change:
            z_change = dz
        mean_gap, short_std, long_std = window.short_vs_long()
        if long_std > 0.0:
            shift = mean_gap / long_std
            if shift > level_shift:
                level_shift = shift
            if short_std > 0.0:
                ratio = math.log(short_std / long_std)
                if ratio > spread_ratio:
                    spread_ratio = ratio
        if short_std == 0.0 and window.count > 1:
            flat = 1.0
    return {
        "abs_z": _clip(abs_z),
        "abs_z_mean": _clip(abs_z_sum / len(z_scores)),
        "z_change": _clip(z_change),
        "level_shift": _clip(level_shift),
        "spread_ratio": _clip(spread_ratio) if spread_ratio > -FEATURE_CAP else 0.0,
        "flat": flat,
    }
