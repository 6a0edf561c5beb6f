"""Duplicates and readings out of order: each reading is processed as it arrives (docs/operations.md).

The detectors are streaming over arrival order: a reading sent twice is scored, counted and
learned from twice, and a reading older than its device's latest is scored where it arrives,
against the state the device has then. Nothing is dropped, rejected or reordered for it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
from bytewax.testing import run_main

from dataflows.flead import build_flow
from tests.dataflow.conftest import settings_for

START = 1_704_067_200  # 2024-01-01T00:00:00Z


def reading(device: str, minute: int, value: float) -> bytes:
    return orjson.dumps({"device_id": device, "timestamp": START + 60 * minute, "data": {"temp": value}})


def replay_lines(lines: list[bytes], tmp_path: Path) -> tuple[dict, list[dict]]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in lines))
    out = tmp_path / "out"
    run_main(build_flow(settings_for(source, out, scores="1", report_points="0")))
    scores = [orjson.loads(line) for line in (out / "scores.jsonl").read_bytes().splitlines()]
    return orjson.loads((out / "summary.json").read_bytes()), scores


def minute_of(row: dict) -> int:
    return round((datetime.fromisoformat(row["timestamp"]).timestamp() - START) / 60)


def test_a_duplicate_reading_is_processed_each_time_it_arrives(tmp_path):
    lines = [reading("pump-1", minute, 20.0 + minute % 3) for minute in range(40)]
    lines[20:20] = [lines[10]]  # minute 10 again, byte for byte, after minute 19
    lines.append(lines[-1])  # the last reading twice in a row
    summary, scores = replay_lines(lines, tmp_path)
    assert (summary["rows_read"], summary["rows_processed"], summary["rows_rejected"]) == (42, 42, 0)
    minutes = [minute_of(row) for row in scores]
    assert minutes == [*range(20), 10, *range(20, 40), 39]
    assert minutes.count(10) == 2 and minutes.count(39) == 2


def test_readings_out_of_order_are_processed_where_they_arrive(tmp_path):
    """Minute 5 after minute 30, and a reading from a month earlier: both scored in arrival
    order, each once, none rejected; the other readings keep their places."""
    order = [*range(30), 5, *range(31, 40), -43_200, 40]
    lines = [reading("pump-1", minute, 20.0 + (minute % 3)) for minute in order]
    summary, scores = replay_lines(lines, tmp_path)
    assert (summary["rows_read"], summary["rows_processed"], summary["rows_rejected"]) == (42, 42, 0)
    assert [minute_of(row) for row in scores] == order
    assert all(row["score"] is not None for row in scores)


def test_two_devices_interleaved_out_of_order_keep_their_own_arrival_order(tmp_path):
    """Per device, the scores follow the order the device's readings arrived in."""
    arrivals = [("a", 0), ("b", 3), ("a", 2), ("b", 1), ("a", 1), ("b", 2), ("a", 2)]
    lines = [reading(device, minute, 20.0 + minute) for device, minute in arrivals]
    summary, scores = replay_lines(lines, tmp_path)
    assert summary["rows_processed"] == len(arrivals)
    for device in ("a", "b"):
        assert [minute_of(row) for row in scores if row["device_id"] == device] == [
            minute for d, minute in arrivals if d == device
        ]
