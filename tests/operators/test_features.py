import pytest

from operators.features import FEATURE_NAMES, reading_features
from operators.rolling_stats import RollingStats


def features_after(readings: list[float]) -> dict[str, float]:
    window = RollingStats(50, 5)
    z = previous = 0.0
    for reading in readings:
        previous = window.last_z
        z = window.push(reading)
    return reading_features([z], [z - previous], [window])


SIGNAL = [20 + (i % 7) * 0.3 for i in range(60)] + [26.0]


def test_features_are_scale_free():
    celsius = features_after(SIGNAL)
    cpu_percent = features_after([r * 3.7 + 1000 for r in SIGNAL])
    assert cpu_percent == pytest.approx(celsius, rel=1e-6)


def test_a_spike_raises_abs_z_and_its_change():
    quiet = features_after([*SIGNAL[:-1], SIGNAL[-2]])
    spike = features_after(SIGNAL)
    assert spike["abs_z"] > 3 > quiet["abs_z"]
    assert spike["z_change"] > quiet["z_change"]


def test_a_stuck_sensor_is_flat():
    assert features_after(SIGNAL[:-1] + [21.0] * 6)["flat"] == 1.0
    assert features_after(SIGNAL)["flat"] == 0.0


def test_a_level_shift_shows_between_the_windows():
    shifted = features_after(SIGNAL[:-1] + [25.0 + (i % 2) * 0.3 for i in range(5)])
    assert shifted["level_shift"] > 2


def test_every_feature_is_bounded_and_named():
    extreme = features_after([0.0] * 30 + [1e12])
    assert tuple(extreme) == FEATURE_NAMES
    assert all(-10 <= value <= 10 for value in extreme.values())


def test_several_fields_contribute_their_most_extreme_value():
    calm, wild = RollingStats(20, 5), RollingStats(20, 5)
    for i in range(20):
        calm.push(float(i % 3))
        wild.push(float(i % 3))
    z_calm, z_wild = calm.push(1.0), wild.push(40.0)
    features = reading_features([z_calm, z_wild], [0.0, z_wild], [calm, wild])
    assert features["abs_z"] == pytest.approx(min(abs(z_wild), 10))
    assert features["abs_z_mean"] == pytest.approx(min((abs(z_calm) + abs(z_wild)) / 2, 10))
