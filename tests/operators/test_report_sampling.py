import pickle
import pickletools

import numpy as np
import pytest

from operators.report_sampling import (
    MIN_POINTS_PER_DEVICE,
    ReportPoint,
    ReportPoints,
    capacity_per_device,
    is_kept,
    kept_many,
    stride,
)


@pytest.mark.parametrize("capacity", [1, 3, 50, 64])
def test_the_readings_kept_on_arrival_hold_every_reading_the_final_spacing_keeps(capacity):
    for readings in range(1, 2_000, 37):
        spacing = stride(readings, capacity)
        final = [n for n in range(1, readings + 1) if n % spacing == 0]
        assert all(is_kept(n, capacity) for n in final), (capacity, readings)
        assert len(final) <= capacity or spacing == 1


def test_a_long_stream_keeps_about_capacity_times_its_doublings_on_arrival():
    kept = sum(is_kept(n, 100) for n in range(1, 100 * 64 + 1))
    assert kept == 100 + 50 * 6  # all of the first 100; then 50 in each of the 6 doublings up to 6,400


def test_the_spacing_is_the_smallest_power_of_two_that_keeps_at_most_capacity():
    assert [stride(n, 10) for n in (1, 10, 11, 20, 21, 40, 41)] == [1, 1, 2, 2, 4, 4, 8]


def test_a_large_fleet_still_gets_the_minimum_per_device():
    assert capacity_per_device(100_000, 13) == 7_692
    assert capacity_per_device(100_000, 1_000_000) == MIN_POINTS_PER_DEVICE
    assert capacity_per_device(100_000, 0) == 100_000


@pytest.mark.parametrize("capacity", [1, 3, 50, 64, 1_000])
def test_the_array_form_keeps_the_readings_is_kept_keeps(capacity):
    indexes = np.concatenate([np.arange(1, 70_000), [2**40 - 1, 2**40, 2**40 + 2**20, 2**52]])
    assert kept_many(indexes, capacity).tolist() == [is_kept(n, capacity) for n in indexes.tolist()]


def test_a_batch_of_points_crosses_processes_as_plain_tuples_and_arrives_as_points():
    points = ReportPoints(
        [
            ReportPoint("pump-1", 7, 1.7e9, {"value": 1.5}, 0.2, None, "", False),
            ReportPoint("pump-2", 1, 1.7e9 + 60, {"a": 1.0, "b": -2.0}, 0.9, "critical", "b", True),
        ]
    )
    pickled = pickle.dumps(points, protocol=pickle.HIGHEST_PROTOCOL)
    opcodes = {opcode.name for opcode, _, _ in pickletools.genops(pickled)}
    assert "NEWOBJ" not in opcodes  # a list of named tuples makes each point with cls.__new__
    arrived = pickle.loads(pickled)
    assert type(arrived) is ReportPoints and arrived == points
    assert [type(point) for point in arrived] == [ReportPoint, ReportPoint]
    assert arrived[1].severity == "critical" and arrived[1].values == {"a": 1.0, "b": -2.0}
