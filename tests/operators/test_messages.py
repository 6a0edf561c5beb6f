import math
import random
from datetime import UTC, datetime

import orjson
import pytest

from operators.messages import (
    LATEST_TIME,
    RAW_EXCERPT_BYTES,
    InvalidMessage,
    MessageLimits,
    RawMessage,
    Rejection,
    Telemetry,
    decode_message,
    decode_raw,
    iso_timestamp,
    parse_timestamp,
    peek_device_id,
    validate_values,
)

LIMITS = MessageLimits()


def decode(message, limits: MessageLimits = LIMITS) -> Telemetry | Rejection:
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    return decode_message(raw, "test", limits)


def reason(message, limits: MessageLimits = LIMITS) -> str:
    result = decode(message, limits)
    assert isinstance(result, Rejection), result
    return result.reason


def test_the_design_example_is_valid():
    reading = decode({"device_id": "device_127", "timestamp": "2025-11-07T15:22:31.000Z", "data": 42.5, "label": 0})
    assert reading == Telemetry("device_127", parse_timestamp("2025-11-07T15:22:31Z"), {"value": 42.5}, 0)


def test_multivariate_data_keeps_its_field_names():
    reading = decode({"device_id": "d", "timestamp": 1_700_000_000, "data": {"temp": 21.5, "rpm": 900}})
    assert reading.values == {"temp": 21.5, "rpm": 900.0}
    assert reading.label is None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2025-11-07T15:22:31Z", 1762528951.0),
        ("2025-11-07T15:22:31", 1762528951.0),  # no zone means UTC
        ("2025-11-07T17:22:31+02:00", 1762528951.0),
        ("2025-11-07 15:22:31", 1762528951.0),
        (1762528951, 1762528951.0),  # epoch seconds
        (1762528951500, 1762528951.5),  # epoch milliseconds
    ],
)
def test_timestamps_in_every_accepted_form(timestamp, expected):
    assert parse_timestamp(timestamp) == expected


def test_outputs_print_utc_with_milliseconds():
    assert iso_timestamp(1762528951.5) == "2025-11-07T15:22:31.500Z"


def test_output_times_are_what_datetime_writes():
    """``iso_timestamp`` is datetime's text, rounded to microseconds half to even and cut to
    milliseconds, including the fractions that round up to the next second."""

    def by_datetime(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    rng = random.Random(7)
    times = [rng.uniform(0.0, LATEST_TIME) for _ in range(20_000)]
    times += [rng.randrange(2**35) + k / 1000 for _ in range(2_000) for k in (0, 1, 999)]
    edges = [0.9999995, 0.9999994999, 0.0000005, 0.0000015, 0.0000025, 0.4995, 0.9995, 0.999999, 0.9999999]
    times += [whole + edge for whole in (0.0, 1.0, 1735689809.0, LATEST_TIME - 1) for edge in edges]
    times += [math.nextafter(t, direction) for t in times[-36:] for direction in (0.0, math.inf)]
    assert [iso_timestamp(t) for t in times] == [by_datetime(t) for t in times]


@pytest.mark.parametrize(
    ("message", "expected_reason"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        ({"timestamp": 1, "data": 1}, "missing_device_id"),
        ({"device_id": 7, "timestamp": 1, "data": 1}, "invalid_device_id"),
        ({"device_id": "x" * 129, "timestamp": 1, "data": 1}, "invalid_device_id"),
        ({"device_id": "bad id; drop table", "timestamp": 1, "data": 1}, "invalid_device_id"),
        ({"device_id": "d", "data": 1}, "missing_timestamp"),
        ({"device_id": "d", "timestamp": "yesterday", "data": 1}, "invalid_timestamp"),
        ({"device_id": "d", "timestamp": True, "data": 1}, "invalid_timestamp"),
        ({"device_id": "d", "timestamp": 4_000_000_000, "data": 1}, "future_timestamp"),
        ({"device_id": "d", "timestamp": 1}, "missing_data"),
        ({"device_id": "d", "timestamp": 1, "data": {}}, "missing_data"),
        ({"device_id": "d", "timestamp": 1, "data": "42"}, "invalid_value"),
        ({"device_id": "d", "timestamp": 1, "data": True}, "invalid_value"),
        ({"device_id": "d", "timestamp": 1, "data": {"a": None}}, "invalid_value"),
        ({"device_id": "d", "timestamp": 1, "data": {f"f{i}": i for i in range(33)}}, "too_many_fields"),
        ({"device_id": "d", "timestamp": 1, "data": 1, "label": 2}, "invalid_label"),
        ({"device_id": "d", "timestamp": 1, "data": 1, "label": "yes"}, "invalid_label"),
    ],
)
def test_each_kind_of_bad_message_is_rejected_with_its_reason(message, expected_reason):
    assert reason(message) == expected_reason


def test_non_finite_numbers_are_rejected():
    # JSON has no NaN or Infinity, but some producers write them anyway (as a CSV cell can):
    # they are rejected for what they are where they are, never accepted.
    assert reason(b'{"device_id": "d", "timestamp": 1, "data": NaN}') == "non_finite_value"
    assert reason(b'{"device_id": "d", "timestamp": 1, "data": {"t": 1e400}}') == "non_finite_value"
    assert reason(b'{"device_id": "d", "timestamp": -Infinity, "data": 1}') == "invalid_timestamp"
    assert reason(b'{"device_id": "d", "timestamp": 1, "data": 1, "label": NaN}') == "invalid_label"
    assert reason(b'{"device_id": "d", "timestamp": 1, "data": 1, "note": Infinity}') == "non_finite_value"
    assert reason(b'{"device_id": "d", "timestamp": 1, "data": nan}') == "invalid_json"
    with pytest.raises(InvalidMessage) as raised:
        validate_values({"temp": float("inf")}, LIMITS)
    assert raised.value.reason == "non_finite_value"


def test_an_oversized_message_is_rejected_before_parsing_and_its_excerpt_is_truncated():
    message = orjson.dumps({"device_id": "d", "timestamp": 1, "data": 1, "pad": "x" * 70_000})
    rejection = decode(message)
    assert rejection.reason == "oversized_message"
    assert len(rejection.raw) <= RAW_EXCERPT_BYTES + 1
    assert rejection.raw.endswith("…")


def test_the_label_never_becomes_a_feature():
    reading = decode({"device_id": "d", "timestamp": 1, "data": {"temp": 1.0, "label": 1}, "label": 1})
    assert reading.values == {"temp": 1.0}
    assert reading.label == 1


def test_a_field_list_keeps_only_those_fields():
    limits = MessageLimits(fields=frozenset({"temp"}))
    assert decode({"device_id": "d", "timestamp": 1, "data": {"temp": 1.0, "rpm": 2.0}}, limits).values == {"temp": 1.0}
    assert reason({"device_id": "d", "timestamp": 1, "data": {"rpm": 2.0}}, limits) == "missing_data"


def test_a_rejection_row_names_reason_source_and_payload():
    row = decode(b"{oops").as_row()
    assert row["reason"] == "invalid_json"
    assert row["source"] == "test"
    assert row["payload"] == "{oops"
    assert row["received_at"].endswith("Z")


def test_every_reason_in_the_code_is_a_known_reason():
    import re
    from pathlib import Path

    from operators.messages import REJECTION_REASONS

    root = Path(__file__).resolve().parents[2]
    source = "".join(path.read_text() for folder in ("operators", "dataflows") for path in (root / folder).glob("*.py"))
    used = set(re.findall(r"(?:InvalidMessage|Rejection)\(\s*\"([a-z_]+)\"", source))
    assert used and used <= set(REJECTION_REASONS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"device_id":"pump-7","timestamp":1,"data":1}', "pump-7"),
        (b'{"data": 1, "device_id" : "a/b@c", "timestamp": 1}', "a/b@c"),
        (b'{"device_id":"caf\xc3\xa9","timestamp":1,"data":1}', "caf\u00e9"),
        (b'{"device_id":"dev\\u0031","timestamp":1,"data":1}', None),  # an escape: decode to know it
        (b'{"device_id":"a","device_id":"b","timestamp":1,"data":1}', None),  # JSON keeps the last
        (b'{"data":{"device_id":"x"},"device_id":"y"}', None),
        (b'{"device_id":7,"timestamp":1,"data":1}', None),
        (b'{"device_id":"\xff","timestamp":1,"data":1}', None),
        (b'{"timestamp":1,"data":1}', None),
        (b"not json", None),
    ],
)
def test_a_plainly_written_device_id_is_read_without_decoding(raw, expected):
    assert peek_device_id(raw) == expected
    if expected is not None:
        assert orjson.loads(raw)["device_id"] == expected


def test_an_undecoded_message_decodes_to_its_reading_with_the_time_it_entered():
    raw = b'{"device_id": "d", "timestamp": "2023-11-14T22:13:20Z", "data": {"t": 1.5, "rpm": 900}, "label": 1}'
    reading = decode_raw(RawMessage("d", raw, "file:x.jsonl", 12, 123.0), LIMITS)
    assert type(reading) is Telemetry
    assert (reading.device_id, reading.timestamp, reading.values, reading.label) == (
        "d",
        1_700_000_000.0,
        {"t": 1.5, "rpm": 900.0},
        1,
    )
    assert type(reading.values["rpm"]) is float
    assert reading.ingested_at == 123.0


def test_an_undecoded_message_that_is_not_valid_names_its_line():
    raw = b'{"device_id":"d","timestamp":"yesterday","data":1}'
    rejection = decode_raw(RawMessage("d", raw, "file:x.jsonl", 12, 123.0), LIMITS)
    assert (rejection.reason, rejection.source) == ("invalid_timestamp", "file:x.jsonl:12")
