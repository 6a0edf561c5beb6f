"""The attacked fleets of bench/federation_attacks.py are what the table says they are."""

import orjson

from bench.federation_attacks import FLOOD_FACTOR, flipped, flooded, relative_distance
from bench.fleet import generate_fleet
from operators.messages import parse_timestamp


def rows(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_the_flooding_device_sends_50_times_as_often_in_time_order(tmp_path):
    clean, attacked = tmp_path / "clean.jsonl", tmp_path / "flood.jsonl"
    generate_fleet(clean, devices=20, rows_per_device=30, seed=3)
    device = flooded(clean, attacked, interval=10.0, steps=30, seed=3)
    found = rows(attacked)
    mine = [row for row in found if row["device_id"] == device]
    assert len(mine) == FLOOD_FACTOR * 30 and len(found) == 20 * 30 + len(mine)
    assert all(row["label"] == 0 for row in mine)
    times = [parse_timestamp(row["timestamp"]) for row in found]
    assert times == sorted(times)
    assert rows(clean) == [row for row in found if row["device_id"] != device]


def test_five_percent_of_the_devices_have_every_label_flipped(tmp_path):
    clean, attacked = tmp_path / "clean.jsonl", tmp_path / "flip.jsonl"
    generate_fleet(clean, devices=40, rows_per_device=20, seed=3)
    chosen = flipped(clean, attacked, seed=3)
    assert len(chosen) == 2
    for before, after in zip(rows(clean), rows(attacked), strict=True):
        assert after["label"] == (1 - before["label"] if before["device_id"] in chosen else before["label"])


def test_relative_distance_counts_weights_and_intercept():
    clean = {"weights": {"a": 3.0, "b": 0.0}, "intercept": 4.0}
    moved = {"weights": {"a": 3.0, "b": 0.5}, "intercept": 4.0}
    assert relative_distance(moved, clean) == 0.1  # 0.5 / ‖(3, 0, 4)‖
