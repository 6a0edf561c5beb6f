"""Hostile telemetry: a seeded, reproducible generator of messages that try to break FLEAD's input.

``hostile_cases(n, seed)`` makes ``n`` messages, valid readings among them: random bytes, broken
UTF-8, numbers past float range, NaN and Infinity in every spelling, nested objects, 1 MB
messages and messages at the size limit, control characters, right-to-left marks and SQL in
device ids, timestamps far in the past, in the future and negative, labels of every type,
duplicates and readings out of order. ``hostile_messages(n, seed)`` is just their bytes. The
first message is always a valid reading (a CSV file takes its telemetry columns from its first
row).

Each :class:`Case` says how each input carries it:

- **Kafka**: ``raw``, exactly, one record per message.
- **JSON Lines**: ``line``, which is ``raw`` with every ``\\n`` byte replaced by ``\\r``. JSON
  reads the two alike (whitespace between tokens; a forbidden control character inside a
  string), neither is ever part of a UTF-8 sequence, and the size does not change, so the line
  says exactly what the message says. A message that is empty or only whitespace has no line
  (``None``): a blank line in JSON Lines is not a message (skipped, and not counted as read).
- **CSV** (``device_id,timestamp,value,label``): ``csv_row``, the row that says the same, or
  ``None`` when no row can. A CSV cell is text, so a row says the same only when the message
  is a JSON object with exactly those keys (``label`` optional), where

  - ``device_id`` is a string;
  - ``timestamp`` is a string without surrounding whitespace (a CSV timestamp cell is
    stripped, and read as ISO-8601 text; an epoch number has no CSV form);
  - ``data`` is a number (``NaN``/``Infinity`` and numbers past float range included: the
    cell is the number's JSON text), ``null`` (the empty cell), ``true``/``false``, a string
    that is not a number as text, or ``{"value": <one of those>}``;
  - ``label`` is absent or ``null`` (the empty cell), a number, or a string that is neither
    blank nor a number as text (``true``/``false`` have no row: JSON takes them for 1 and 0,
    a CSV cell ``true`` is not a number);
  - the message and the row are both within the size limit or both beyond it.

  Messages built from raw bytes (broken UTF-8, bare words, control characters inside strings,
  a byte-order mark, ...) have no row.
- ``expected``: the verdict FLEAD's documented rules give, worked out by hand for each kind:
  ``"processed"`` or the rejection reason; ``None`` where the generator cannot tell (random
  bytes).

Duplicates repeat an earlier valid message byte for byte; a reading out of order carries a time
earlier than its device's latest. Both are processed as they come (``docs/operations.md``).

The rest is what the tests and ``bench/hostile_input.py`` share: writing the JSON Lines and CSV
files (each returns where each case went), reading each case's verdict back from the dead
letters (their sources end with the line, row or offset), checking a summary against them, a
replay in-process (:func:`replayed`, once per session for each input) and a run through Kafka
(:func:`through_kafka`).
"""

from __future__ import annotations

import csv
import functools
import io
import random
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from deploy.local.servers import KafkaServer

PROCESSED = "processed"
SUITE_N = 25_000
SUITE_SEED = 18
"""The messages the test suite sends down every path (``bench/hostile_input.py`` sends 100,000)."""
MAX_BYTES = 65_536
"""FLEAD_MAX_MESSAGE_BYTES's default, which the size cases probe."""
ONE_MB = 1 << 20
ONE_MB_EVERY = 5_000
"""One message in this many is 1 MB (20 in 100,000)."""
START = 1_704_067_200  # 2024-01-01T00:00:00Z
DEVICES = [f"pump-{i:02d}" for i in range(40)]
CSV_HEADER = ("device_id", "timestamp", "value", "label")
CSV_KEYS = {"device_id", "timestamp", "data", "label"}
"""The keys of a message a CSV row can say the same as (``data`` goes to the ``value`` column)."""


@dataclass(frozen=True)
class Case:
    kind: str
    raw: bytes
    expected: str | None
    csv_row: tuple[str, str, str, str] | None

    @property
    def line(self) -> bytes | None:
        """The message as one JSON line (without its ``\\n``), or ``None``: see the module docstring."""
        if not self.raw or self.raw.isspace():
            return None
        return self.raw.replace(b"\n", b"\r")


class Token(NamedTuple):
    """One JSON value: its text, and what it is (``str``, ``num``, ``null``, ``bool``, ``other``)."""

    json: bytes
    kind: str
    text: str = ""


def s(text: str) -> Token:
    return Token(orjson.dumps(text), "str", text)


def num(text: str | float | int) -> Token:
    text = text if isinstance(text, str) else orjson.dumps(text).decode()
    return Token(text.encode(), "num", text)


def raw_token(json: bytes | str) -> Token:
    """JSON text made by hand (broken, nested, ...): no CSV cell can say the same."""
    return Token(json.encode() if isinstance(json, str) else json, "other")


def value(obj: Any) -> Token:
    """A plain Python value as a token."""
    if obj is None:
        return Token(b"null", "null")
    if isinstance(obj, bool):
        return Token(b"true" if obj else b"false", "bool", "true" if obj else "false")
    if isinstance(obj, str):
        return s(obj)
    if isinstance(obj, (int, float)):
        return num(obj)
    return raw_token(orjson.dumps(obj))


NULL = value(None)
Fields = list[tuple[str, Token]]
"""A message as its keys in order; ``data`` may be a dict of tokens (an object of fields)."""


def render(fields: Fields, indent: bool = False) -> bytes:
    parts = []
    for key, token in fields:
        parts.append(orjson.dumps(key) + b":" + token.json)
    if indent:
        return b"{\n  " + b",\n  ".join(parts) + b"\n}\n"
    return b"{" + b",".join(parts) + b"}"


def obj(fields: dict[str, Token]) -> Token:
    """An object of tokens (``data`` with named fields)."""
    json = render(list(fields.items()))
    if list(fields) == ["value"]:
        return fields["value"]._replace(json=json, kind="value_object:" + fields["value"].kind)
    return raw_token(json)


def _is_number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell(column: str, token: Token | None) -> str | None:
    """The CSV cell that says what ``token`` says in ``column``, or ``None`` when none can."""
    if column == "label" and (token is None or token.kind == "null"):
        return ""
    if token is None:
        return None
    kind = token.kind.removeprefix("value_object:") if column == "value" else token.kind
    if token.kind.startswith("value_object:") and column != "value":
        return None
    if column == "device_id":
        return token.text if kind == "str" else None
    if column == "timestamp":
        return token.text if kind == "str" and token.text == token.text.strip() else None
    if column == "value":
        if kind == "num" or kind == "bool":
            return token.text
        if kind == "null":
            return ""
        return token.text if kind == "str" and not _is_number_text(token.text) else None
    # label
    if kind == "num":
        return token.text
    if kind == "str" and token.text.strip() and not _is_number_text(token.text):
        return token.text
    return None


def csv_row_size(row: tuple[str, ...]) -> int:
    """How FLEAD measures a CSV row against FLEAD_MAX_MESSAGE_BYTES: its cells' UTF-8 bytes and the commas."""
    return len(",".join(row).encode("utf-8", "surrogatepass"))


def case(kind: str, fields: Fields, expected: str | None, indent: bool = False, csv_ok: bool = True) -> Case:
    raw = render(fields, indent)
    row = _csv_row(fields) if csv_ok else None
    if row is not None and (csv_row_size(row) > MAX_BYTES) != (len(raw) > MAX_BYTES):
        row = None
    return Case(kind, raw, expected, row)


def _csv_row(fields: Fields) -> tuple[str, str, str, str] | None:
    keys = [key for key, _ in fields]
    if len(set(keys)) != len(keys) or not {"device_id", "timestamp", "data"} <= set(keys) <= CSV_KEYS:
        return None
    tokens = dict(fields)
    cells = (
        csv_cell("device_id", tokens["device_id"]),
        csv_cell("timestamp", tokens["timestamp"]),
        csv_cell("value", tokens["data"]),
        csv_cell("label", tokens.get("label")),
    )
    if any(cell is None for cell in cells):
        return None
    return cells  # type: ignore[return-value]


def csv_text(rows: list[tuple[str, str, str, str]]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out)  # "\r\n": a cell holding a lone "\r" is quoted too
    writer.writerow(CSV_HEADER)
    writer.writerows(rows)
    return out.getvalue()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


TIMESTAMPS: list[tuple[Token | None, str]] = [
    (s("0001-01-01T00:00:00Z"), "invalid_timestamp"),
    (s("0001-01-01T00:00:00+01:00"), "invalid_timestamp"),
    (s("1000-06-15"), "invalid_timestamp"),
    (s("1900-01-01T00:00:00Z"), "invalid_timestamp"),
    (s("1969-12-31T23:59:59Z"), "invalid_timestamp"),
    (s("1970-01-01T00:00:00Z"), PROCESSED),
    (s("1970-01-01T00:00:00.001"), PROCESSED),
    (s("2999-01-01T00:00:00Z"), "future_timestamp"),
    (s("9999-12-31T23:59:59Z"), "future_timestamp"),
    (s("9999-12-31T23:59:59-01:00"), "future_timestamp"),
    (s("9999-12-31T23:59:59.999999-23:59"), "future_timestamp"),
    (s("2024-02-30T00:00:00Z"), "invalid_timestamp"),
    (s("2024-13-01"), "invalid_timestamp"),
    (s("2024-01-01T24:00:00"), "invalid_timestamp"),
    (s("2024-01-01T00:00:00+24:00"), "invalid_timestamp"),
    (s("+002024-01-01"), "invalid_timestamp"),
    (s("\uff12\uff10\uff12\uff14-01-01"), "invalid_timestamp"),
    (s(""), "invalid_timestamp"),
    (s("now"), "invalid_timestamp"),
    (s("yesterday at noon"), "invalid_timestamp"),
    (s("1700000000"), "invalid_timestamp"),
    (s(" 2024-01-01T00:00:00Z"), "invalid_timestamp"),
    (s("2024-01-01T00:00:00Z\u200f"), "invalid_timestamp"),
    (s("2024-01-01\x00"), "invalid_timestamp"),
    (s("2024-01-01T00:00:00" + "0" * 5000), "invalid_timestamp"),
    (num(-1), "invalid_timestamp"),
    (num(-1e12), "invalid_timestamp"),
    (num(-1.7976931348623157e308), "invalid_timestamp"),
    (num("-0.0"), PROCESSED),
    (num(0), PROCESSED),
    (num(100_000_000_001), PROCESSED),  # above 1e11: milliseconds, 1973
    (num(99_999_999_999), "future_timestamp"),  # seconds: the year 5138
    (num(10_000_000_000_000), "future_timestamp"),  # milliseconds: 2286
    (num(1e20), "future_timestamp"),
    (num(1e300), "future_timestamp"),
    (num(1.7976931348623157e308), "future_timestamp"),
    (num(253_402_300_800_000), "future_timestamp"),  # the year 10000, in milliseconds
    (value(True), "invalid_timestamp"),
    (value(False), "invalid_timestamp"),
    (NULL, "missing_timestamp"),
    (None, "missing_timestamp"),
]
"""Times of every spelling (``None``: no timestamp key), each with its verdict."""
LABELS: list[tuple[Token, str]] = [
    (num(0), PROCESSED),
    (num(1), PROCESSED),
    (num("0.0"), PROCESSED),
    (num("1.0"), PROCESSED),
    (num("1e0"), PROCESSED),
    (num("1e-400"), PROCESSED),  # underflows to 0
    (num("-0"), PROCESSED),
    (value(True), PROCESSED),
    (value(False), PROCESSED),
    (NULL, PROCESSED),
    (num(2), "invalid_label"),
    (num(-1), "invalid_label"),
    (num(0.5), "invalid_label"),
    (num("1.0000000000000002"), "invalid_label"),
    (num("18446744073709551617"), "invalid_label"),
    (s("1"), "invalid_label"),
    (s("0"), "invalid_label"),
    (s(""), "invalid_label"),
    (s(" "), "invalid_label"),
    (s("yes"), "invalid_label"),
    (s("anomaly"), "invalid_label"),
    (s("true"), "invalid_label"),
    (raw_token("[]"), "invalid_label"),
    (raw_token("{}"), "invalid_label"),
    (raw_token("[1]"), "invalid_label"),
    (raw_token('{"value":1}'), "invalid_label"),
]
MISSING: list[tuple[Token | None, str, str]] = [
    (None, "device_id", "missing_device_id"),
    (NULL, "device_id", "missing_device_id"),
    (None, "data", "missing_data"),
    (obj({}), "data", "missing_data"),
    (obj({"label": num(1)}), "data", "missing_data"),
    (NULL, "data", "invalid_value"),
    (value(True), "data", "invalid_value"),
    (s("21.5"), "data", "invalid_value"),
    (s(""), "data", "invalid_value"),
]
"""(the token, or ``None`` to remove the key; the key; the verdict)"""
FIELDS: list[tuple[Token, str]] = [
    *(
        (obj({f"f{i}": num(i) for i in range(many)}), PROCESSED if many <= 32 else "too_many_fields")
        for many in (32, 33, 100)
    ),
    (obj({"f" * 64: num(1)}), PROCESSED),
    (obj({"f" * 65: num(1)}), "invalid_field"),
    (obj({"": num(1)}), PROCESSED),
    (obj({"\u200ftemp": num(1)}), "invalid_field"),
    (obj({"temp\x00": num(2)}), "invalid_field"),
    (obj({"temp\n": num(2)}), "invalid_field"),
    (obj({"temp °C": num(2), "ünïcödé": num(3)}), PROCESSED),
    (obj({"temp": num(1), "label": num(1)}), PROCESSED),
    (obj({"temp": num(1), "rpm": s("fast")}), "invalid_value"),
    (obj({"temp": num(1), "rpm": NULL}), "invalid_value"),
]
EXTREME_NUMBERS = [
    ("1.7976931348623157e308", "invalid_value"),
    ("-1.7976931348623157e308", "invalid_value"),
    ("1.0000000000000002e150", "invalid_value"),
    ("-1e151", "invalid_value"),
    ("1e150", PROCESSED),
    ("-1e150", PROCESSED),
    ("5e-324", PROCESSED),
    ("2.2250738585072014e-308", PROCESSED),
    ("1e-400", PROCESSED),  # underflows to 0
    ("-0.0", PROCESSED),
    ("-0", PROCESSED),
    ("0", PROCESSED),
    ("123456789012345678901234567890", PROCESSED),
    ("-9223372036854775809", PROCESSED),
    ("18446744073709551616", PROCESSED),
    ("9007199254740993", PROCESSED),
]
VALID_LABELS = [None, None, num(0), num(1), NULL, value(True), value(False), num("1.0"), num("0.0")]


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = dict.fromkeys(DEVICES, START)
        self.valid: list[Case] = []

    # -- valid readings --------------------------------------------------------------------
    def device(self) -> str:
        return self.rng.choice(DEVICES)

    def next_time(self, device: str) -> int:
        self.clock[device] += 60
        return self.clock[device]

    def reading(self, device: str | None = None, when: float | None = None, **replace: Token | None) -> Fields:
        """A valid reading's fields, with some replaced (``None`` removes a key)."""
        device = device or self.device()
        when = self.next_time(device) if when is None else when
        fields: dict[str, Token | None] = {
            "device_id": s(device),
            "timestamp": s(iso(when)),
            "data": num(round(self.rng.gauss(20.0, 2.0), 3)),
        }
        if self.rng.random() < 0.5:
            fields["label"] = num(int(self.rng.random() < 0.05))
        fields.update(replace)
        return [(key, token) for key, token in fields.items() if token is not None]

    def valid_reading(self) -> Case:
        device = self.device()
        when = self.next_time(device)
        rng = self.rng
        x = round(rng.gauss(20.0, 2.0), 3)
        spelling = rng.randrange(7)
        if spelling == 0:
            timestamp = s(iso(when))
        elif spelling == 1:
            timestamp = s(datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S"))
        elif spelling == 2:
            timestamp = s(datetime.fromtimestamp(when, UTC).isoformat())
        elif spelling == 3:
            timestamp = s(datetime.fromtimestamp(when + 7200, UTC).replace(tzinfo=None).isoformat() + "+02:00")
        else:
            timestamp = num((when, when + 0.25, when * 1000)[spelling - 4])
        data = num(x) if rng.random() < 0.5 else obj({"value": num(x)})
        label = rng.choice(VALID_LABELS)
        fields: Fields = [("device_id", s(device)), ("timestamp", timestamp), ("data", data)]
        if label is not None:
            fields.append(("label", label))
        made = case("valid", fields, PROCESSED)
        self.valid.append(made)
        return made

    # -- the hostile kinds ---------------------------------------------------------------------
    def random_bytes(self) -> Case:
        rng = self.rng
        size = rng.choice([rng.randint(1, 16), rng.randint(17, 256), rng.randint(257, 4096)])
        return Case("random_bytes", rng.randbytes(size), None, None)

    def broken_utf8(self) -> Case:
        rng = self.rng
        bad = rng.choice(
            [
                b"\xff",
                b"\xfe\xff",
                b"\xc3\x28",
                b"\xa0\xa1",
                b"\xe2\x28\xa1",
                b"\xe2\x82",  # truncated
                b"\xf0\x28\x8c\xbc",
                b"\xf8\xa1\xa1\xa1\xa1",  # five bytes
                b"\xc0\xaf",  # overlong '/'
                b"\xe0\x80\xaf",  # overlong
                b"\xed\xa0\x80",  # a surrogate, encoded
                b"\xf4\x90\x80\x80",  # beyond U+10FFFF
                b"caf\xe9",  # Latin-1
            ]
        )
        where = rng.choice(["device_id", "timestamp", "data", "key", "outside"])
        device = self.device()
        if where == "device_id":
            fields = self.reading(device, device_id=raw_token(b'"' + device.encode() + bad + b'"'))
        elif where == "timestamp":
            fields = self.reading(device, timestamp=raw_token(b'"2024-01-01' + bad + b'"'))
        elif where == "data":
            fields = self.reading(device, data=raw_token(b'{"temp' + bad + b'":1.5}'))
        elif where == "key":
            raw = render(self.reading(device))[:-1] + b',"note' + bad + b'":"x"}'
            return Case("broken_utf8", raw, "invalid_json", None)
        else:
            return Case("broken_utf8", bad + render(self.reading(device)), "invalid_json", None)
        return case("broken_utf8", fields, "invalid_json", csv_ok=False)

    def huge_number(self) -> Case:
        rng = self.rng
        token = num(
            rng.choice(
                ["1e400", "-1e400", "2e308", "1.8e308", "123456789e305", "1" + "0" * 400, "-" + "9" * 350, "1" * 5000]
            )
        )
        where = rng.choice(["data", "value_field", "timestamp", "label", "elsewhere"])
        if where == "data":
            return case("huge_number", self.reading(data=token), "non_finite_value")
        if where == "value_field":
            return case("huge_number", self.reading(data=obj({"value": token, "rpm": num(900)})), "non_finite_value")
        if where == "timestamp":
            return case("huge_number", self.reading(timestamp=token), "invalid_timestamp")
        if where == "label":
            return case("huge_number", self.reading(label=token), "invalid_label")
        return case("huge_number", [*self.reading(), ("calibration", token)], "non_finite_value")

    def extreme_number(self) -> Case:
        """Finite numbers at the edges of float range: valid up to ±1e150 (FLEAD's bound)."""
        text, reason = self.rng.choice(EXTREME_NUMBERS)
        return case("extreme_number", self.reading(data=num(text)), reason)

    def non_finite(self) -> Case:
        rng = self.rng
        where = rng.choice(["data", "value_field", "timestamp", "label"])
        reason = {
            "data": "non_finite_value",
            "value_field": "non_finite_value",
            "timestamp": "invalid_timestamp",
            "label": "invalid_label",
        }[where]
        spelling = rng.choice(["literal", "bare", "string"])
        if spelling == "literal":  # JavaScript's and Python's json.dumps' spellings
            token = num(rng.choice(["NaN", "Infinity", "-Infinity"]))
        elif spelling == "bare":  # in no JSON dialect
            token = raw_token(
                rng.choice(["nan", "inf", "-inf", "+inf", "Inf", "INF", "-NaN", "+Infinity", "infinity", "NAN", "+NaN"])
            )
            reason = "invalid_json"
        else:
            token = s(rng.choice(["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "1e400", "∞", "-∞", "NaN "]))
            reason = {"data": "invalid_value", "value_field": "invalid_value"}.get(where, reason)
        if where == "data":
            fields = self.reading(data=token)
        elif where == "value_field":
            fields = self.reading(data=obj({"value": token}))
        elif where == "timestamp":
            fields = self.reading(timestamp=token)
        else:
            fields = self.reading(label=token)
        return case("non_finite", fields, reason)

    def nested(self) -> Case:
        rng = self.rng
        device = self.device()
        depth = rng.choice([2, 10, 500, 1100, 5000])
        deep = raw_token("[" * depth + "1" + "]" * depth)
        options: list[tuple[Callable[[], Fields | bytes], str]] = [
            (lambda: self.reading(device, data=obj({"value": raw_token('{"a":{"b":1}}')})), "invalid_value"),
            (lambda: self.reading(device, data=raw_token("[1,2,3]")), "invalid_value"),
            (lambda: self.reading(device, data=raw_token('{"temp":[1]}')), "invalid_value"),
            (lambda: self.reading(device, data=raw_token('{"temp":{"now":1,"then":2}}')), "invalid_value"),
            (lambda: self.reading(device, data=deep), "invalid_value" if depth < 1000 else "invalid_json"),
            (lambda: self.reading(device, device_id=raw_token('{"id":"pump-01"}')), "invalid_device_id"),
            (lambda: self.reading(device, device_id=raw_token('["pump-01"]')), "invalid_device_id"),
            (lambda: self.reading(device, device_id=num(7)), "invalid_device_id"),
            (lambda: self.reading(device, device_id=value(True)), "invalid_device_id"),
            (
                lambda: self.reading(device, timestamp=raw_token('{"$date":"2024-01-01T00:00:00Z"}')),
                "invalid_timestamp",
            ),
            (lambda: self.reading(device, timestamp=raw_token('["2024-01-01T00:00:00Z"]')), "invalid_timestamp"),
            (lambda: self.reading(device, label=raw_token('{"anomaly":1}')), "invalid_label"),
            (lambda: self.reading(device, label=raw_token("[1]")), "invalid_label"),
            (lambda: [("message", raw_token(render(self.reading(device))))], "missing_device_id"),
            (lambda: b"[" + render(self.reading(device)) + b"]", "not_an_object"),
            (lambda: deep.json, "not_an_object" if depth < 1000 else "invalid_json"),
            (lambda: orjson.dumps("pump-01"), "not_an_object"),
            (lambda: b"42", "not_an_object"),
            (lambda: b"null", "not_an_object"),
            (lambda: b"true", "not_an_object"),
            (lambda: b"[]", "not_an_object"),
            (lambda: b"{}", "missing_device_id"),
        ]
        make, reason = rng.choice(options)
        made = make()
        if isinstance(made, bytes):
            return Case("nested", made, reason, None)
        return case("nested", made, reason)

    def one_mb(self) -> Case:
        rng = self.rng
        where = rng.choice(["device_id", "padding", "value", "random"])
        if where == "random":
            return Case("one_mb", rng.randbytes(ONE_MB), "oversized_message", None)
        fields = self.reading()
        filler = "x" * ONE_MB
        if where == "device_id":
            fields = self.reading(device_id=s(filler))
        elif where == "value":
            fields = self.reading(data=s(filler))
        else:
            fields = [*fields, ("padding", s(filler))]
        return case("one_mb", fields, "oversized_message")

    def at_the_limit(self) -> Case:
        """Valid readings padded to exactly the limit, or one byte past it."""
        over = self.rng.random() < 0.5
        fields = [*self.reading(), ("padding", s(""))]
        pad = MAX_BYTES - len(render(fields)) + int(over)
        fields[-1] = ("padding", s("p" * pad))
        made = case("at_the_limit", fields, "oversized_message" if over else PROCESSED)
        assert len(made.raw) == MAX_BYTES + int(over)
        return made

    def hostile_id(self) -> Case:
        """Control characters, direction marks, look-alikes and the like in device ids."""
        rng = self.rng
        device = self.device()
        options = [
            *(device[:3] + chr(c) + device[3:] for c in [*range(0x20), 0x7F]),
            "\u200f" + device,  # right-to-left mark
            device + "\u202e",  # right-to-left override
            "\u2066" + device + "\u2069",  # isolates
            device.replace("-", "\u200b-"),  # zero-width space
            "\ufeff" + device,  # byte-order mark
            device.replace("p", "\u0440"),  # Cyrillic look-alike
            device.replace("u", "\u057d"),  # Armenian look-alike
            device + "\U0001f600",
            "\uff50ump-01",  # fullwidth
            device + "\n",
            " " + device,
            device + " ",
            device.replace("-", " "),
            "",
            "-" + device,
            "." + device,
            "\u0661\u0662",  # Arabic-Indic digits
            "x" * 129,
            "\u00e9" * 65,
        ]
        allowed = [
            "x" * 128,
            "a",
            "0",
            "pump-01/../../etc/passwd",
            "pump_01:a@b.c/d-e",
            "PUMP-01",
        ]
        if rng.random() < 0.2:
            return case("hostile_id", self.reading(device_id=s(rng.choice(allowed))), PROCESSED)
        if rng.random() < 0.15:  # a control character written raw inside the string: not JSON
            bad = bytes([rng.choice([*range(0x20)])])
            fields = self.reading(device, device_id=raw_token(b'"' + device.encode() + bad + b'"'))
            return case("hostile_id", fields, "invalid_json")
        return case("hostile_id", self.reading(device_id=s(rng.choice(options))), "invalid_device_id")

    def sql(self) -> Case:
        rng = self.rng
        rejected_ids = [
            "'; DROP TABLE dead_letters; --",
            "1 OR 1=1",
            "pump-01' OR '1'='1",
            "pump-01;DELETE FROM anomalies",
            "admin'--",
            'pump-01"); DROP TABLE local_models;--',
            "%s%s%s",
            "$1",
            "pump-01/**/",
            "x' UNION SELECT password FROM pg_shadow--",
            "pump-01\\",
            "E'\\x00'",
            "pump-01`rm -rf /`",
            "${jndi:ldap://x/a}",
            "{{7*7}}",
            "<script>alert(1)</script>",
        ]
        where = rng.choice(["device_id", "device_id", "device_id", "allowed", "timestamp", "label", "field", "value"])
        if where == "device_id":
            return case("sql", self.reading(device_id=s(rng.choice(rejected_ids))), "invalid_device_id")
        if where == "allowed":
            return case(
                "sql", self.reading(device_id=s(rng.choice(["pump-01--", "pump-01:DROP", "select"]))), PROCESSED
            )
        if where == "timestamp":
            return case("sql", self.reading(timestamp=s("2024-01-01'; DROP TABLE anomalies;--")), "invalid_timestamp")
        if where == "label":
            return case("sql", self.reading(label=s("1; DROP TABLE model_evaluations")), "invalid_label")
        if where == "value":
            return case("sql", self.reading(data=s("0; TRUNCATE scores")), "invalid_value")
        fields = self.reading(data=obj({"'); DROP TABLE anomalies; --": num(1.5)}))
        return case("sql", fields, PROCESSED)

    def timestamp(self) -> Case:
        token, reason = self.rng.choice(TIMESTAMPS)
        return case("timestamp", self.reading(timestamp=token), reason)

    def label(self) -> Case:
        token, reason = self.rng.choice(LABELS)
        return case("label", self.reading(label=token), reason)

    def missing(self) -> Case:
        token_or_none, key, reason = self.rng.choice(MISSING)
        return case("missing", self.reading(**{key: token_or_none}), reason)

    def fields(self) -> Case:
        token, reason = self.rng.choice(FIELDS)
        return case("fields", self.reading(data=token), reason)

    def empty(self) -> Case:
        raw = self.rng.choice([b"", b" ", b"\n", b"\r\n", b"\t", b"\x0b\x0c", b" " * 1000])
        return Case("empty", raw, "empty_message", None)

    def json_oddity(self) -> Case:
        rng = self.rng
        device = self.device()
        good = render(self.reading(device))
        options: list[tuple[Callable[[], Case], str]] = [
            (lambda: Case("json_oddity", b"\xef\xbb\xbf" + good, "invalid_json", None), "bom"),
            (lambda: Case("json_oddity", good + b"x", "invalid_json", None), "trailing"),
            (lambda: Case("json_oddity", good + good, "invalid_json", None), "two objects"),
            (lambda: Case("json_oddity", good[:-1] + b",}", "invalid_json", None), "trailing comma"),
            (lambda: Case("json_oddity", good.replace(b'"', b"'"), "invalid_json", None), "single quotes"),
            (lambda: Case("json_oddity", b"/* hi */" + good, "invalid_json", None), "comment"),
            (lambda: Case("json_oddity", good[: len(good) // 2], "invalid_json", None), "truncated"),
            (
                lambda: case(
                    "json_oddity", self.reading(device, device_id=raw_token(b'"pump\\ud800"')), "invalid_json"
                ),
                "lone surrogate",
            ),
            (
                lambda: case(
                    "json_oddity",
                    self.reading(device, device_id=raw_token(b'"pump\\ud83d\\ude00"')),
                    "invalid_device_id",
                ),
                "surrogate pair",
            ),
            (lambda: case("json_oddity", self.reading(device), PROCESSED, indent=True), "pretty printed"),
            (
                lambda: Case("json_oddity", b"\r\n\t " + good.replace(b",", b" ,\r\n ") + b" \n", PROCESSED, None),
                "whitespace and newlines",
            ),
            # the device id written twice: plainly, and with an escape that decodes to the same key
            (
                lambda: Case(
                    "json_oddity",
                    good[:-1] + b',"device_\\u0069d":"' + rng.choice(DEVICES).encode() + b'"}',
                    PROCESSED,
                    None,
                ),
                "escaped duplicate key",
            ),
            (lambda: Case("json_oddity", good[:-1] + b',"device_id":"pump-00"}', PROCESSED, None), "duplicate key"),
            (
                lambda: Case("json_oddity", good[:-1] + b',"meta":{"device_id":"pump-39"}}', PROCESSED, None),
                "nested device id",
            ),
        ]
        make, _ = rng.choice(options)
        return make()

    def duplicate(self) -> Case:
        earlier = self.rng.choice(self.valid)
        return Case("duplicate", earlier.raw, PROCESSED, earlier.csv_row)

    def out_of_order(self) -> Case:
        device = self.device()
        when = self.clock[device] - 60 * self.rng.randint(1, 500)
        return case("out_of_order", self.reading(device, when), PROCESSED)


KINDS: list[tuple[str, float]] = [
    ("valid_reading", 30),
    ("random_bytes", 6),
    ("broken_utf8", 5),
    ("huge_number", 5),
    ("extreme_number", 3),
    ("non_finite", 6),
    ("nested", 5),
    ("at_the_limit", 0.1),
    ("hostile_id", 7),
    ("sql", 4),
    ("timestamp", 7),
    ("label", 5),
    ("missing", 3),
    ("fields", 3),
    ("empty", 1),
    ("json_oddity", 5),
    ("duplicate", 3),
    ("out_of_order", 3),
]


def hostile_cases(n: int, seed: int = 0) -> list[Case]:
    """``n`` messages, the same for the same ``n`` and ``seed``; the first is a valid reading."""
    generator = _Generator(seed)
    names = [name for name, _ in KINDS]
    weights = [weight for _, weight in KINDS]
    cases = []
    for i in range(n):
        if i == 0:
            made = generator.valid_reading()
        elif i % ONE_MB_EVERY == ONE_MB_EVERY // 2:
            made = generator.one_mb()
        else:
            made = getattr(generator, generator.rng.choices(names, weights)[0])()
        cases.append(made)
    return cases


@functools.cache
def shared_cases(n: int, seed: int) -> tuple[Case, ...]:
    """:func:`hostile_cases`, made once per test session for the modules that share them."""
    return tuple(hostile_cases(n, seed))


def hostile_messages(n: int, seed: int = 0) -> list[bytes]:
    """The bytes of :func:`hostile_cases`, as a Kafka producer would send them."""
    return [made.raw for made in hostile_cases(n, seed)]


def write_json_lines(cases: list[Case], path: Path) -> dict[int, int]:
    """The cases that have a line, one per line; returns each line's number → its case's index."""
    lines: dict[int, int] = {}
    with open(path, "wb") as handle:
        for index, made in enumerate(cases):
            line = made.line
            if line is not None:
                handle.write(line + b"\n")
                lines[len(lines) + 1] = index
    return lines


def write_csv(cases: list[Case], path: Path) -> dict[int, int]:
    """The cases that have a CSV row, one row each after the header; returns each row's number
    (the header is row 1, as in FLEAD's dead letters) → its case's index."""
    rows = [(index, made.csv_row) for index, made in enumerate(cases) if made.csv_row is not None]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(csv_text([row for _, row in rows]))
    return {number: index for number, (index, _) in enumerate(rows, start=2)}


def position(source: str) -> int:
    """The line, row or offset a dead letter's source ends with (``file:PATH:LINE``,
    ``kafka:TOPIC:PARTITION:OFFSET``)."""
    return int(source.rsplit(":", 1)[1])


def verdicts(dead_letters: list[dict], index_of: dict[int, int]) -> dict[int, str]:
    """Each carried case's verdict: the reason of its dead letter, or ``"processed"``.

    ``index_of`` maps the position in a dead letter's source to the case's index, for every
    case the input carried. A case with two dead letters, or a dead letter that names no
    carried case, fails.
    """
    found: dict[int, str] = {}
    for letter in dead_letters:
        index = index_of.get(position(letter["source"]))
        assert index is not None, f"a dead letter for no message: {letter['source']}"
        assert index not in found, f"two dead letters for message {index}: {found[index]}, {letter['reason']}"
        found[index] = letter["reason"]
    return {index: found.get(index, PROCESSED) for index in index_of.values()}


def disagreements(cases: list[Case], found: dict[int, str]) -> list[str]:
    """Where a verdict differs from the one expected, one line each (kind, expected, found, the message's start)."""
    return [
        f"#{index} {cases[index].kind}: expected {cases[index].expected}, got {verdict}: {cases[index].raw[:120]!r}"
        for index, verdict in sorted(found.items())
        if cases[index].expected is not None and verdict != cases[index].expected
    ]


def summary_problems(summary: dict, found: Iterable[str]) -> list[str]:
    """What in a run's ``summary.json`` does not account for the messages it carried, given
    their verdicts ``found`` (one per message)."""
    found = list(found)
    rejected = [verdict for verdict in found if verdict != PROCESSED]
    expected = {
        "rows_read": len(found),
        "rows_processed": len(found) - len(rejected),
        "rows_rejected": len(rejected),
        "rows_unaccounted": 0,
        "rejected_by_reason": dict(sorted(Counter(rejected).items())),
    }
    return [
        f"{key}: {summary[key]} in the summary, {want} expected"
        for key, want in expected.items()
        if summary[key] != want
    ]


class Replay(NamedTuple):
    summary: dict
    dead_letters: list[dict]
    verdicts: dict[str, dict[int, str]]
    """Per file replayed (``hostile.jsonl``, ``hostile.csv``): each carried case's index → its verdict."""

    @property
    def carried(self) -> int:
        return sum(len(found) for found in self.verdicts.values())


@functools.cache
def replayed(n: int, seed: int, files: tuple[str, ...]) -> Replay:
    """The cases of ``shared_cases(n, seed)`` replayed in-process (``bytewax.testing.run_main``)
    from ``hostile.jsonl``, ``hostile.csv`` or a directory holding both; once per test session
    for each input, as the modules that compare verdicts share them."""
    from bytewax.testing import run_main

    from dataflows.flead import build_flow
    from tests.dataflow.conftest import settings_for

    cases = list(shared_cases(n, seed))
    writers = {"hostile.jsonl": write_json_lines, "hostile.csv": write_csv}
    with tempfile.TemporaryDirectory(prefix="flead-hostile-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        index_of = {file: writers[file](cases, root / "in" / file) for file in files}
        source = root / "in" / files[0] if len(files) == 1 else root / "in"
        run_main(build_flow(settings_for(source, root / "out")))
        summary = orjson.loads((root / "out" / "summary.json").read_bytes())
        letters = [orjson.loads(line) for line in (root / "out" / "dead_letters.jsonl").read_bytes().splitlines()]
    by_file: dict[str, list[dict]] = {file: [] for file in files}
    for letter in letters:
        by_file[Path(letter["source"].removeprefix("file:").rsplit(":", 1)[0]).name].append(letter)
    return Replay(summary, letters, {file: verdicts(by_file[file], index_of[file]) for file in files})


# -- Kafka ---------------------------------------------------------------------------------------

KAFKA_MAX_MESSAGE = 4 * ONE_MB
"""The hostile topic's and the producer's limit, so that the 1 MB messages reach FLEAD."""


def produce(bootstrap: str, topic: str, cases: list[Case]) -> dict[int, int]:
    """Every case's raw bytes, in order, on partition 0; returns each offset → its case's index."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "message.max.bytes": KAFKA_MAX_MESSAGE}
    )
    offsets: dict[int, int] = {}
    errors: list[str] = []

    def delivered(index: int):
        def report(error, message) -> None:
            if error is not None:
                errors.append(f"#{index}: {error}")
            else:
                offsets[message.offset()] = index

        return report

    for index, made in enumerate(cases):
        while True:
            try:
                producer.produce(topic, made.raw, partition=0, on_delivery=delivered(index))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert not errors, errors[:5]
    assert len(offsets) == len(cases)
    return offsets


def consume_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list[dict]:
    """Every message on partition 0 of ``topic`` up to its end now, as JSON."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, low)])
        rows: list[dict] = []
        next_offset = low
        deadline = time.monotonic() + timeout
        while next_offset < high:
            assert time.monotonic() < deadline, f"{topic}: read up to {next_offset} of {high} in {timeout:g} s"
            for message in consumer.consume(10_000, 0.5):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    continue
                assert error is None, error
                rows.append(orjson.loads(message.value()))
                next_offset = message.offset() + 1
    finally:
        consumer.close()
    return rows


class KafkaRun(NamedTuple):
    summary: dict
    dead_letters: list[dict]
    verdicts: dict[int, str]
    """Each case's index → its verdict."""
    produce_seconds: float
    run_seconds: float
    """The real command's wall time, start-up and the wait at the end of the topics included."""


def through_kafka(kafka: KafkaServer, cases: list[Case], out: Path) -> KafkaRun:
    """Every case produced raw to a fresh topic, then read by the real command with
    ``FLEAD_INPUT=kafka FLEAD_KAFKA_TAIL=false``; the dead letters are read back from their topic."""
    from tests.flead_runs import REPO, environment, flead_command

    bootstrap = kafka.bootstrap
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "FLEAD_KAFKA_BROKERS": bootstrap,
        "FLEAD_TOPIC_TELEMETRY": f"hostile-{suffix}",
        "FLEAD_TOPIC_ANOMALIES": f"anomalies-{suffix}",
        "FLEAD_TOPIC_LOCAL_UPDATES": f"local-model-updates-{suffix}",
        "FLEAD_TOPIC_GLOBAL_MODELS": f"global-model-updates-{suffix}",
        "FLEAD_TOPIC_DEAD_LETTERS": f"dead-letters-{suffix}",
        "FLEAD_KAFKA_IDLE_SECONDS": "3",
    }
    kafka.create_topic(topics["FLEAD_TOPIC_TELEMETRY"], config={"max.message.bytes": str(KAFKA_MAX_MESSAGE)})
    started = time.perf_counter()
    offsets = produce(bootstrap, topics["FLEAD_TOPIC_TELEMETRY"], cases)
    produced = time.perf_counter()
    env = environment("kafka", out, FLEAD_KAFKA_TAIL="false", **topics)
    result = subprocess.run(flead_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    ran = time.perf_counter()
    assert result.returncode == 0, result.stderr[-3000:]
    summary = orjson.loads((out / "summary.json").read_bytes())
    letters = consume_all(bootstrap, topics["FLEAD_TOPIC_DEAD_LETTERS"])
    prefix = f"kafka:{topics['FLEAD_TOPIC_TELEMETRY']}:0:"
    strays = [letter["source"] for letter in letters if not letter["source"].startswith(prefix)]
    assert not strays, f"dead letters from elsewhere: {strays[:3]}"
    return KafkaRun(summary, letters, verdicts(letters, offsets), produced - started, ran - produced)
