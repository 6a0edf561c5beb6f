"""A bounded queue of database rows and the thread that writes them, so that a database that
goes away never stalls the dataflow."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable

import psycopg

from instrumentation.metrics import (
    SINK_BUFFERED_ROWS,
    SINK_DROPPED_ROWS,
    SINK_RETRIES,
    SINK_ROWS_WRITTEN,
    SINK_WRITE_ERRORS,
)
from sinks.database_rows import EncodedRow, Flush, TableRow, encode_row, write_encoded
from sinks.database_schema import TABLES, first_line

log = logging.getLogger("flead.timescale")

SINK = "timescale"


class BufferedWriter:
    """A bounded queue of rows and the thread that writes them, retrying with backoff.

    Counters (also exported as ``flead_sink_*`` metrics): ``written`` rows the database
    accepted, ``dropped`` rows lost (buffer full, refused by the database, or still waiting
    at close), ``rejected`` the refused ones among them, ``errors`` failed flushes,
    ``retries`` flushes tried again. Every row put is written, dropped, or still ``buffered``;
    :meth:`unwritten` lists the buffered ones, for a snapshot to keep across a crash.

    Parameters
    ----------
    connect
        Opens a new connection; called again after every failure.
    max_buffered_rows
        Rows waiting at most, the batch being written included; beyond it the oldest are dropped.
    batch_rows
        Rows per flush; at most half the buffer, so that a full buffer always has rows to drop
        that are not being written.
    backoff
        First and longest wait between retries, in seconds; the wait doubles after each failure.
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
        self._batch_rows = max(1, min(batch_rows, max_buffered_rows // 2))
        self._first_backoff, self._max_backoff = backoff
        self._queue: deque[EncodedRow] = deque()
        self._in_flight: list[EncodedRow] = []
        self._condition = threading.Condition()
        self._stopping = False
        self._give_up = False
        self._conn: psycopg.Connection | None = None
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.errors = 0
        self.retries = 0
        self._written_metric = {name: SINK_ROWS_WRITTEN.labels(SINK, name) for name in TABLES}
        self._buffered_metric = SINK_BUFFERED_ROWS.labels(SINK)
        self._dropped_metric = SINK_DROPPED_ROWS.labels(SINK)
        self._thread = threading.Thread(target=self._run, name="flead-timescale-writer", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        with self._condition:
            return len(self._queue) + len(self._in_flight)

    def unwritten(self, table: str) -> list[EncodedRow]:
        """``table``'s rows put and not yet known to be written, oldest first: the batch being
        written (it may be committed already) and those waiting."""
        with self._condition:
            return [row for row in (*self._in_flight, *self._queue) if row[0] == table]

    def put(self, rows: Iterable[TableRow]) -> None:
        """Queue rows; never waits for the database. Raises ``ValueError`` for an unknown table."""
        self.put_encoded([(table, encode_row(table, row)) for table, row in rows])

    def put_encoded(self, encoded: list[EncodedRow]) -> None:
        """Queue rows encoded already (:meth:`unwritten`'s, after a resume)."""
        with self._condition:
            overflow = max(0, len(self._queue) + len(self._in_flight) + len(encoded) - self._max)
            from_queue = min(overflow, len(self._queue))
            for _ in range(from_queue):
                self._queue.popleft()
            self._queue.extend(encoded[overflow - from_queue :])  # more new rows than room: the newest
            self._buffered_metric.inc(len(encoded))
            self._drop(overflow)
            self._condition.notify()

    def _drop(self, rows: int) -> None:
        if rows:
            self.dropped += rows
            self._dropped_metric.inc(rows)
            self._buffered_metric.dec(rows)

    def _run(self) -> None:
        backoff = self._first_backoff
        try:
            while True:
                with self._condition:
                    while not self._queue and not self._stopping:
                        self._condition.wait()
                    if not self._queue or self._give_up:
                        return
                    take = min(self._batch_rows, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(take)]
                    self._in_flight = batch
                flush = self._flush(batch)
                with self._condition:
                    self._in_flight = []
                    if flush is not None:
                        rejected = len(flush.rejected)
                        self._buffered_metric.dec(len(batch) - rejected)
                        self._drop(rejected)
                        backoff = self._first_backoff
                        continue
                    self._queue.extendleft(reversed(batch))  # oldest first again, to be dropped first
                    self._condition.wait_for(lambda: self._give_up, backoff)
                    if self._give_up:
                        return
                backoff = min(backoff * 2, self._max_backoff)
                self.retries += 1
                SINK_RETRIES.labels(SINK).inc()
        finally:
            if self._conn is not None:
                self._conn.close()

    def _flush(self, batch: list[EncodedRow]) -> Flush | None:
        """Write one batch; None when it must be tried again."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            flush = write_encoded(self._conn, batch)
        except Exception as exc:
            self.errors += 1
            SINK_WRITE_ERRORS.labels(SINK).inc()
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning(
                    "database write failed (%d so far, %d rows waiting), retrying: %s",
                    self.errors,
                    self.buffered,
                    first_line(exc),
                    exc_info=not isinstance(exc, psycopg.Error),  # a bug, not the database: show where
                )
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return None
        for table, n in flush.written.items():
            self.written += n
            self._written_metric[table].inc(n)
        for table, reason in flush.rejected:
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 100 == 0:
                log.warning("the database refused a %s row (%d so far), dropped: %s", table, self.rejected, reason)
        return flush

    def close(self, timeout: float = 30.0) -> int:
        """Drain for up to ``timeout`` seconds, then stop; returns (and logs) the rows left unwritten."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        self._thread.join(timeout)
        with self._condition:
            self._give_up = True
            self._condition.notify_all()
        self._thread.join(5.0)  # a write under way ends within the connection's timeouts
        with self._condition:
            left = len(self._queue) + len(self._in_flight)
            self._queue.clear()
            self._drop(left)
        if left:
            log.error("%d rows were not written to the database before shutdown (dropped)", left)
        return left
