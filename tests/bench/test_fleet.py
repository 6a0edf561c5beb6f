import itertools
import math
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from bench.fleet import ANOMALY_KINDS, FleetStats, generate_fleet, main

DEVICES, ROWS_PER_DEVICE, SEED = 250, 160, 11
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FleetStats]:
    """A modest fleet (40,000 records) that most tests only read."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.jsonl"
    return path, generate_fleet(path, devices=DEVICES, rows_per_device=ROWS_PER_DEVICE, seed=SEED)


def read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, fleet: tuple[Path, FleetStats]) -> None:
    path, _ = fleet
    again, other = tmp_path / "again.jsonl", tmp_path / "other.jsonl"
    generate_fleet(again, devices=DEVICES, rows_per_device=ROWS_PER_DEVICE, seed=SEED)
    generate_fleet(other, devices=DEVICES, rows_per_device=ROWS_PER_DEVICE, seed=SEED + 1)
    assert again.read_bytes() == path.read_bytes()
    assert other.read_bytes() != path.read_bytes()


def test_every_line_is_a_telemetry_message_in_time_order(fleet: tuple[Path, FleetStats]) -> None:
    path, stats = fleet
    messages = read(path)
    assert len(messages) == stats.records == DEVICES * ROWS_PER_DEVICE
    assert stats.bytes == path.stat().st_size
    for message in messages:
        assert set(message) == {"device_id", "timestamp", "data", "label"}
        assert re.fullmatch(r"device_\d+", message["device_id"])
        assert TIMESTAMP.match(message["timestamp"])
        assert message["label"] in (0, 1)
        data = message["data"]
        values = list(data.values()) if isinstance(data, dict) else [data]
        assert 1 <= len(values) <= 4
        assert all(isinstance(v, float | int) and math.isfinite(v) for v in values)
    stamps = [message["timestamp"] for message in messages]
    assert stamps == sorted(stamps)
    assert stamps[0].startswith("2025-01-01T00:00:0")


def test_each_device_reports_every_interval_with_the_same_fields(fleet: tuple[Path, FleetStats]) -> None:
    path, _ = fleet
    times: dict[str, list[float]] = defaultdict(list)
    fields: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for message in read(path):
        times[message["device_id"]].append(datetime.fromisoformat(message["timestamp"]).timestamp())
        data = message["data"]
        fields[message["device_id"]].add(tuple(data) if isinstance(data, dict) else ())
    assert len(times) == DEVICES
    for device_times in times.values():
        gaps = {round(b - a, 3) for a, b in itertools.pairwise(device_times)}
        assert gaps == {10.0}
    assert all(len(shapes) == 1 for shapes in fields.values())
    sizes = {len(next(iter(shapes))) for shapes in fields.values()}
    assert {0, 2} <= sizes  # single-number devices and multi-field ones


def test_fields_are_on_their_own_scales(fleet: tuple[Path, FleetStats]) -> None:
    path, _ = fleet
    values: dict[str, list[float]] = defaultdict(list)
    for message in read(path):
        if isinstance(message["data"], dict):
            for name, value in message["data"].items():
                values[name].append(value)
    assert set(values) == {"temperature", "cpu", "latency_ms", "pressure", "vibration"}
    assert all(0.0 <= v <= 100.0 for v in values["cpu"])
    assert all(1.0 <= v <= 5000.0 for v in values["latency_ms"])
    assert 9e4 < min(values["pressure"]) < max(values["pressure"]) < 1.1e5
    assert 10.0 < sum(values["temperature"]) / len(values["temperature"]) < 90.0


def test_labels_cover_every_anomaly_kind(fleet: tuple[Path, FleetStats]) -> None:
    path, stats = fleet
    labels = [message["label"] for message in read(path)]
    assert sum(labels) == stats.anomalous_records
    assert 0.005 < stats.anomalous_records / stats.records < 0.1
    assert set(stats.events) == set(ANOMALY_KINDS)
    assert all(stats.events[kind] > 0 for kind in ANOMALY_KINDS)
    assert stats.anomalous_rows["spike"] == stats.events["spike"]  # a spike is one reading


def test_one_field_per_device_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    stats = generate_fleet(path, devices=50, rows_per_device=20, fields=1)
    assert stats.fields == stats.devices == 50
    assert all(isinstance(message["data"], float | int) for message in read(path))


def test_rows_are_rounded_up_to_whole_steps(tmp_path: Path) -> None:
    stats = generate_fleet(tmp_path / "f.jsonl", devices=7, rows=100)
    assert stats.records == 7 * 15


def test_cli_writes_the_file_and_prints_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.jsonl"
    main(["--devices", "20", "--rows", "400", "--fields", "3", "--seed", "3", "--out", str(out)])
    stats = orjson.loads(capsys.readouterr().out)
    assert stats["records"] == 400 == len(read(out))
    assert stats["fields"] == 60
    assert all(len(message["data"]) == 3 for message in read(out))


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fields"):
        generate_fleet(tmp_path / "f.jsonl", devices=2, rows=10, fields=6)
    with pytest.raises(SystemExit):
        main(["--devices", "0", "--out", str(tmp_path / "f.jsonl")])
