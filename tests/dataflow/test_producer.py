"""The producer's source: time order, keys, pacing and looping (no broker needed)."""

from __future__ import annotations

import orjson

from dataflows.producer import Produced, _ReplayToTopic, telemetry_message
from operators.messages import MessageLimits, Telemetry


def write_csv(tmp_path, rows: int = 3):
    path = tmp_path / "pump.csv"
    lines = ["timestamp,value,label"] + [f"2024-01-01 00:0{i}:00,{i},0" for i in range(rows)]
    path.write_text("\n".join(lines) + "\nbad,row,0\n")
    return path


def drain(partition: _ReplayToTopic, batches: int = 50) -> tuple[list, list[Produced]]:
    records, counts = [], []
    for _ in range(batches):
        try:
            items = partition.next_batch()
        except StopIteration:
            break
        for item in items:
            if isinstance(item, Produced):
                counts.append(item)
            else:
                records.extend(item)
    return records, counts


def test_a_reading_becomes_a_message_in_the_schema():
    message = orjson.loads(telemetry_message(Telemetry("pump", 1704067200.0, {"value": 1.5}, 1)))
    assert message == {"device_id": "pump", "timestamp": "2024-01-01T00:00:00.000Z", "data": 1.5, "label": 1}
    multi = orjson.loads(telemetry_message(Telemetry("pump", 1704067200.0, {"t": 1.0, "p": 2.0})))
    assert multi["data"] == {"t": 1.0, "p": 2.0} and "label" not in multi


def test_rows_go_out_keyed_by_device_in_order_and_invalid_rows_are_counted(tmp_path):
    partition = _ReplayToTopic(write_csv(tmp_path), MessageLimits(), "telemetry", 0, False, 1000, None)
    records, counts = drain(partition)
    assert [(topic, key) for topic, key, _ in records] == [("telemetry", b"pump")] * 3
    assert [orjson.loads(value)["data"] for _, _, value in records] == [0.0, 1.0, 2.0]
    assert sum(c.sent for c in counts) == 3 and sum(c.skipped for c in counts) == 1


def test_looping_starts_again_later_in_event_time(tmp_path):
    partition = _ReplayToTopic(write_csv(tmp_path), MessageLimits(), "telemetry", 0, True, 1000, None)
    records, counts = drain(partition, batches=4)
    stamps = [orjson.loads(value)["timestamp"] for _, _, value in records]
    assert len(stamps) == 6 and sum(c.loops for c in counts) >= 1
    assert stamps == sorted(stamps)  # the second pass is shifted past the first
    assert stamps[3] > stamps[2]


def test_a_rate_paces_the_messages(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_bytes(
        b"".join(orjson.dumps({"device_id": "d", "timestamp": 1704067200 + i, "data": i}) + b"\n" for i in range(1000))
    )
    now = [0.0]  # a clock the test moves: what is due depends on it alone, not on how busy the machine is
    partition = _ReplayToTopic(path, MessageLimits(), "telemetry", 200.0, False, 30, None, clock=lambda: now[0])
    sent = []
    for moment in (0.0, 1 / 64, 0.125, 0.125, 0.5, 1.0, 6.0):  # binary fractions: exact products
        now[0] = moment
        records, _ = drain(partition, batches=1)
        sent.append(len(records))
    # at 200/s: 3 due after 1/64 s, 25 after 1/8 s (none more at the same moment), 100 after
    # 0.5 s but at most a batch (30) at once, however far behind
    assert sent == [0, 3, 22, 0, 30, 30, 30]


def test_resume_continues_after_the_rows_already_sent(tmp_path):
    partition = _ReplayToTopic(write_csv(tmp_path), MessageLimits(), "telemetry", 0, False, 2, None)
    first, _ = drain(partition, batches=1)
    resumed = _ReplayToTopic(write_csv(tmp_path), MessageLimits(), "telemetry", 0, False, 1000, partition.snapshot())
    rest, _ = drain(resumed)
    assert len(first) + len(rest) == 3
