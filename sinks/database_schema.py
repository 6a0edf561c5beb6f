"""The database's tables: their DDL, TimescaleDB hypertables and policies, and start-up.

The same DDL serves plain PostgreSQL and TimescaleDB. With the ``timescaledb`` extension the
tables become hypertables on their time column, compressed after ``FLEAD_DB_COMPRESS_AFTER``
and dropped after ``FLEAD_DB_RETAIN_FOR`` (off unless set); without it they stay plain tables
with time indexes. The hourly trends over them are in ``sinks/database_trends.py``.

:func:`ensure_schema` creates or updates all of it (the owner's ``python -m sinks.migrate``);
:func:`schema_changes` says, reading the catalogs only, what it would still change.
:func:`prepare_database`, at start-up, once per process, creates the schema only when that
list is not empty, so a dataflow whose role may only insert starts on a schema its owner made.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import psycopg

from instrumentation.masking import masked_url
from sinks.database_trends import make_continuous_aggregates, make_trend_views, trend_changes

log = logging.getLogger("flead.timescale")

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
-- FedAvg's bounds on one device and differential privacy (issue 15).
ALTER TABLE federated_models ADD COLUMN IF NOT EXISTS capped_devices integer;
ALTER TABLE federated_models ADD COLUMN IF NOT EXISTS clipped_devices integer;
ALTER TABLE federated_models ADD COLUMN IF NOT EXISTS dp_epsilon double precision;
"""


def schema_columns(ddl: str) -> dict[str, tuple[str, ...]]:
    """Each table's columns in ``ddl``: those of its ``CREATE TABLE``, then those ``ALTER TABLE`` adds.

    >>> schema_columns('CREATE TABLE IF NOT EXISTS t (\\n  a int NOT NULL,\\n  "b" text,\\n  PRIMARY KEY (a)\\n);\\n'
    ...                'ALTER TABLE t ADD COLUMN IF NOT EXISTS c jsonb;')
    {'t': ('a', 'b', 'c')}
    """
    columns: dict[str, list[str]] = {}
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", ddl, re.S):
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        columns[table] = [re.match(r'"?(\w+)', line)[1] for line in lines if not line.startswith("PRIMARY KEY")]
    for table, column in re.findall(r'ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS "?(\w+)', ddl):
        columns[table].append(column)
    return {table: tuple(names) for table, names in columns.items()}


COLUMNS = schema_columns(SCHEMA)
INDEXES = tuple(re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", SCHEMA))


@dataclass(frozen=True)
class Table:
    name: str
    time_column: str
    chunk_interval: str | None = None
    """TimescaleDB's ``chunk_time_interval``; ``None``: a plain table in both modes."""
    segmentby: str = ""
    orderby: str | None = None
    """TimescaleDB's ``compress_orderby``; ``None``: a hypertable that is never compressed."""
    once_per: str | None = None
    """A column of which each value is written once, the first time: the global version of a
    table with a row per version whose key also holds a time (a hypertable's unique keys must).
    After a crash the dataflow makes the versions since its last snapshot again, and where
    their time differs (which updates made a version, and when, depends on timing with several
    processes), the key alone would keep both."""

    @property
    def compression(self) -> str | None:
        """TimescaleDB compression settings (``ALTER TABLE … SET``); ``None``: not compressed."""
        if self.chunk_interval is None or self.orderby is None:
            return None
        return f"timescaledb.compress_segmentby = '{self.segmentby}', timescaledb.compress_orderby = '{self.orderby}'"

    @property
    def insert(self) -> str:
        rows = f"json_populate_recordset(NULL::{self.name}, %s::json)"
        if self.once_per is None:
            return f"INSERT INTO {self.name} SELECT * FROM {rows} ON CONFLICT DO NOTHING"
        key = self.once_per
        return (
            f"INSERT INTO {self.name} SELECT DISTINCT ON (r.{key}) r.* FROM {rows} r"
            f" WHERE NOT EXISTS (SELECT FROM {self.name} t WHERE t.{key} = r.{key}) ON CONFLICT DO NOTHING"
        )


# Sized by `python -m bench.timescale_compression` (docs/operations.md, "Chunks and compression"):
# no segmentby, because a device has only a few rows in a chunk (one per round, one per
# anomaly) and per-device segments of a few rows compress worse than the rows themselves;
# the order puts alike rows next to each other and keeps every key column, which the unique
# checks of a replay into compressed chunks use. The two small tables get longer chunks so
# that a chunk holds enough rows to be worth compressing.
TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table("local_models", "created_at", "7 days", "", "created_at DESC, device_id, model_version"),
        Table("federated_models", "created_at", "28 days", "", "created_at DESC, global_version", "global_version"),
        # One row per global version: too few rows for a compressed chunk to be smaller.
        Table("model_evaluations", "window_start", "91 days", once_per="global_version"),
        Table("anomalies", "timestamp", "7 days", "", 'device_id, "timestamp" DESC'),
        # A dead letter's arrival time differs on every replay, so a key holding it would not
        # deduplicate: a plain table keyed by a hash of what was rejected, in both modes.
        Table("dead_letters", "received_at"),
    )
}

# What earlier builds set on every hypertable: start-up moves a hypertable that still has
# them to this build's (settings someone changed by hand are left alone).
_EARLIER_CHUNK_INTERVAL = "7 days"
_EARLIER_COMPRESSION = {  # table -> (segmentby, orderby as TimescaleDB reports it, by version)
    "local_models": ("device_id", ("created_at DESC, model_version",)),
    "federated_models": ("", ("created_at DESC, global_version",)),
    "anomalies": ("device_id", ("", '"timestamp" DESC')),  # TimescaleDB's default order
}


# policy kind -> (the job's proc_name, its interval's key in the job config)
_POLICIES = {"compression": ("policy_compression", "compress_after"), "retention": ("policy_retention", "drop_after")}
_SCHEMA_LOCK = 0x464C454144  # "FLEAD": one process at a time creates the schema


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


class Change(NamedTuple):
    """One thing :func:`ensure_schema` would create or change: ``create``, ``table anomalies``."""

    verb: str
    what: str

    def __str__(self) -> str:
        return f"{self.verb} {self.what}"

    @property
    def done(self) -> str:
        """The change as done: ``created table anomalies``."""
        past = {"add": "added", "create": "created", "make": "made", "remove": "removed", "replace": "replaced"}
        return f"{past.get(self.verb, self.verb)} {self.what}"


def schema_changes(
    conn: psycopg.Connection, compress_after: str | None = None, retain_for: str | None = None
) -> list[Change]:
    """What :func:`ensure_schema` would create or change in this database; empty when the schema
    is complete and current: every table with every column and index, and with TimescaleDB every
    hypertable, its settings and policies as ``compress_after`` and ``retain_for`` ask, and the
    trends. It reads the catalogs only, so any role that can connect may ask. The extension is
    counted only when this role could create it (``ensure_schema`` stays plain otherwise).
    """
    _check_intervals(conn, compress_after, retain_for)
    changes = []
    installed = conn.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]
    timescaledb = installed
    if not installed and timescaledb_unavailable(conn) is None and _may_create_timescaledb(conn):
        changes.append(Change("create", "the timescaledb extension"))
        timescaledb = True
    hypertables = set()
    if installed:
        found = (
            "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = current_schema()"
        )
        hypertables = {row[0] for row in conn.execute(found)}
    for name, expected in COLUMNS.items():
        columns = conn.execute(
            "SELECT array_agg(attname::text) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (name,),
        ).fetchone()[0]
        if columns is None:
            changes.append(Change("create", f"table {name}"))
        else:
            changes += [Change("add", f"column {name}.{column}") for column in expected if column not in columns]
    for index in INDEXES:
        if conn.execute("SELECT to_regclass(%s) IS NULL", (index,)).fetchone()[0]:
            changes.append(Change("create", f"index {index}"))
    if timescaledb:
        for table in TABLES.values():
            if table.chunk_interval is not None:
                changes += _hypertable_changes(conn, table, table.name in hypertables, compress_after, retain_for)
    changes += [Change(verb, what) for verb, what in trend_changes(conn, timescaledb, retain_for)]
    return changes


def _hypertable_changes(
    conn: psycopg.Connection, table: Table, exists: bool, compress_after: str | None, retain_for: str | None
) -> list[Change]:
    """What :func:`_make_hypertables` would change on ``table``; ``exists``: it is a hypertable already."""
    changes = []
    if not exists:
        changes.append(Change("make", f"{table.name} a hypertable in chunks of {table.chunk_interval}"))
    elif _earlier_chunk_interval(conn, table):
        changes.append(Change("set", f"the chunk interval of {table.name} to {table.chunk_interval}"))
    compress = compress_after if table.compression is not None else None
    if compress is not None and (not exists or _compression_outdated(conn, table)):
        changes.append(Change("set", f"the compression of {table.name} (orderby {table.orderby})"))
    for kind, interval in (("compression", compress), ("retention", retain_for)):
        current = _policy(conn, table.name, kind) if exists else None
        if _policy_matches(conn, current, interval):
            continue
        if interval is None:
            changes.append(Change("remove", f"the {kind} policy of {table.name}"))
        else:
            changes.append(Change("set", f"the {kind} policy of {table.name}: {interval}"))
    return changes


def _check_intervals(conn: psycopg.Connection, *intervals: str | None) -> None:
    """A bad interval fails here, in both modes (``psycopg.errors.InvalidDatetimeFormat``)."""
    for interval in intervals:
        if interval is not None:
            conn.execute("SELECT %s::interval", (interval,))


def _may_create_timescaledb(conn: psycopg.Connection) -> bool:
    """Whether this role may create the extension: a superuser, or, for a trusted extension
    (TimescaleDB's is), a role with CREATE on the database (its owner, say)."""
    return conn.execute(
        "SELECT r.rolsuper OR (v.trusted AND has_database_privilege(current_database(), 'CREATE')) "
        "FROM pg_roles r, pg_available_extensions e "
        "JOIN pg_available_extension_versions v ON v.name = e.name AND v.version = e.default_version "
        "WHERE r.rolname = current_user AND e.name = 'timescaledb'"
    ).fetchone()[0]


def ensure_schema(conn: psycopg.Connection, compress_after: str | None = None, retain_for: str | None = None) -> str:
    """Create what is missing; returns the mode: ``"timescaledb"`` or ``"postgresql"``.

    ``compress_after`` and ``retain_for`` are PostgreSQL intervals (``"7 days"``); ``None``
    removes the policy. They are checked in both modes, so a bad value fails at start-up.
    ``conn`` must be in autocommit mode: continuous aggregates cannot be created inside a
    transaction, so they are made after the schema's transaction, under the same lock.
    """
    with schema_lock(conn):
        with conn.transaction():
            _check_intervals(conn, compress_after, retain_for)
            plain_because = _create_timescaledb(conn)
            conn.execute(SCHEMA)
            if plain_because is None:
                _make_hypertables(conn, compress_after, retain_for)
            else:
                make_trend_views(conn)
        if plain_because is None:
            make_continuous_aggregates(conn, retain_for)
            return "timescaledb"
    return "postgresql"


@contextmanager
def schema_lock(conn: psycopg.Connection) -> Iterator[None]:
    """One session at a time makes, changes or checks the schema (a session-level advisory lock,
    which any role may take; a session may take it again inside)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


def mode_description(conn: psycopg.Connection, mode: str, compress_after: str | None, retain_for: str | None) -> str:
    """The mode in words, for the line that start-up and the migrate print."""
    if mode == "timescaledb":
        policies = f"compression after {compress_after or 'never'}, retention {retain_for or 'forever'}"
        return f"TimescaleDB hypertables ({policies})"
    reason = timescaledb_unavailable(conn) or "this role cannot create the timescaledb extension"
    return f"plain PostgreSQL tables with time indexes ({reason})"


def timescaledb_unavailable(conn: psycopg.Connection) -> str | None:
    """Why this database cannot have TimescaleDB, if the server says so (``None``: it can, or has it)."""
    found = conn.execute("SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if found is None:
        return "no timescaledb extension on the server"
    if found[0] is not None:
        return None
    # A setting of TimescaleDB's loader, there when the server preloads it: any role can see it,
    # where shared_preload_libraries is for superusers (and pg_read_all_settings) only.
    preloaded = conn.execute("SELECT EXISTS (SELECT FROM pg_settings WHERE name = 'timescaledb.disable_load')")
    if not preloaded.fetchone()[0]:
        return (
            "the server has the timescaledb extension but does not preload it; for hypertables add"
            " timescaledb to shared_preload_libraries and restart the server"
        )
    return None


def _create_timescaledb(conn: psycopg.Connection) -> str | None:
    """Make sure the extension is in this database; ``None`` when it is, else why the tables stay plain.

    The extension's files may be installed on a server that does not preload its library:
    creating it there would end the connection (a FATAL error), so that case is found first.
    """
    unavailable = timescaledb_unavailable(conn)
    if unavailable is not None:
        return unavailable
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:  # no privilege
        return f"cannot create the timescaledb extension: {first_line(exc)}"
    return None


def _make_hypertables(conn: psycopg.Connection, compress_after: str | None, retain_for: str | None) -> None:
    new_api = conn.execute("SELECT EXISTS (SELECT FROM pg_proc WHERE proname = 'by_range')").fetchone()[0]
    # by_range: TimescaleDB >= 2.13
    dimension = "by_range(%s::name, %s::interval)" if new_api else "%s::name, chunk_time_interval => %s::interval"
    for table in TABLES.values():
        if table.chunk_interval is None:
            continue
        # Our own time index exists already; migrate_data: the table may hold rows from plain mode.
        conn.execute(
            f"SELECT create_hypertable(%s::regclass, {dimension}, create_default_indexes => FALSE, "
            "if_not_exists => TRUE, migrate_data => TRUE)",
            (table.name, table.time_column, table.chunk_interval),
        )
        _set_chunk_interval(conn, table)
        compress = compress_after if table.compression is not None else None
        if compress is not None:
            _set_compression(conn, table)
        _set_policy(conn, table.name, "compression", compress)
        _set_policy(conn, table.name, "retention", retain_for)


def _earlier_chunk_interval(conn: psycopg.Connection, table: Table) -> bool:
    """Whether the hypertable is still at the earlier builds' chunk interval (and this build's differs)."""
    earlier = conn.execute(
        "SELECT time_interval = %s::interval AND time_interval <> %s::interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_schema = current_schema() AND hypertable_name = %s AND dimension_number = 1",
        (_EARLIER_CHUNK_INTERVAL, table.chunk_interval, table.name),
    ).fetchone()
    return earlier is not None and earlier[0]


def _set_chunk_interval(conn: psycopg.Connection, table: Table) -> None:
    """Move a hypertable still at the earlier builds' interval to this build's (for new chunks)."""
    if _earlier_chunk_interval(conn, table):
        conn.execute("SELECT set_chunk_time_interval(%s::regclass, %s::interval)", (table.name, table.chunk_interval))


def _same_columns(a: str | None, b: str | None) -> bool:
    """Whether two segmentby or orderby lists are the same (quotes, spaces and case aside)."""

    def normal(text: str | None) -> str:
        return re.sub(r"\s*,\s*", ",", (text or "").replace('"', "")).strip().lower()

    return normal(a) == normal(b)


def _set_compression(conn: psycopg.Connection, table: Table) -> None:
    """Enable compression with this build's settings, or move an earlier build's to them.

    New settings apply to the chunks compressed from then on; settings changed by hand stay.
    """
    if _compression_outdated(conn, table):
        conn.execute(f"ALTER TABLE {table.name} SET (timescaledb.compress, {table.compression})")


def _compression_outdated(conn: psycopg.Connection, table: Table) -> bool:
    """Whether the hypertable's compression is off, or still at an earlier build's settings."""
    enabled, segmentby, orderby = conn.execute(
        "SELECT h.compression_enabled, s.segmentby, s.orderby FROM timescaledb_information.hypertables h "
        "LEFT JOIN timescaledb_information.hypertable_compression_settings s "
        "ON s.hypertable = format('%%I.%%I', h.hypertable_schema, h.hypertable_name)::regclass "
        "WHERE h.hypertable_schema = current_schema() AND h.hypertable_name = %s",
        (table.name,),
    ).fetchone()
    if not enabled:
        return True
    if _same_columns(segmentby, table.segmentby) and _same_columns(orderby, table.orderby):
        return False
    earlier_segmentby, earlier_orderbys = _EARLIER_COMPRESSION[table.name]
    return _same_columns(segmentby, earlier_segmentby) and any(
        _same_columns(orderby, earlier_orderby) for earlier_orderby in earlier_orderbys
    )


def _set_policy(conn: psycopg.Connection, table: str, kind: str, interval: str | None) -> None:
    """Make the table's policy of ``kind`` match ``interval`` (``None``: no policy).

    A policy that already matches is left alone: re-adding it at every start-up would reset
    its schedule, and a process restarting more often than the schedule would never run it.
    """
    current = _policy(conn, table, kind)
    if _policy_matches(conn, current, interval):
        return
    if current is not None:
        conn.execute(f"SELECT remove_{kind}_policy(%s::regclass)", (table,))
    if interval is not None:
        conn.execute(f"SELECT add_{kind}_policy(%s::regclass, %s::interval)", (table, interval))


def _policy(conn: psycopg.Connection, table: str, kind: str) -> tuple[str] | None:
    """The table's policy of ``kind`` as ``(interval,)``; ``None`` without one."""
    proc, key = _POLICIES[kind]
    return conn.execute(
        "SELECT config ->> %s FROM timescaledb_information.jobs "
        "WHERE proc_name = %s AND hypertable_schema = current_schema() AND hypertable_name = %s",
        (key, proc, table),
    ).fetchone()


def _policy_matches(conn: psycopg.Connection, current: tuple[str] | None, interval: str | None) -> bool:
    """Whether a policy ``current`` (from :func:`_policy`) is the one ``interval`` asks for."""
    if current is None or interval is None:
        return current is None and interval is None
    return conn.execute("SELECT %s::interval = %s::interval", (current[0], interval)).fetchone()[0]


_prepared: dict[str, str] = {}
_retention_seconds: dict[str, float] = {}
_prepared_lock = threading.Lock()


def retention_seconds(url: str) -> float | None:
    """The retention window that :func:`prepare_database` put in force on ``url``, in seconds
    (a month counts 30 days); ``None`` without one (no ``retain_for``, or plain PostgreSQL)."""
    with _prepared_lock:
        return _retention_seconds.get(url)


MIGRATE_COMMAND = "python -m sinks.migrate"


def prepare_database(url: str, compress_after: str | None, retain_for: str | None, timeout: float = 5.0) -> str:
    """Make sure the schema is complete and current, once per process, and log the mode in one
    line; returns the mode.

    Only a schema with :func:`schema_changes` left is created or updated here, so a role that
    may only insert starts on a schema its owner made (``python -m sinks.migrate``), and a role
    that may create (the owner, a superuser) creates it as before. Raises ``RuntimeError``
    naming the URL without its password when the URL is malformed, the database cannot be
    reached within ``timeout`` seconds, the schema cannot be created, or this role may not
    insert into every table; when a privilege is missing it says to run the migrate command.
    """
    with _prepared_lock:
        if url in _prepared:
            return _prepared[url]
        try:
            conn = connect(url, timeout)
        except psycopg.ProgrammingError:  # libpq's message would quote the string, password and all
            raise RuntimeError(
                f"{masked_url(url)} is not a PostgreSQL URL (postgresql://user:password@host:port/database)"
            ) from None
        except psycopg.Error as exc:
            raise RuntimeError(f"cannot reach the database {masked_url(url)}: {first_line(exc)}") from None
        with conn:
            try:
                mode = _ready_schema(conn, url, compress_after, retain_for)
                if mode == "timescaledb" and retain_for is not None:
                    seconds = conn.execute("SELECT extract(epoch FROM %s::interval)::float8", (retain_for,))
                    _retention_seconds[url] = seconds.fetchone()[0]
                described = mode_description(conn, mode, compress_after, retain_for)
            except psycopg.Error as exc:
                raise RuntimeError(f"cannot prepare the database {masked_url(url)}: {first_line(exc)}") from None
        _prepared[url] = mode
        # Plain tables are worth a warning only where the server could have had TimescaleDB.
        quiet = mode == "timescaledb" or "(no timescaledb extension on the server)" in described
        log.log(logging.INFO if quiet else logging.WARNING, "database %s: %s", masked_url(url), described)
        return mode


def _ready_schema(conn: psycopg.Connection, url: str, compress_after: str | None, retain_for: str | None) -> str:
    """Create what the schema lacks, if anything, then check this role may insert; returns the mode.

    Under the schema's lock, so that a start-up during a migrate waits for it instead of
    finding half a schema.
    """
    with schema_lock(conn):
        changes = schema_changes(conn, compress_after, retain_for)
        if changes:
            try:
                ensure_schema(conn, compress_after, retain_for)
            except psycopg.errors.InsufficientPrivilege as exc:
                more = f" and {len(changes) - 1} more" if len(changes) > 1 else ""
                raise RuntimeError(
                    f"the database {masked_url(url)} needs its schema made or updated ({changes[0]}{more}) and this "
                    f"role may not ({first_line(exc)}): run `{MIGRATE_COMMAND}` with the owner's URL in "
                    "FLEAD_DATABASE_URL, then start again"
                ) from None
        may_insert = "SELECT has_table_privilege(%s, 'INSERT')"
        denied = [name for name in TABLES if not conn.execute(may_insert, (name,)).fetchone()[0]]
        if denied:
            role = conn.execute("SELECT current_user").fetchone()[0]
            raise RuntimeError(
                f"role {role} may not insert into {', '.join(denied)} in {masked_url(url)}: run "
                f"`{MIGRATE_COMMAND} --writer {role}` with the owner's URL in FLEAD_DATABASE_URL, then start again"
            )
        installed = conn.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')")
        return "timescaledb" if installed.fetchone()[0] else "postgresql"
