"""Results to PostgreSQL, as TimescaleDB hypertables when the extension is there.

The sink owns its connection, batching, retries and idempotency and nothing else:

- the schema is checked at start-up, once per process, and made only if it is missing or out
  of date (``sinks/database_schema.py``): a role that may only insert needs its owner's
  ``python -m sinks.migrate`` first;
- ``write_batch`` only queues rows: a background thread writes them (``sinks/buffered_writer.py``).
  The queue is bounded; when it is full the oldest rows are dropped, and counted. Failed writes
  are retried with exponential backoff on a new connection; on shutdown the queue is drained
  for up to ``close_timeout`` seconds;
- each table is a partition whose snapshot is its rows still queued, so that a crash loses
  none the dataflow made before its last snapshot;
- a flush is one transaction, and a replay of the same records inserts nothing twice
  (``sinks/database_rows.py``);
- with a retention policy, the first rows written that are already older than its window
  are named in one warning: the policy would drop them at its next run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from instrumentation.metrics import initialize_sink
from operators.messages import iso_timestamp
from sinks.buffered_writer import SINK, BufferedWriter
from sinks.database_rows import EncodedRow, Row, TableRow, check_table
from sinks.database_schema import TABLES, connect, prepare_database, retention_seconds

log = logging.getLogger("flead.timescale")


class RetentionWatch:
    """Warns once when rows already past the retention window are written.

    TimescaleDB's retention policy drops a chunk once every row it may hold is older than
    the window, measured from the wall clock; rows of old event time (a replay of last
    year's data) would go at the policy's next run. The times are compared as the ISO-8601
    UTC strings the dataflow writes. After the warning nothing more is checked.
    """

    def __init__(self, retain_for: str, seconds: float) -> None:
        self._retain_for = retain_for
        self._seconds = seconds
        self._lock = threading.Lock()
        self.warned = False

    def watch(self, rows: Iterable[TableRow]) -> Iterator[TableRow]:
        cutoff = iso_timestamp(time.time() - self._seconds)
        for table, row in rows:
            if not self.warned:
                column = TABLES[table].time_column if table in TABLES else None
                value = row.get(column) if column is not None and TABLES[table].chunk_interval else None
                if isinstance(value, str) and value < cutoff:
                    self._warn(table, value, cutoff)
            yield table, row

    def _warn(self, table: str, value: str, cutoff: str) -> None:
        with self._lock:
            if self.warned:
                return
            self.warned = True
        log.warning(
            "FLEAD_DB_RETAIN_FOR=%s: this run writes rows older than the retention window (the first: %s at %s; "
            "the window starts at %s); TimescaleDB's retention policy drops a chunk once all its rows are that old, "
            "at its next run (daily). Leave FLEAD_DB_RETAIN_FOR empty to keep them",
            self._retain_for,
            table,
            value,
            cutoff,
        )


class TimescalePartition(StatefulSinkPartition[Row | Sequence[Row], list[EncodedRow]]):
    """One table's rows into the process's writer; its snapshot is the table's rows not yet written."""

    def __init__(self, table: str, writer: SharedWriter, retention: RetentionWatch | None = None) -> None:
        self._table = table
        self._writer = writer
        self._retention = retention

    def write_batch(self, values: list[Row | Sequence[Row]]) -> None:
        rows = _rows(self._table, values)
        if self._retention is not None and not self._retention.warned:
            rows = self._retention.watch(rows)
        self._writer.writer.put(rows)

    def snapshot(self) -> list[EncodedRow]:
        return self._writer.writer.unwritten(self._table)

    def close(self) -> None:
        self._writer.release()


def _rows(table: str, values: Iterable[Row | Sequence[Row]]) -> Iterable[TableRow]:
    for rows in values:
        if isinstance(rows, dict):
            yield table, rows
        else:
            yield from ((table, row) for row in rows)


class SharedWriter:
    """The writer of one process's partitions: made by the first partition built, drained and
    stopped when the last one closes, so that a process holds one connection and a shutdown
    waits ``close_timeout`` at most once."""

    def __init__(self, make: Callable[[], BufferedWriter], close_timeout: float) -> None:
        self._make = make
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._users = 0
        self._writer: BufferedWriter | None = None

    @property
    def writer(self) -> BufferedWriter:
        assert self._writer is not None, "the writer is used before a partition took it"
        return self._writer

    def take(self) -> SharedWriter:
        with self._lock:
            if self._writer is None:
                self._writer = self._make()
            self._users += 1
        return self

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            writer = self._writer if self._users == 0 else None
            if writer is not None:
                self._writer = None
        if writer is not None:
            writer.close(self._close_timeout)


class TimescaleSink(FixedPartitionedSink[Row | Sequence[Row], list[EncodedRow]]):
    """Writes ``(table, row)`` or ``(table, [rows])`` items, one partition per table.

    A partition's snapshot holds its table's rows still waiting in the buffer, and a resumed
    run puts them back first: rows the dataflow made before its last snapshot and a crash
    kept from the database are written after all, however far the writer was behind. Rows
    written twice that way are left out by the tables' keys.

    ``build_part`` checks the schema, and creates what it lacks (once per process); it fails if
    the database cannot be reached within ``connect_timeout`` seconds, or the schema is
    incomplete and this role may not complete it.
    """

    def __init__(
        self,
        url: str,
        *,
        max_buffered_rows: int = 100_000,
        compress_after: str | None = "7 days",
        retain_for: str | None = None,
        close_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._max_buffered_rows = max_buffered_rows
        self._compress_after = compress_after
        self._retain_for = retain_for
        self._connect_timeout = connect_timeout
        self._retention: RetentionWatch | None = None
        self._retention_lock = threading.Lock()
        self._tables = sorted(TABLES)
        self._writer = SharedWriter(self._new_writer, close_timeout)

    def list_parts(self) -> list[str]:
        return self._tables

    def part_fn(self, item_key: str) -> int:
        """Raises ``ValueError`` for an unknown table."""
        check_table(item_key)
        return self._tables.index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: list[EncodedRow] | None) -> TimescalePartition:
        prepare_database(self._url, self._compress_after, self._retain_for, self._connect_timeout)
        writer = self._writer.take()
        if resume_state:
            writer.writer.put_encoded(resume_state)
        return TimescalePartition(for_part, writer, self._retention_watch())

    def _new_writer(self) -> BufferedWriter:
        initialize_sink(SINK)
        return BufferedWriter(lambda: connect(self._url, self._connect_timeout), self._max_buffered_rows)

    def _retention_watch(self) -> RetentionWatch | None:
        """One watch for the workers of this process, so that it warns once."""
        seconds = retention_seconds(self._url)
        if seconds is None or self._retain_for is None:
            return None
        with self._retention_lock:
            if self._retention is None:
                self._retention = RetentionWatch(self._retain_for, seconds)
            return self._retention
