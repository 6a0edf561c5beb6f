"""Encoded rows hold memory of their text's size, not orjson's rounded-up buffer."""

from __future__ import annotations

import tracemalloc

import orjson

from operators.compact_json import dumps
from sinks.database_rows import encode_row
from sinks.jsonl import json_lines

ROW = {
    "device_id": "device-000123",
    "model_version": 3,
    "weights": {f"feature_{i}": 0.123456789 * i for i in range(7)},
    "created_at": "2013-07-04T01:00:00.000Z",
}


def held_per_row(encode) -> float:
    """Bytes of memory each of 2,000 encoded rows holds while all are kept."""
    rows = [dict(ROW, model_version=i) for i in range(2000)]
    tracemalloc.start()
    try:
        kept = [encode(row) for row in rows]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept) == len(rows)
    return held / len(rows)


def test_the_text_is_orjsons():
    for option in (None, orjson.OPT_APPEND_NEWLINE):
        assert dumps(ROW, option) == orjson.dumps(ROW, option=option)
    assert json_lines([ROW, ROW]) == orjson.dumps(ROW) + b"\n" + orjson.dumps(ROW) + b"\n"


def test_a_kept_row_holds_about_its_length():
    length = len(orjson.dumps(ROW))
    for encode in (dumps, lambda row: encode_row("local_models", row)):
        assert held_per_row(encode) < length + 100  # the text and a bytes object's header (33 B)
