"""Results to PostgreSQL, as TimescaleDB hypertables when the extension is there.

The sink owns its connection, batching, retries and idempotency and nothing else:

- the schema is created at start-up if missing, once per process (``sinks/database_schema.py``);
- ``write_batch`` only queues rows: a background thread writes them (``sinks/buffered_writer.py``).
  The queue is bounded; when it is full the oldest rows are dropped, and counted. Failed writes
  are retried with exponential backoff on a new connection; on shutdown the queue is drained
  for up to ``close_timeout`` seconds;
- a flush is one transaction, and a replay of the same records inserts nothing twice
  (``sinks/database_rows.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from instrumentation.metrics import initialize_sink
from sinks.buffered_writer import SINK, BufferedWriter
from sinks.database_rows import Row, TableRow
from sinks.database_schema import connect, prepare_database

Item = tuple[str, Row | Sequence[Row]]
"""What the sink receives: a table name with one row or a list of rows."""


class TimescalePartition(StatelessSinkPartition[Item]):
    def __init__(self, writer: BufferedWriter, close_timeout: float) -> None:
        self._writer = writer
        self._close_timeout = close_timeout

    def write_batch(self, items: list[Item]) -> None:
        self._writer.put(_rows(items))

    def close(self) -> None:
        self._writer.close(self._close_timeout)


def _rows(items: Iterable[Item]) -> Iterable[TableRow]:
    for table, rows in items:
        if isinstance(rows, dict):
            yield table, rows
        else:
            yield from ((table, row) for row in rows)


class TimescaleSink(DynamicSink[Item]):
    """Writes ``(table, row)`` or ``(table, [rows])`` items; each worker has its own writer thread.

    ``build`` creates the schema (once per process) and fails if the database cannot be
    reached within ``connect_timeout`` seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        max_buffered_rows: int = 100_000,
        compress_after: str | None = "7 days",
        retain_for: str | None = "90 days",
        close_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._max_buffered_rows = max_buffered_rows
        self._compress_after = compress_after
        self._retain_for = retain_for
        self._close_timeout = close_timeout
        self._connect_timeout = connect_timeout

    def build(self, step_id: str, worker_index: int, worker_count: int) -> TimescalePartition:
        prepare_database(self._url, self._compress_after, self._retain_for, self._connect_timeout)
        initialize_sink(SINK)
        writer = BufferedWriter(lambda: connect(self._url, self._connect_timeout), self._max_buffered_rows)
        return TimescalePartition(writer, self._close_timeout)
