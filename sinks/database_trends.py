"""The fleet's hourly trends: anomalies per device and severity, training per device, and
evaluation of the global versions; continuous aggregates with refresh policies on TimescaleDB,
ordinary views of the same columns on plain PostgreSQL. Grafana's trend panels read them.
"""

from __future__ import annotations

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
    start = None
    if retain_for is not None:
        start = conn.execute("SELECT greatest(%s::interval, %s::interval)::text", (retain_for, _TREND_REFRESH_LEAST))
        start = start.fetchone()[0]
    for trend in TRENDS:
        plain_view = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND NOT EXISTS "
            "(SELECT FROM timescaledb_information.continuous_aggregates "
            "WHERE view_schema = current_schema() AND view_name = %s)",
            (trend.name, trend.name),
        ).fetchone()[0]
        if plain_view:
            conn.execute(f"DROP VIEW {trend.name}")
        conn.execute(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {trend.name} "
            "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
            f"{trend.query(time_bucket(trend))} WITH NO DATA"
        )
        _set_refresh_policy(conn, trend.name, start)


def _set_refresh_policy(conn: psycopg.Connection, view: str, start: str | None) -> None:
    """Make the aggregate's refresh policy start ``start`` before now (``None``: all of the past);
    a policy that matches is left alone (as the tables' policies are, in ``sinks/database_schema.py``)."""
    current = conn.execute(
        "SELECT config ->> 'start_offset' FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_schema = current_schema() "
        "AND hypertable_name = %s",
        (view,),
    ).fetchone()
    if current is not None:
        if conn.execute("SELECT %s::interval IS NOT DISTINCT FROM %s::interval", (current[0], start)).fetchone()[0]:
            return
        conn.execute("SELECT remove_continuous_aggregate_policy(%s::regclass)", (view,))
    conn.execute(
        "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => %s::interval, "
        "end_offset => %s::interval, schedule_interval => %s::interval)",
        (view, start, _TREND_REFRESH_END, _TREND_REFRESH_EVERY),
    )
