"""Results to PostgreSQL, as TimescaleDB hypertables when the extension is there.

The sink owns its connection, batching, retries and idempotency and nothing else:

- the schema is created at start-up if missing (:func:`prepare_database`), once per process;
- a flush is one transaction holding one ``INSERT … SELECT FROM json_populate_recordset(…)
  ON CONFLICT DO NOTHING`` per table: one statement however many rows, and a replay of the
  same records inserts nothing twice;
- ``write_batch`` only queues rows: a background thread writes them, so a database that goes
  away never stalls the dataflow. The queue is bounded; when it is full the oldest rows are
  dropped, and counted. Failed writes are retried with exponential backoff on a new
  connection; on shutdown the queue is drained for up to ``close_timeout`` seconds.
- a row the database refuses for its content (a ``DataError`` or ``IntegrityError``) is found
  by bisecting its batch, then dropped, counted and logged, so it cannot block the rows
  behind it forever.

Rows are the JSON Lines rows of the dataflow; the JSON field names are the column names.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from sinks.metrics import (
    SINK_BUFFERED_ROWS,
    SINK_DROPPED_ROWS,
    SINK_RETRIES,
    SINK_ROWS_WRITTEN,
    SINK_WRITE_ERRORS,
    initialize_sink,
)

log = logging.getLogger("flead.timescale")

SINK = "timescale"

Row = dict[str, Any]
TableRow = tuple[str, Row]
"""``(table, row)``: a row as the dataflow also writes it to JSON Lines."""
Item = tuple[str, Row | Sequence[Row]]
"""What the sink receives: a table name with one row or a list of rows."""
EncodedRow = tuple[str, bytes]
"""``(table, row as JSON)``: what waits in the buffer."""

# The same DDL in both modes. A hypertable's unique keys must hold its time column, so the
# keys of local_models and federated_models add theirs; it is the record's event time, the
# same on every replay, so a replayed row still conflicts with the first insert.
SCHEMA = """
CREATE TABLE IF NOT EXISTS local_models (
  device_id text NOT NULL,
  model_version integer NOT NULL,
  global_version integer,
  weights jsonb,
  intercept double precision,
  samples_processed integer,
  accuracy double precision,
  loss double precision,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (device_id, model_version, created_at)
);
CREATE INDEX IF NOT EXISTS local_models_created_at_idx ON local_models (created_at DESC);

CREATE TABLE IF NOT EXISTS federated_models (
  global_version integer NOT NULL,
  aggregation_round integer,
  weights jsonb,
  intercept double precision,
  accuracy double precision,
  num_devices integer,
  num_updates integer,
  samples bigint,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (global_version, created_at)
);
CREATE INDEX IF NOT EXISTS federated_models_created_at_idx ON federated_models (created_at DESC);

CREATE TABLE IF NOT EXISTS model_evaluations (
  global_version integer NOT NULL,
  n bigint,
  tp bigint,
  fp bigint,
  tn bigint,
  fn bigint,
  accuracy double precision,
  "precision" double precision,
  recall double precision,
  f1 double precision,
  window_start timestamptz NOT NULL,
  window_end timestamptz,
  PRIMARY KEY (global_version, window_start)
);
CREATE INDEX IF NOT EXISTS model_evaluations_window_start_idx ON model_evaluations (window_start DESC);

CREATE TABLE IF NOT EXISTS anomalies (
  device_id text NOT NULL,
  "timestamp" timestamptz NOT NULL,
  "values" jsonb,
  field text,
  z_score double precision,
  severity text,
  score double precision,
  global_version integer,
  explanation jsonb,
  PRIMARY KEY (device_id, "timestamp")
);
CREATE INDEX IF NOT EXISTS anomalies_timestamp_idx ON anomalies ("timestamp" DESC);

CREATE TABLE IF NOT EXISTS dead_letters (
  id bigint NOT NULL PRIMARY KEY,
  received_at timestamptz NOT NULL,
  reason text,
  detail text,
  source text,
  payload text
);
CREATE INDEX IF NOT EXISTS dead_letters_received_at_idx ON dead_letters (received_at DESC);

-- The calibrated score's columns, added to the tables of earlier builds too.
ALTER TABLE local_models ADD COLUMN IF NOT EXISTS labelled integer;
ALTER TABLE local_models ADD COLUMN IF NOT EXISTS normal_model jsonb;
ALTER TABLE federated_models ADD COLUMN IF NOT EXISTS threshold double precision;
ALTER TABLE federated_models ADD COLUMN IF NOT EXISTS normal_model jsonb;
"""


@dataclass(frozen=True)
class Table:
    name: str
    time_column: str
    compression: str | None
    """TimescaleDB compression settings (``ALTER TABLE … SET``); ``None``: a plain table in both modes."""

    @property
    def insert(self) -> str:
        return (
            f"INSERT INTO {self.name} SELECT * FROM json_populate_recordset(NULL::{self.name}, %s::json) "
            "ON CONFLICT DO NOTHING"
        )


# Compression keeps the key columns in segmentby or orderby, which TimescaleDB advises for
# unique constraints on compressed chunks.
TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table(
            "local_models",
            "created_at",
            "timescaledb.compress_segmentby = 'device_id', "
            "timescaledb.compress_orderby = 'created_at DESC, model_version'",
        ),
        Table("federated_models", "created_at", "timescaledb.compress_orderby = 'created_at DESC, global_version'"),
        Table(
            "model_evaluations", "window_start", "timescaledb.compress_orderby = 'window_start DESC, global_version'"
        ),
        Table("anomalies", "timestamp", "timescaledb.compress_segmentby = 'device_id'"),
        # A dead letter's arrival time differs on every replay, so a key holding it would not
        # deduplicate: a plain table keyed by a hash of what was rejected, in both modes.
        Table("dead_letters", "received_at", None),
    )
}

# policy kind -> (the job's proc_name, its interval's key in the job config)
_POLICIES = {"compression": ("policy_compression", "compress_after"), "retention": ("policy_retention", "drop_after")}
_SCHEMA_LOCK = 0x464C454144  # "FLEAD": one process at a time creates the schema


def dead_letter_id(row: Row) -> int:
    """A stable 63-bit id from what was rejected, where, and why."""
    digest = hashlib.sha256(f"{row['source']}\x00{row['reason']}\x00{row['payload']}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def encode_row(table: str, row: Row) -> bytes:
    """One row as the JSON object the insert reads; raises ``ValueError`` for an unknown table.

    Dead letters get their ``id``. NUL characters, which PostgreSQL text cannot hold, become
    U+FFFD in top-level strings (a dead letter's payload is arbitrary input); NaN and ±inf
    become null (orjson).
    """
    if table not in TABLES:
        raise ValueError(f"no table {table!r} in the database sink (tables: {', '.join(TABLES)})")
    if table == "dead_letters":
        row = {**row, "id": dead_letter_id(row)}
    if any(isinstance(value, str) and "\x00" in value for value in row.values()):
        row = {key: value.replace("\x00", "\ufffd") if isinstance(value, str) else value for key, value in row.items()}
    return orjson.dumps(row)


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
            return [_first_line(exc)]
        half = len(docs) // 2
        return _insert(conn, table, docs[:half]) + _insert(conn, table, docs[half:])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_URL_PASSWORD = re.compile(r"(?i)(\bpassword=)[^&#]*")
_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
_USERINFO_PASSWORD = re.compile(r":[^:@/\s]*@")


def redact(url: str) -> str:
    """The connection string without its password, fit for a log line or an error.

    Handles URLs (password in the user info or as a ``password=`` parameter), libpq
    ``key=value`` strings, and, as well as it can, strings that are neither.
    """
    if "://" not in url:
        return _USERINFO_PASSWORD.sub(":***@", _KEYWORD_PASSWORD.sub(r"\1***", url))
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***{at}{hostinfo}")
    return urlunsplit(parts._replace(query=_URL_PASSWORD.sub(r"\1***", parts.query)))


def connect(url: str, timeout: float = 5.0) -> psycopg.Connection:
    """An autocommit connection that fails within ``timeout`` seconds if the server does not answer.

    TCP keepalives and ``tcp_user_timeout`` turn a server that vanished mid-write (no RST)
    into an error within about 30 s instead of a write that waits forever.
    """
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(2, math.ceil(timeout)),  # libpq's minimum is 2 s
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=30_000,
    )


def ensure_schema(conn: psycopg.Connection, compress_after: str | None = None, retain_for: str | None = None) -> str:
    """Create what is missing; returns the mode: ``"timescaledb"`` or ``"postgresql"``.

    ``compress_after`` and ``retain_for`` are PostgreSQL intervals (``"7 days"``); ``None``
    removes the policy. They are checked in both modes, so a bad value fails at start-up.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for interval in (compress_after, retain_for):
            if interval is not None:
                conn.execute("SELECT %s::interval", (interval,))
        timescale = _create_timescaledb(conn)
        conn.execute(SCHEMA)
        if timescale:
            _make_hypertables(conn, compress_after, retain_for)
    return "timescaledb" if timescale else "postgresql"


def _create_timescaledb(conn: psycopg.Connection) -> bool:
    """True when the extension is in this database, created now if the server has it."""
    found = conn.execute("SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if found is None:
        return False
    if found[0] is not None:
        return True
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:  # not in shared_preload_libraries, or no privilege
        log.warning("the server has timescaledb but it cannot be created here: %s", _first_line(exc))
        return False
    return True


def _make_hypertables(conn: psycopg.Connection, compress_after: str | None, retain_for: str | None) -> None:
    new_api = conn.execute("SELECT EXISTS (SELECT FROM pg_proc WHERE proname = 'by_range')").fetchone()[0]
    dimension = "by_range(%s::name)" if new_api else "%s::name"  # by_range: TimescaleDB >= 2.13
    for table in TABLES.values():
        if table.compression is None:
            continue
        # Our own time index exists already; migrate_data: the table may hold rows from plain mode.
        conn.execute(
            f"SELECT create_hypertable(%s::regclass, {dimension}, create_default_indexes => FALSE, "
            "if_not_exists => TRUE, migrate_data => TRUE)",
            (table.name, table.time_column),
        )
        if compress_after is not None:
            enabled = conn.execute(
                "SELECT compression_enabled FROM timescaledb_information.hypertables "
                "WHERE hypertable_schema = current_schema() AND hypertable_name = %s",
                (table.name,),
            ).fetchone()
            if not enabled[0]:  # changing the settings fails once chunks are compressed
                conn.execute(f"ALTER TABLE {table.name} SET (timescaledb.compress, {table.compression})")
        _set_policy(conn, table.name, "compression", compress_after)
        _set_policy(conn, table.name, "retention", retain_for)


def _set_policy(conn: psycopg.Connection, table: str, kind: str, interval: str | None) -> None:
    """Make the table's policy of ``kind`` match ``interval`` (``None``: no policy).

    A policy that already matches is left alone: re-adding it at every start-up would reset
    its schedule, and a process restarting more often than the schedule would never run it.
    """
    proc, key = _POLICIES[kind]
    current = conn.execute(
        "SELECT config ->> %s FROM timescaledb_information.jobs "
        "WHERE proc_name = %s AND hypertable_schema = current_schema() AND hypertable_name = %s",
        (key, proc, table),
    ).fetchone()
    if current is not None:
        same = "SELECT %s::interval = %s::interval"
        if interval is not None and conn.execute(same, (current[0], interval)).fetchone()[0]:
            return
        conn.execute(f"SELECT remove_{kind}_policy(%s::regclass)", (table,))
    if interval is not None:
        conn.execute(f"SELECT add_{kind}_policy(%s::regclass, %s::interval)", (table, interval))


_prepared: dict[str, str] = {}
_prepared_lock = threading.Lock()


def prepare_database(url: str, compress_after: str | None, retain_for: str | None, timeout: float = 5.0) -> str:
    """Create the schema once per process and log the mode in one line; returns the mode.

    Raises ``RuntimeError`` naming the URL without its password when the URL is malformed,
    the database cannot be reached within ``timeout`` seconds, or the schema cannot be created.
    """
    with _prepared_lock:
        if url in _prepared:
            return _prepared[url]
        try:
            conn = connect(url, timeout)
        except psycopg.ProgrammingError:  # libpq's message would quote the string, password and all
            raise RuntimeError(
                f"{redact(url)} is not a PostgreSQL URL (postgresql://user:password@host:port/database)"
            ) from None
        except psycopg.Error as exc:
            raise RuntimeError(f"cannot reach the database {redact(url)}: {_first_line(exc)}") from None
        with conn:
            try:
                mode = ensure_schema(conn, compress_after, retain_for)
            except psycopg.Error as exc:
                raise RuntimeError(f"cannot prepare the database {redact(url)}: {_first_line(exc)}") from None
        _prepared[url] = mode
        if mode == "timescaledb":
            log.info(
                "database %s: TimescaleDB hypertables (compression after %s, retention %s)",
                redact(url),
                compress_after or "never",
                retain_for or "forever",
            )
        else:
            log.info("database %s: plain PostgreSQL tables with time indexes (no timescaledb extension)", redact(url))
        return mode


class BufferedWriter:
    """A bounded queue of rows and the thread that writes them, retrying with backoff.

    Counters (also exported as ``flead_sink_*`` metrics): ``written`` rows the database
    accepted, ``dropped`` rows lost (buffer full, refused by the database, or still waiting
    at close), ``rejected`` the refused ones among them, ``errors`` failed flushes,
    ``retries`` flushes tried again. Every row put is written, dropped, or still ``buffered``.

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
        self._in_flight = 0
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
            return len(self._queue) + self._in_flight

    def put(self, rows: Iterable[TableRow]) -> None:
        """Queue rows; never waits for the database. Raises ``ValueError`` for an unknown table."""
        encoded = [(table, encode_row(table, row)) for table, row in rows]
        with self._condition:
            overflow = max(0, len(self._queue) + self._in_flight + len(encoded) - self._max)
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
                    self._in_flight = take
                flush = self._flush(batch)
                with self._condition:
                    self._in_flight = 0
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
                    _first_line(exc),
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
            left = len(self._queue) + self._in_flight
            self._queue.clear()
            self._drop(left)
        if left:
            log.error("%d rows were not written to the database before shutdown (dropped)", left)
        return left


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
