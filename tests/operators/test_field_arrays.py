"""The array version of a field's window, forecasters and relations against the classes that define them."""

import math
import random

import numpy as np
import pytest

from operators.correlation import FieldRelations
from operators.field_arrays import FieldArrays
from operators.forecast import FieldForecaster
from operators.rolling_stats import RollingStats


def _series(rng: random.Random, length: int) -> list[float]:
    """A daily rhythm with noise, a flat stretch, spikes and a level shift: every branch of the code."""
    values = []
    for i in range(length):
        x = 20.0 + 5.0 * math.sin(i / 48 * 2 * math.pi) + rng.gauss(0.0, 0.5)
        if 300 <= i < 340:
            x = 17.0  # stuck
        if i % 97 == 0:
            x += 30.0
        if i > 600:
            x += 8.0
        values.append(round(x, 2))
    return values


def test_windows_and_forecasters_match_their_classes_reading_for_reading():
    rng = random.Random(5)
    fields = 7
    series = [_series(rng, 1500) for _ in range(fields)]
    windows = [RollingStats(100, 10) for _ in range(fields)]
    forecasters = [FieldForecaster() for _ in range(fields)]
    arrays = FieldArrays(100, 10, capacity=2)  # grows while the test runs
    slots = np.array([arrays.new_row() for _ in range(fields)])
    for i in range(1500):
        # Each step some fields have a reading, and their times are their own.
        present = [f for f in range(fields) if (i + f) % 3 != 0 or f == 0]
        timestamps = np.array([i * 1800.0 + 7 * f for f in present])
        readings = np.array([series[f][i] for f in present])
        z, previous = arrays.push(slots[present], readings)
        errors = arrays.forecast(slots[present], timestamps, readings)
        gaps = arrays.short_vs_long(slots[present])
        for k, f in enumerate(present):
            assert previous[k] == windows[f].last_z
            assert z[k] == windows[f].push(readings[k])
            assert errors[k] == forecasters[f].push(float(timestamps[k]), float(readings[k]))
            assert (gaps[0][k], gaps[1][k], gaps[2][k]) == windows[f].short_vs_long()
            assert arrays.mean(slots[[f]])[0] == pytest.approx(windows[f].mean, rel=1e-15, abs=1e-15)
            assert arrays.level[slots[f], 0] == forecasters[f].level


def test_running_sums_are_recomputed_as_the_class_does():
    window, arrays = RollingStats(5, 2), FieldArrays(5, 2)
    slot = np.array([arrays.new_row()])
    for i in range(RollingStats._RESUM_EVERY + 3):
        x = 1e6 + (i % 7) * 0.1
        assert arrays.push(slot, np.array([x]))[0][0] == window.push(x)
    assert arrays.sum[slot[0]] == window._sum and arrays.short_sumsq[slot[0]] == window._short_sumsq


def test_relations_match_the_class_for_devices_with_two_and_three_fields():
    rng = random.Random(9)
    arrays = FieldArrays(10, 2)
    devices = {"pair": ["cpu", "temperature"], "triple": ["cpu", "latency", "temperature"]}
    reference = {name: FieldRelations() for name in devices}
    slots = np.full((2, 3), -1)
    for d, names in enumerate(devices.values()):
        slots[d, : len(names)] = [arrays.new_row() for _ in names]
    counts = np.array([2, 3])
    for t in range(800):
        load = math.sin(t / 25)
        smoothed = np.zeros((2, 3))
        for d, names in enumerate(devices.values()):
            for j in range(len(names)):
                smoothed[d, j] = load + 0.2 * rng.gauss(0.0, 1.0) + (6.0 if t == 500 and j == 1 else 0.0)
        best, index = arrays.relate(slots, smoothed, counts)
        for d, (name, names) in enumerate(devices.items()):
            expected = reference[name].update(names, smoothed[d, : len(names)].tolist())
            assert (best[d], index[d]) == expected


def test_a_released_slot_is_a_new_field_again():
    arrays = FieldArrays(10, 2)
    slot = arrays.new_row()
    arrays.push(np.array([slot]), np.array([3.0]))
    arrays.forecast(np.array([slot]), np.array([0.0]), np.array([3.0]))
    arrays.release([slot])
    assert arrays.new_row() == slot
    assert arrays.count[slot] == 0 and math.isnan(arrays.level[slot, 0]) and np.isnan(arrays.day[slot]).all()
