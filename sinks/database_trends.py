"""The fleet's hourly trends: anomalies per device and severity, training per device, and
evaluation of the global versions; continuous aggregates with refresh policies on TimescaleDB,
ordinary views of the same columns on plain PostgreSQL. Grafana's trend panels read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Trend:
    """An hourly trend: a continuous aggregate on TimescaleDB, an ordinary view on PostgreSQL."""

    name: str
    source: str
    time_column: str
    select: str
    """The columns after ``bucket``; ``{bucket}`` stands for the hour of the source's time column."""
    group_by: str
    """The grouping columns after ``bucket``."""

    @property
    def columns(self) -> tuple[str, ...]:
        """The relation's columns: ``bucket``, then each of ``select`` by its alias or its name.

        >>> TRENDS[0].columns
        ('bucket', 'device_id', 'severity', 'anomalies', 'max_score', 'last_at')
        """
        names, depth, item = ["bucket"], 0, ""
        for char in self.select + ",":
            if char == "," and depth == 0:
                names.append(re.split(r"\s+AS\s+", item.strip(), flags=re.IGNORECASE)[-1].strip('"'))
                item = ""
                continue
            depth += (char == "(") - (char == ")")
            item += char
        return tuple(names)

    def query(self, bucket: str) -> str:
        columns = self.select.format(bucket=bucket)
        group_by = f"{bucket}, {self.group_by}" if self.group_by else bucket
        return f"SELECT {bucket} AS bucket, {columns} FROM {self.source} GROUP BY {group_by}"


TRENDS: tuple[Trend, ...] = (
    Trend(
        "anomalies_hourly",
        "anomalies",
        "timestamp",
        'device_id, severity, count(*) AS anomalies, max(score) AS max_score, max("timestamp") AS last_at',
        "device_id, severity",
    ),
    Trend(
        "training_hourly",
        "local_models",
        "created_at",
        "device_id, count(*) AS rounds, sum(samples_processed) AS readings, sum(labelled) AS labelled, "
        "avg(loss) AS mean_loss, max(model_version) AS last_model_version",
        "device_id",
    ),
    Trend(
        "evaluation_hourly",
        "model_evaluations",
        "window_start",
        "count(*) AS versions, min(global_version) AS first_global_version, "
        "max(global_version) AS last_global_version, sum(n) AS n, sum(tp) AS tp, sum(fp) AS fp, "
        "sum(tn) AS tn, sum(fn) AS fn, "
        "coalesce((sum(tp) + sum(tn))::double precision / nullif(sum(n), 0), 0) AS accuracy, "
        'coalesce(sum(tp)::double precision / nullif(sum(tp) + sum(fp), 0), 0) AS "precision", '
        "coalesce(sum(tp)::double precision / nullif(sum(tp) + sum(fn), 0), 0) AS recall, "
        "coalesce(2 * sum(tp)::double precision / nullif(2 * sum(tp) + sum(fp) + sum(fn), 0), 0) AS f1, "
        "max(window_end) AS last_window_end",
        "",
    ),
)
TREND_BUCKET = "1 hour"
# A refresh covers everything up to an hour ago: all of the past, since a replay writes any
# event time, or, with a retention policy, its window (a refresh of hours whose rows retention
# dropped would empty them, so the trends keep those hours). Newer rows are aggregated at query
# time (real-time aggregation).
_TREND_REFRESH_END = "1 hour"
_TREND_REFRESH_EVERY = "30 minutes"
_TREND_REFRESH_LEAST = "3 hours"  # a refresh window holds at least two buckets


def time_bucket(trend: Trend) -> str:
    return f"time_bucket(INTERVAL '{TREND_BUCKET}', \"{trend.time_column}\")"


def date_bin(trend: Trend) -> str:
    """The same hours as TimescaleDB's ``time_bucket`` (UTC), on plain PostgreSQL (14 or later)."""
    return f"date_bin(INTERVAL '{TREND_BUCKET}', \"{trend.time_column}\", TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def make_trend_views(conn: psycopg.Connection) -> None:
    """The trends as ordinary views (plain PostgreSQL)."""
    for trend in TRENDS:
        conn.execute(f"CREATE OR REPLACE VIEW {trend.name} AS {trend.query(date_bin(trend))}")


def make_continuous_aggregates(conn: psycopg.Connection, retain_for: str | None) -> None:
    """The trends as continuous aggregates with refresh policies (autocommit: not in a transaction).

    A plain view of the same name (the database was used without TimescaleDB) is replaced.
    They are created empty: until the first refresh, real-time aggregation answers from the rows.
    """
    start = _refresh_start(conn, retain_for)
    for trend in TRENDS:
        if _plain_view(conn, trend.name):
            conn.execute(f"DROP VIEW {trend.name}")
        conn.execute(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {trend.name} "
            "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
            f"{trend.query(time_bucket(trend))} WITH NO DATA"
        )
        _set_refresh_policy(conn, trend.name, start)


def trend_changes(conn: psycopg.Connection, timescaledb: bool, retain_for: str | None) -> list[tuple[str, str]]:
    """What :func:`make_trend_views` (``timescaledb`` false) or :func:`make_continuous_aggregates`
    would change, as ``(verb, what)``; read from the catalogs only. With ``timescaledb``, the
    database has the extension or is about to get it."""
    changes = []
    installed = conn.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]
    start = _refresh_start(conn, retain_for) if timescaledb else None
    for trend in TRENDS:
        columns = conn.execute(
            "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (trend.name,),
        ).fetchone()[0]
        if not timescaledb:
            if columns is None:
                changes.append(("create", f"the view {trend.name}"))
            elif tuple(columns) != trend.columns:
                changes.append(("replace", f"the view {trend.name} (other columns)"))
            continue
        if columns is None:
            changes.append(("create", f"the continuous aggregate {trend.name}"))
        elif not installed or _plain_view(conn, trend.name):
            changes.append(("replace", f"the view {trend.name} by a continuous aggregate"))
        elif _refresh_policy_matches(conn, trend.name, start):
            continue
        changes.append(("set", f"the refresh policy of {trend.name}: {_refresh_window(start)}"))
    return changes


def _refresh_window(start: str | None) -> str:
    return f"{f'the last {start}' if start else 'all of the past'} up to {_TREND_REFRESH_END} ago"


def _refresh_start(conn: psycopg.Connection, retain_for: str | None) -> str | None:
    """How far back the refresh policy reaches: ``None`` (all of the past), or retention's window."""
    if retain_for is None:
        return None
    start = conn.execute("SELECT greatest(%s::interval, %s::interval)::text", (retain_for, _TREND_REFRESH_LEAST))
    return start.fetchone()[0]


def _plain_view(conn: psycopg.Connection, name: str) -> bool:
    """Whether ``name`` is there, but not as a continuous aggregate (the database has TimescaleDB)."""
    return conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND NOT EXISTS "
        "(SELECT FROM timescaledb_information.continuous_aggregates "
        "WHERE view_schema = current_schema() AND view_name = %s)",
        (name, name),
    ).fetchone()[0]


def _refresh_policy(conn: psycopg.Connection, view: str) -> tuple[str | None] | None:
    """The aggregate's refresh policy as ``(start_offset,)``; ``None`` without one."""
    return conn.execute(
        "SELECT config ->> 'start_offset' FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_schema = current_schema() "
        "AND hypertable_name = %s",
        (view,),
    ).fetchone()


def _refresh_policy_matches(conn: psycopg.Connection, view: str, start: str | None) -> bool:
    current = _refresh_policy(conn, view)
    if current is None:
        return False
    return conn.execute("SELECT %s::interval IS NOT DISTINCT FROM %s::interval", (current[0], start)).fetchone()[0]


def _set_refresh_policy(conn: psycopg.Connection, view: str, start: str | None) -> None:
    """Make the aggregate's refresh policy start ``start`` before now (``None``: all of the past);
    a policy that matches is left alone (as the tables' policies are, in ``sinks/database_schema.py``)."""
    if _refresh_policy_matches(conn, view, start):
        return
    if _refresh_policy(conn, view) is not None:
        conn.execute("SELECT remove_continuous_aggregate_policy(%s::regclass)", (view,))
    conn.execute(
        "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => %s::interval, "
        "end_offset => %s::interval, schedule_interval => %s::interval)",
        (view, start, _TREND_REFRESH_END, _TREND_REFRESH_EVERY),
    )
