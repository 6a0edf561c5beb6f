"""Results to PostgreSQL, as TimescaleDB hypertables when the extension is there.

The sink owns its connection, batching, retries and idempotency and nothing else:

- the schema is created at start-up if missing (:func:`prepare_database`);
- rows are written in one transaction per flush, one batched ``INSERT … ON CONFLICT DO
  NOTHING`` per table, so replaying the same records inserts nothing twice;
- ``write_batch`` only queues rows: a background thread writes them, so a database that
  goes away never stalls the dataflow. The queue is bounded; when it is full the oldest rows
  are dropped, and counted. Writes are retried with exponential backoff until the database
  is back; on shutdown the queue is drained for up to ``close_timeout`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg.types.json import Jsonb

from sinks.metrics import (
    SINK_BUFFERED_ROWS,
    SINK_DROPPED_ROWS,
    SINK_RETRIES,
    SINK_ROWS_WRITTEN,
    SINK_WRITE_ERRORS,
    initialize_sink,
)

log = logging.getLogger("flead.timescale")

TableRow = tuple[str, dict[str, Any]]
"""``(table, row)``: a row as the dataflow also writes it to JSON Lines."""

SINK = "timescale"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    """``(column, SQL type)`` in insert order; ``jsonb`` and ``timestamptz`` values are converted."""
    key: tuple[str, ...]
    time_column: str
    hypertable: bool = True
    segment_by: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def ddl(self) -> str:
        columns = ",\n  ".join(
            f'"{name}" {sql_type} NOT NULL' if name in self.key else f'"{name}" {sql_type}'
            for name, sql_type in self.columns
        )
        key = ", ".join(f'"{name}"' for name in self.key)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {columns},\n  PRIMARY KEY ({key})\n);\n"
            f'CREATE INDEX IF NOT EXISTS {self.name}_{self.time_column}_idx ON {self.name} ("{self.time_column}" DESC);'
        )

    def insert(self) -> str:
        names = ", ".join(f'"{name}"' for name in self.column_names)
        values = ", ".join(f"%s::{sql_type}" for _, sql_type in self.columns)
        return f"INSERT INTO {self.name} ({names}) VALUES ({values}) ON CONFLICT DO NOTHING"


# A hypertable's unique keys must hold its time column: where the natural key lacks it, the
# key adds the time column, which is deterministic for a given record (event time), so a
# replay still conflicts with the first insert.
TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table(
            "local_models",
            (
                ("device_id", "text"),
                ("model_version", "integer"),
                ("global_version", "integer"),
                ("weights", "jsonb"),
                ("intercept", "double precision"),
                ("samples_processed", "integer"),
                ("accuracy", "double precision"),
                ("loss", "double precision"),
                ("created_at", "timestamptz"),
            ),
            key=("device_id", "model_version", "created_at"),
            time_column="created_at",
            segment_by="device_id",
        ),
        Table(
            "federated_models",
            (
                ("global_version", "integer"),
                ("aggregation_round", "integer"),
                ("weights", "jsonb"),
                ("intercept", "double precision"),
                ("accuracy", "double precision"),
                ("num_devices", "integer"),
                ("num_updates", "integer"),
                ("samples", "bigint"),
                ("created_at", "timestamptz"),
            ),
            key=("global_version", "created_at"),
            time_column="created_at",
        ),
        Table(
            "model_evaluations",
            (
                ("global_version", "integer"),
                ("n", "bigint"),
                ("tp", "bigint"),
                ("fp", "bigint"),
                ("tn", "bigint"),
                ("fn", "bigint"),
                ("accuracy", "double precision"),
                ("precision", "double precision"),
                ("recall", "double precision"),
                ("f1", "double precision"),
                ("window_start", "timestamptz"),
                ("window_end", "timestamptz"),
            ),
            key=("global_version", "window_start"),
            time_column="window_start",
        ),
        Table(
            "anomalies",
            (
                ("device_id", "text"),
                ("timestamp", "timestamptz"),
                ("values", "jsonb"),
                ("field", "text"),
                ("z_score", "double precision"),
                ("severity", "text"),
                ("score", "double precision"),
                ("global_version", "integer"),
                ("explanation", "jsonb"),
            ),
            key=("device_id", "timestamp"),
            time_column="timestamp",
            segment_by="device_id",
        ),
        # Dead letters are few, and their arrival time differs on every replay: a plain table
        # keyed by a hash of what was rejected, in both modes.
        Table(
            "dead_letters",
            (
                ("id", "bigint"),
                ("received_at", "timestamptz"),
                ("reason", "text"),
                ("detail", "text"),
                ("source", "text"),
                ("payload", "text"),
            ),
            key=("id",),
            time_column="received_at",
            hypertable=False,
        ),
    )
}


def dead_letter_id(row: dict[str, Any]) -> int:
    """A stable 63-bit id from what was rejected, where, and why."""
    digest = hashlib.sha256(f"{row['source']}\x00{row['reason']}\x00{row['payload']}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def row_params(table: Table, row: dict[str, Any]) -> tuple[Any, ...]:
    """The insert parameters of one row, in the table's column order."""
    if table.name == "dead_letters":
        row = {**row, "id": dead_letter_id(row)}
    return tuple(Jsonb(row[name]) if sql_type == "jsonb" else row[name] for name, sql_type in table.columns)


def redact(url: str) -> str:
    """The URL without its password, fit for a log line or an error."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def ensure_schema(conn: psycopg.Connection, compress_after: str | None, retain_for: str | None) -> str:
    """Create what is missing; returns the mode: ``"timescaledb"`` or ``"postgresql"``."""
    with conn.transaction():
        available = (
            conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None
        )
        if available:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table in TABLES.values():
            conn.execute(table.ddl())
            if available and table.hypertable:
                _make_hypertable(conn, table, compress_after, retain_for)
    return "timescaledb" if available else "postgresql"


def _make_hypertable(
    conn: psycopg.Connection, table: Table, compress_after: str | None, retain_for: str | None
) -> None:
    conn.execute(
        "SELECT create_hypertable(%s, %s, if_not_exists => TRUE, migrate_data => TRUE)",
        (table.name, table.time_column),
    )
    if compress_after:
        enabled = conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
            (table.name,),
        ).fetchone()
        if not (enabled and enabled[0]):
            segment = f", timescaledb.compress_segmentby = '{table.segment_by}'" if table.segment_by else ""
            conn.execute(f"ALTER TABLE {table.name} SET (timescaledb.compress{segment})")
        conn.execute(
            "SELECT add_compression_policy(%s, %s::interval, if_not_exists => TRUE)", (table.name, compress_after)
        )
    if retain_for:
        conn.execute("SELECT add_retention_policy(%s, %s::interval, if_not_exists => TRUE)", (table.name, retain_for))


def connect(url: str, timeout: float = 5.0) -> psycopg.Connection:
    return psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True)


_prepared: dict[str, str] = {}
_prepared_lock = threading.Lock()


def prepare_database(url: str, compress_after: str | None, retain_for: str | None, timeout: float = 5.0) -> str:
    """Create the schema once per process and log the mode; fails naming the (redacted) URL."""
    with _prepared_lock:
        if url in _prepared:
            return _prepared[url]
        try:
            with connect(url, timeout) as conn:
                mode = ensure_schema(conn, compress_after, retain_for)
        except psycopg.Error as exc:
            raise RuntimeError(f"cannot prepare the database {redact(url)} (FLEAD_DATABASE_URL): {exc}") from None
        _prepared[url] = mode
        if mode == "timescaledb":
            log.info("database %s: TimescaleDB hypertables with compression and retention policies", redact(url))
        else:
            log.info("database %s: plain PostgreSQL tables with time indexes (no timescaledb extension)", redact(url))
        return mode


def write_rows(conn: psycopg.Connection, rows: Iterable[TableRow]) -> dict[str, int]:
    """Insert rows in one transaction, one batched statement per table; returns rows per table."""
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for name, row in rows:
        table = TABLES[name]
        by_table.setdefault(name, []).append(row_params(table, row))
    with conn.transaction(), conn.cursor() as cursor:
        for name, params in by_table.items():
            cursor.executemany(TABLES[name].insert(), params)
    return {name: len(params) for name, params in by_table.items()}


class BufferedWriter:
    """A bounded queue of rows and the thread that writes them, retrying with backoff.

    Parameters
    ----------
    connect
        Opens a new connection (called again after every failure).
    max_buffered_rows
        Rows waiting at most; when full, the oldest are dropped and counted.
    batch_rows
        Rows per transaction.
    backoff
        First and longest wait between retries, in seconds.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        max_buffered_rows: int = 100_000,
        batch_rows: int = 5_000,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self._connect = connect
        self._max = max_buffered_rows
        self._batch_rows = batch_rows
        self._first_backoff, self._max_backoff = backoff
        self._queue: deque[TableRow] = deque()
        self._in_flight: list[TableRow] = []
        self._condition = threading.Condition()
        self._stopping = False
        self._give_up = False
        self._conn: psycopg.Connection | None = None
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="flead-timescale-writer", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        with self._condition:
            return len(self._queue) + len(self._in_flight)

    def put(self, rows: Iterable[TableRow]) -> None:
        """Queue rows; never waits for the database."""
        with self._condition:
            for row in rows:
                if len(self._queue) >= self._max:
                    self._queue.popleft()
                    self.dropped += 1
                    SINK_DROPPED_ROWS.labels(SINK).inc()
                self._queue.append(row)
            SINK_BUFFERED_ROWS.labels(SINK).set(len(self._queue) + len(self._in_flight))
            self._condition.notify()

    def _run(self) -> None:
        backoff = self._first_backoff
        while True:
            with self._condition:
                while not self._in_flight and not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._in_flight:
                    if not self._queue:
                        return  # stopping, and nothing left
                    take = min(self._batch_rows, len(self._queue))
                    self._in_flight = [self._queue.popleft() for _ in range(take)]
            if self._write(self._in_flight):
                backoff = self._first_backoff
                with self._condition:
                    self._in_flight = []
                    SINK_BUFFERED_ROWS.labels(SINK).set(len(self._queue))
                    self._condition.notify_all()
                continue
            with self._condition:
                if self._stopping and self._give_up:
                    return
                self._condition.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff)
            SINK_RETRIES.labels(SINK).inc()

    def _write(self, rows: list[TableRow]) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            for table, n in write_rows(self._conn, rows).items():
                SINK_ROWS_WRITTEN.labels(SINK, table).inc(n)
            self.written += len(rows)
            return True
        except psycopg.Error as exc:
            self.errors += 1
            SINK_WRITE_ERRORS.labels(SINK).inc()
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning(
                    "database write failed (%d so far, %d rows waiting), retrying: %s",
                    self.errors,
                    self.buffered,
                    str(exc).strip().splitlines()[0] if str(exc) else exc,
                )
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return False

    def close(self, timeout: float = 30.0) -> None:
        """Drain for up to ``timeout`` seconds, then stop; rows still waiting are logged."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.1)
        if self._thread.is_alive():
            self._give_up = True
            with self._condition:
                self._condition.notify_all()
            self._thread.join(5)
        left = self.buffered
        if left:
            log.error("%d rows were not written to the database before shutdown", left)
        if self._conn is not None:
            self._conn.close()


class _TimescalePartition(StatelessSinkPartition[tuple[str, list[dict[str, Any]]]]):
    def __init__(self, writer: BufferedWriter, close_timeout: float) -> None:
        self._writer = writer
        self._close_timeout = close_timeout

    def write_batch(self, items: list[tuple[str, list[dict[str, Any]]]]) -> None:
        self._writer.put((table, row) for table, rows in items for row in rows)

    def close(self) -> None:
        self._writer.close(self._close_timeout)


class TimescaleSink(DynamicSink[tuple[str, list[dict[str, Any]]]]):
    """Writes ``(table, rows)`` items; each worker has its own writer thread and connection."""

    def __init__(
        self,
        url: str,
        max_buffered_rows: int = 100_000,
        compress_after: str | None = "7 days",
        retain_for: str | None = "90 days",
        close_timeout: float = 30.0,
    ) -> None:
        self._url = url
        self._max_buffered_rows = max_buffered_rows
        self._compress_after = compress_after
        self._retain_for = retain_for
        self._close_timeout = close_timeout

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TimescalePartition:
        prepare_database(self._url, self._compress_after, self._retain_for)
        initialize_sink(SINK)
        writer = BufferedWriter(lambda: connect(self._url), self._max_buffered_rows)
        return _TimescalePartition(writer, self._close_timeout)
