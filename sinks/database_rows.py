"""Rows into tables: one transaction per flush, one statement per table, replays inserting nothing twice.

A flush holds one ``INSERT … SELECT FROM json_populate_recordset(…) ON CONFLICT DO NOTHING``
per table. A row the database refuses for its content (a ``DataError`` or ``IntegrityError``)
is found by bisecting its statement's rows in savepoints, then left out and reported, so it
cannot block the rows behind it. Rows are the JSON Lines rows of the dataflow; the JSON field
names are the column names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from operators.compact_json import dumps
from sinks.database_schema import TABLES, Table, first_line

Row = dict[str, Any]
TableRow = tuple[str, Row]
"""``(table, row)``: a row as the dataflow also writes it to JSON Lines."""
EncodedRow = tuple[str, bytes]
"""``(table, row as JSON)``: what waits in the buffer."""


def dead_letter_id(row: Row) -> int:
    """A stable 63-bit id from what was rejected, where, and why."""
    digest = hashlib.sha256(f"{row['source']}\x00{row['reason']}\x00{row['payload']}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def check_table(table: str) -> None:
    """Raises ``ValueError`` unless ``table`` is one of the sink's tables."""
    if table not in TABLES:
        raise ValueError(f"no table {table!r} in the database sink (tables: {', '.join(TABLES)})")


def encode_row(table: str, row: Row) -> bytes:
    """One row as the JSON object the insert reads; raises ``ValueError`` for an unknown table.

    Dead letters get their ``id``. NUL characters, which PostgreSQL text cannot hold, become
    U+FFFD in top-level strings (a dead letter's payload is arbitrary input); NaN and ±inf
    become null (orjson).
    """
    check_table(table)
    if table == "dead_letters":
        row = {**row, "id": dead_letter_id(row)}
    if any(isinstance(value, str) and "\x00" in value for value in row.values()):
        row = {key: value.replace("\x00", "\ufffd") if isinstance(value, str) else value for key, value in row.items()}
    return dumps(row)


@dataclass
class Flush:
    """What one flush did."""

    written: dict[str, int] = field(default_factory=dict)
    """Rows per table the database accepted: inserted, or already there."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """``(table, reason)`` for every row the database refused."""


def write_rows(conn: psycopg.Connection, rows: Iterable[TableRow]) -> Flush:
    """Write rows now: one transaction, one statement per table (see :func:`write_encoded`)."""
    return write_encoded(conn, [(table, encode_row(table, row)) for table, row in rows])


def write_encoded(conn: psycopg.Connection, rows: Sequence[EncodedRow]) -> Flush:
    """Insert encoded rows in one transaction, one statement per table, skipping known keys.

    A statement that fails for its rows' content is split in halves, in savepoints, until
    the refused rows are alone; they are left out and reported. Other errors propagate.
    """
    by_table: dict[str, list[bytes]] = {}
    for table, doc in rows:
        by_table.setdefault(table, []).append(doc)
    flush = Flush()
    with conn.transaction():
        for table, docs in by_table.items():
            rejected = _insert(conn, TABLES[table], docs)
            flush.written[table] = len(docs) - len(rejected)
            flush.rejected.extend((table, reason) for reason in rejected)
    return flush


def _insert(conn: psycopg.Connection, table: Table, docs: list[bytes]) -> list[str]:
    """Insert, isolating refused rows; returns the database's reason for each one refused."""
    try:
        with conn.transaction():  # a savepoint: a refused row leaves the flush's other rows in
            conn.execute(table.insert, ((b"[" + b",".join(docs) + b"]").decode(),))
        return []
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        if len(docs) == 1:
            return [first_line(exc)]
        half = len(docs) // 2
        return _insert(conn, table, docs[:half]) + _insert(conn, table, docs[half:])
