"""Telemetry messages: parsing, validation and the reasons a message is rejected.

A message is ``{"device_id": str, "timestamp": ISO-8601 | epoch s | epoch ms,
"data": number | {name: number}, "label": 0 | 1 (optional)}``. Every input that is
not a valid message becomes a :class:`Rejection` with a reason; nothing raises.

Hostile input (``tests/hostile.py``) decides some edges: a message that is empty or only
whitespace is ``empty_message``; ``NaN``, ``Infinity`` and numbers past float range are read
as the numbers they stand for, so that they are rejected for what they are where they are
(``non_finite_value`` in the telemetry or anywhere else, ``invalid_timestamp`` as the time,
``invalid_label`` as the label), as the same text is in a CSV cell; a finite value beyond
±1e150 is ``invalid_value`` (its square would overflow the detectors' sums); a time must lie
between 1970 and the year 9999; a field name must be printable.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

SINGLE_FIELD = "value"
"""The field name given to a ``data`` that is a plain number."""

REJECTION_REASONS = (
    "device_limit",
    "empty_message",
    "future_timestamp",
    "invalid_device_id",
    "invalid_field",
    "invalid_json",
    "invalid_label",
    "invalid_row",
    "invalid_timestamp",
    "invalid_update",
    "invalid_value",
    "kafka_error",
    "missing_data",
    "missing_device_id",
    "missing_field",
    "missing_timestamp",
    "non_finite_value",
    "not_an_object",
    "oversized_message",
    "too_many_fields",
    "unknown_base_version",
    "update_norm",
    "wrong_features",
)
"""Every reason a rejected input can carry (dead letters, and their metric's labels); edge clients'
local updates have a few of their own (``operators/update_validation.py``)."""

RAW_EXCERPT_BYTES = 512
"""How much of a rejected input is kept in its dead letter."""


@dataclass(frozen=True)
class MessageLimits:
    """What a valid message may look like, beyond its schema."""

    max_bytes: int = 65_536
    max_fields: int = 32
    max_device_id_length: int = 128
    max_future_seconds: float = 86_400.0
    label_key: str = "label"
    fields: frozenset[str] | None = None
    """Only these ``data`` fields are telemetry; ``None`` means every numeric field."""


@dataclass(slots=True)
class Telemetry:
    """One valid reading of one device."""

    device_id: str
    timestamp: float
    """Event time, seconds since the epoch (UTC)."""
    values: dict[str, float]
    label: int | None = None
    ingested_at: float = field(default=0.0, compare=False)
    """Wall time the reading entered the dataflow (its produce time, from Kafka), for latency."""


@dataclass(slots=True)
class Rejection:
    """An input that is not a valid message, kept for the dead-letter outputs."""

    reason: str
    raw: str
    source: str
    received_at: float
    detail: str = ""

    def as_row(self) -> dict[str, Any]:
        return {
            "received_at": iso_timestamp(self.received_at),
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "payload": self.raw,
        }


class RawMessage(NamedTuple):
    """A message whose device is known but which is not decoded yet.

    The replay reads one file in one place; handing the shards their lines undecoded moves
    the decoding and validation to the worker that owns the device, so that it runs in
    parallel, and a line crosses between processes as bytes rather than as objects.
    """

    device_id: str
    raw: bytes
    source: str
    """Where it came from, without its position: a batch shares one string."""
    position: int
    """Its line in ``source``: dead letters name ``source:position``."""
    ingested_at: float


class InvalidMessage(ValueError):
    """Raised inside validation; carries the machine-readable reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]*\Z")
_MAX_FIELD_NAME = 64
MAX_VALUE = 1e150
"""A telemetry value's largest magnitude: its square, and a window's sum of squares, stay finite."""
LATEST_TIME = 253_402_300_799.0
"""9999-12-31T23:59:59Z: ISO-8601 (and every output's time) ends with the year 9999."""


def excerpt(raw: bytes | str) -> str:
    """The start of a raw input as text, for a dead letter."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    text = raw[:RAW_EXCERPT_BYTES].decode("utf-8", "replace")
    return text + "…" if len(raw) > RAW_EXCERPT_BYTES else text


def decode_message(raw: bytes, source: str, limits: MessageLimits) -> Telemetry | Rejection:
    """Decode one JSON message; a :class:`Rejection` says why when it is not valid."""
    now = time.time()
    if len(raw) > limits.max_bytes:
        return Rejection("oversized_message", excerpt(raw), source, now, f"{len(raw)} bytes > {limits.max_bytes}")
    if not raw or raw.isspace():
        return Rejection("empty_message", excerpt(raw), source, now, "only whitespace" if raw else "")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        obj = _with_non_finite_numbers(raw)
        if obj is None:
            return Rejection("invalid_json", excerpt(raw), source, now, str(exc)[:200])
        try:
            validate_message(obj, limits, now)
        except InvalidMessage as invalid:
            return Rejection(invalid.reason, excerpt(raw), source, now, invalid.detail)
        detail = "NaN, Infinity or a number past float range outside the telemetry"
        return Rejection("non_finite_value", excerpt(raw), source, now, detail)
    try:
        reading = validate_message(obj, limits, now)
    except InvalidMessage as exc:
        return Rejection(exc.reason, excerpt(raw), source, now, exc.detail)
    reading.ingested_at = now
    return reading


def _with_non_finite_numbers(raw: bytes) -> Any:
    """``raw`` decoded with ``NaN``, ``Infinity``, ``-Infinity`` and numbers past float range
    read as floats; ``None`` unless it holds such a number and is JSON otherwise.

    Only for a message orjson refused (it accepts none of them): such a message is never
    accepted, but it is rejected for the number and where it stands, as a CSV cell saying
    ``NaN`` or ``1e400`` is.
    """
    found = False

    def non_finite(text: str) -> float:
        nonlocal found
        number = float(text)
        if not math.isfinite(number):
            found = True
        return number

    def integer(text: str) -> int | float:
        return int(text) if len(text) < 19 else non_finite(text)

    try:
        obj = json.loads(raw.decode(), parse_constant=non_finite, parse_float=non_finite, parse_int=integer)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if found else None


def decode_raw(message: RawMessage, limits: MessageLimits) -> Telemetry | Rejection:
    record = decode_message(message.raw, message.source, limits)
    if type(record) is Telemetry:
        record.ingested_at = message.ingested_at
    else:
        record.source = f"{message.source}:{message.position}"
    return record


_PLAIN_DEVICE_ID = re.compile(rb'"device_id"\s*:\s*"([^"\\]*)"')


def peek_device_id(raw: bytes) -> str | None:
    """The device id of a JSON message, read without decoding it, when it is written plainly.

    ``None`` when it is not: no ``"device_id"``, more than one, escapes in the id, a ``\\u``
    escape anywhere, or bytes that are not UTF-8. Such a message must be decoded to be routed.
    For a message that is valid, the id found here is the one decoding finds: the key occurs
    once, no other key can be an escaped ``device_id`` (``"device_\\u0069d"``; only ``\\u``
    escapes make letters), and an id with no backslash is its own JSON string.
    """
    found = _PLAIN_DEVICE_ID.search(raw)
    if found is None or raw.count(b'"device_id"') != 1 or b"\\u" in raw:
        return None
    try:
        return found[1].decode()
    except UnicodeDecodeError:
        return None


def validate_message(obj: Any, limits: MessageLimits, now: float | None = None) -> Telemetry:
    """Check a decoded message; raises :class:`InvalidMessage` with the reason."""
    if not isinstance(obj, dict):
        raise InvalidMessage("not_an_object", type(obj).__name__)
    device_id = validate_device_id(obj.get("device_id"), limits)
    timestamp = validate_timestamp(obj.get("timestamp"), limits, time.time() if now is None else now)
    if "data" not in obj:
        raise InvalidMessage("missing_data")
    values = validate_values(obj["data"], limits)
    label = validate_label(obj.get(limits.label_key))
    return Telemetry(device_id, timestamp, values, label)


def validate_device_id(device_id: Any, limits: MessageLimits) -> str:
    if type(device_id) is str and len(device_id) <= limits.max_device_id_length and _DEVICE_ID.match(device_id):
        return device_id  # the usual case first; the checks below say what is wrong
    if device_id is None:
        raise InvalidMessage("missing_device_id")
    if not isinstance(device_id, str):
        raise InvalidMessage("invalid_device_id", f"not a string: {type(device_id).__name__}")
    if len(device_id) > limits.max_device_id_length:
        raise InvalidMessage("invalid_device_id", f"longer than {limits.max_device_id_length} characters")
    if not _DEVICE_ID.match(device_id):
        raise InvalidMessage("invalid_device_id", "only letters, digits and _.:/@- are allowed")
    return device_id


def validate_timestamp(value: Any, limits: MessageLimits, now: float) -> float:
    if value is None:
        raise InvalidMessage("missing_timestamp")
    timestamp = parse_timestamp(value)
    if timestamp > LATEST_TIME:
        raise InvalidMessage("future_timestamp", "after the year 9999")
    if timestamp > now + limits.max_future_seconds:
        raise InvalidMessage("future_timestamp", f"{iso_timestamp(timestamp)} is in the future")
    return timestamp


def parse_timestamp(value: Any) -> float:
    """Seconds since the epoch from ISO-8601 text (no zone = UTC) or epoch seconds/ms; not before 1970."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidMessage("invalid_timestamp", f"{value[:40]!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
        if seconds < 0:
            raise InvalidMessage("invalid_timestamp", f"{value[:40]!r} is before 1970")
        return seconds
    if isinstance(value, bool):
        raise InvalidMessage("invalid_timestamp", "a boolean is not a time")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidMessage("invalid_timestamp", f"{value!r} is not a time")
        return seconds / 1000.0 if seconds > 1e11 else seconds
    raise InvalidMessage("invalid_timestamp", f"not a string or number: {type(value).__name__}")


def validate_values(data: Any, limits: MessageLimits) -> dict[str, float]:
    if type(data) is float and limits.fields is None and limits.label_key != SINGLE_FIELD:
        return {SINGLE_FIELD: _number(SINGLE_FIELD, data)}  # a plain number, the usual case
    items = data.items() if isinstance(data, dict) else ((SINGLE_FIELD, data),)
    values: dict[str, float] = {}
    for name, value in items:
        if name == limits.label_key or (limits.fields is not None and name not in limits.fields):
            continue
        if len(name) > _MAX_FIELD_NAME:
            raise InvalidMessage("invalid_field", f"field name longer than {_MAX_FIELD_NAME} characters")
        if not name.isprintable():
            raise InvalidMessage("invalid_field", f"{name!r}: control or invisible characters in a field name")
        values[name] = _number(name, value)
    if not values:
        raise InvalidMessage("missing_data", "no telemetry field")
    if len(values) > limits.max_fields:
        raise InvalidMessage("too_many_fields", f"{len(values)} fields > {limits.max_fields}")
    return values


def _number(name: str, value: Any) -> float:
    if type(value) is float and -MAX_VALUE <= value <= MAX_VALUE:
        return value  # the usual case first (NaN fails the comparison); the checks below say what is wrong
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage("invalid_value", f"{name} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an int past float range
        number = math.inf
    if not math.isfinite(number):
        raise InvalidMessage("non_finite_value", f"{name} is {value}")
    if not -MAX_VALUE <= number <= MAX_VALUE:
        raise InvalidMessage("invalid_value", f"{name} is {value}, beyond ±{MAX_VALUE:g}")
    return number


def validate_label(label: Any) -> int | None:
    if label is None:
        return None
    if isinstance(label, (bool, int, float)) and label in (0, 1):
        return int(label)
    raise InvalidMessage("invalid_label", f"{label!r} is not 0 or 1")


def iso_timestamp(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, the form every output uses: what
    ``datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")`` writes (with
    ``Z`` for ``+00:00``), at about a third of its cost. Every local update and anomaly row
    carries one, and a fleet's readings share their seconds, so the text of each whole second
    is kept."""
    whole = math.floor(seconds)
    microseconds = round((seconds - whole) * 1e6)  # fromtimestamp rounds half to even, as round() does
    if microseconds == 1_000_000:
        whole, microseconds = whole + 1, 0
    return f"{_iso_second(whole)}.{microseconds // 1000:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
