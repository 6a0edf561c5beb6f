import math
import pickle

import pytest

from operators.rolling_stats import Z_CAP, RollingStats


def filled(readings: list[float], size: int = 100, short_size: int = 10) -> RollingStats:
    stats = RollingStats(size, short_size)
    for reading in readings:
        stats.push(reading)
    return stats


def test_reference_example_scores_against_the_window_before_the_reading():
    # The reference document rounds the std to 0.15 and prints z = 19.3; by hand:
    # mean = 210.5 / 5 = 42.1; deviations ±0.2, ±0.1, 0 → variance 0.1/5 = 0.02, std 0.1414;
    # z = (45.0 − 42.1) / 0.1414 = 20.51.
    stats = filled([42.1, 42.3, 41.9, 42.0, 42.2])
    assert stats.mean == pytest.approx(42.1)
    assert stats.std == pytest.approx(math.sqrt(0.02))
    assert round(stats.std, 3) == 0.141
    z = stats.push(45.0)
    assert z == pytest.approx(2.9 / math.sqrt(0.02))
    assert round(z, 1) == 20.5
    assert stats.count == 6


def test_push_returns_the_z_before_the_reading_joins():
    stats = filled([1.0, 2.0, 3.0])
    before = stats.z(10.0)
    assert stats.push(10.0) == before
    assert stats.mean == pytest.approx(4.0)


def test_oldest_reading_leaves_a_full_window():
    stats = filled([100.0, 1.0, 2.0, 3.0], size=3, short_size=2)
    assert stats.count == 3
    assert stats.mean == pytest.approx(2.0)
    assert stats.std == pytest.approx(math.sqrt(2 / 3))


def test_short_window_covers_the_latest_readings_only():
    stats = filled([0.0] * 20 + [5.0, 7.0], size=100, short_size=2)
    assert stats.short_mean == pytest.approx(6.0)
    assert stats.short_std == pytest.approx(1.0)
    assert stats.mean == pytest.approx(12.0 / 22)


def test_flat_window_gives_zero_for_the_same_value_and_the_cap_for_another():
    stats = filled([7.0] * 10)
    assert stats.z(7.0) == 0.0
    assert stats.z(7.5) == Z_CAP
    assert stats.z(6.5) == -Z_CAP


def test_large_offsets_keep_their_precision():
    offset = 1.7e9  # an epoch-sized reading: E[x²] − E[x]² would lose every digit
    stats = filled([offset + d for d in (0.1, 0.3, -0.1, 0.0, 0.2)])
    assert stats.std == pytest.approx(math.sqrt(0.02), rel=1e-6)


def test_running_sums_match_a_recomputation_after_many_pushes():
    readings = [math.sin(i) * 1000 + i * 0.01 for i in range(25_000)]
    stats = filled(readings, size=50)
    window = readings[-50:]
    mean = sum(window) / 50
    std = math.sqrt(sum((x - mean) ** 2 for x in window) / 50)
    assert stats.mean == pytest.approx(mean, rel=1e-9)
    assert stats.std == pytest.approx(std, rel=1e-9)


def test_snapshot_is_the_ring_bytes_and_a_few_numbers():
    stats = filled([float(i) for i in range(1000)])
    restored = pickle.loads(pickle.dumps(stats))
    assert len(pickle.dumps(stats)) < 800 + 200  # 100 doubles, plus the sums and positions
    assert (restored.mean, restored.std, restored.z(5.0)) == (stats.mean, stats.std, stats.z(5.0))
    assert restored.push(3.0) == stats.push(3.0)


@pytest.mark.parametrize("change", [lambda state: state[:-1], lambda state: (*state, 0)])
def test_a_snapshot_of_another_shape_fails_when_it_is_unpickled(change):
    stats = filled([1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="another version"):
        RollingStats.__new__(RollingStats).__setstate__(change(stats.__getstate__()))


@pytest.mark.parametrize(("size", "short_size"), [(1, 1), (10, 0), (10, 11)])
def test_bad_sizes_are_refused(size, short_size):
    with pytest.raises(ValueError, match="size"):
        RollingStats(size, short_size)
