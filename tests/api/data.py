"""What the API's tests put in the database besides the replay, and what they expect back.

The replay of ``nab_sample`` writes its rows both to the database and to JSON Lines files; the
tests expect the API to answer with the files' rows plus the rows inserted here, directly
with SQL parameters: devices with hostile ids (each an anomaly at one shared time, so that
pages must break ties by device id, another an hour earlier, and a local model), and a device
with more anomalies than a page may hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

HOSTILE_IDS = [
    "it's",
    'say "hi"',
    "'; DROP TABLE anomalies; --",
    "' OR '1'='1",
    "%s",
    "%(device_id)s",
    "{device_id}",
    "back\\slash",
    "a/b/../c",
    "a%2Fb",
    "tab\tand\nnewline",
    "ünïcödé 设备 🛰",
    "\u202eevil\u202c.exe",
    "\u200fRTL\u200e marks",
    "?x=1&y=2#frag",
    "trailing/",
    " spaces around ",
    "x" * 1000,
]
"""Device ids that rows are inserted with: the API must return each byte for byte."""

ABSENT_IDS = [
    "nope",
    "' OR ''='",
    "%",
    "_",
    "*",
    "%25",
    "a%2F",
    "realKnownCause",
    "realKnownCause/",
    "REALKNOWNCAUSE/rogue_agent_key_hold",
    "realKnownCause/rogue_agent_key_hold ",
    "\u202e",
    "nul\x00byte",
    "x" * 999,
]
"""Device ids that no row has, several of them near ids that some rows have."""

TIE = datetime(2020, 1, 1, tzinfo=UTC)
BULK_DEVICE = "bulk/device"
BULK_ANOMALIES = 1_100


def hostile_anomalies() -> list[dict[str, Any]]:
    rows = []
    for index, device_id in enumerate(HOSTILE_IDS):
        for timestamp in (TIE, TIE - timedelta(hours=1, seconds=index)):
            rows.append(
                {
                    "device_id": device_id,
                    "timestamp": timestamp,
                    "values": {"value": float(index), "ünï \"'": -1.5},
                    "field": "value",
                    "z_score": 3.5,
                    "severity": "critical" if index % 2 else "warning",
                    "score": 0.75,
                    "global_version": 1,
                    "explanation": [{"evidence": "level", "field": "value", "value": 4.2, "log10_tail": -9.1}],
                }
            )
    return rows


def bulk_anomalies() -> list[dict[str, Any]]:
    start = datetime(2019, 1, 1, tzinfo=UTC)
    return [
        {
            "device_id": BULK_DEVICE,
            "timestamp": start + timedelta(minutes=index, microseconds=index),
            "values": {"value": index},
            "field": "value",
            "z_score": None,
            "severity": "critical" if index % 3 == 0 else "warning",
            "score": 0.5 + index / 100_000,
            "global_version": None,
            "explanation": None,
        }
        for index in range(BULK_ANOMALIES)
    ]


def inserted_anomalies() -> list[dict[str, Any]]:
    return hostile_anomalies() + bulk_anomalies()


def insert_rows(url: str) -> None:
    """The hostile devices' and the bulk device's rows, values as SQL parameters only."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            'INSERT INTO anomalies (device_id, "timestamp", "values", field, z_score, severity, score, '
            "global_version, explanation) VALUES (%(device_id)s, %(timestamp)s, %(values)s, %(field)s, "
            "%(z_score)s, %(severity)s, %(score)s, %(global_version)s, %(explanation)s)",
            [
                {**row, "values": Jsonb(row["values"]), "explanation": Jsonb(row["explanation"])}
                for row in inserted_anomalies()
            ],
        )
        cursor.executemany(
            "INSERT INTO local_models (device_id, model_version, global_version, weights, intercept, "
            "samples_processed, labelled, created_at) VALUES (%s, 1, 0, %s, 0.25, 7, 0, %s)",
            [(device_id, Jsonb({"abs_z": 0.5}), TIE - timedelta(days=1)) for device_id in HOSTILE_IDS],
        )


def read_jsonl(out_dir: Path, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out_dir / f"{name}.jsonl").read_bytes().splitlines()]


def when(text: str) -> datetime:
    """A time as the API or a JSON Lines file writes it."""
    return datetime.fromisoformat(text)
