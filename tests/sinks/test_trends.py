"""The hourly trends agree with a GROUP BY over the raw rows, on plain PostgreSQL (views) and on
TimescaleDB (continuous aggregates, refreshed by their own policy's job).

The expected rows are grouped here by the UTC hour (``date_trunc`` of the UTC time), a third
way beside the views' ``date_bin`` and the aggregates' ``time_bucket``; the session runs at
UTC+05:30, where an hour cut in local time would start at half past.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.timescale_compression import policy_jobs, run_job
from sinks.database_rows import write_rows
from sinks.database_schema import SCHEMA, connect, ensure_schema
from sinks.database_trends import TRENDS, date_bin
from tests.sinks.test_timescaledb_setup import fresh_database

pytestmark = pytest.mark.integration

SERVERS = ["postgres", "timescaledb"]
START = datetime(2024, 3, 1, 22, 40, tzinfo=UTC)

# name -> (the trend's columns, the same from the raw rows by UTC hour, the sort order)
EXPECTED = {
    "anomalies_hourly": (
        "bucket AT TIME ZONE 'UTC', device_id, severity, anomalies, max_score, last_at",
        "SELECT date_trunc('hour', \"timestamp\" AT TIME ZONE 'UTC'), device_id, severity, count(*), max(score), "
        'max("timestamp") FROM anomalies GROUP BY 1, 2, 3',
        "1, 2, 3",
    ),
    "training_hourly": (
        "bucket AT TIME ZONE 'UTC', device_id, rounds, readings, labelled, mean_loss, last_model_version",
        "SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC'), device_id, count(*), sum(samples_processed), "
        "sum(labelled), avg(loss), max(model_version) FROM local_models GROUP BY 1, 2",
        "1, 2",
    ),
    "evaluation_hourly": (
        "bucket AT TIME ZONE 'UTC', versions, first_global_version, last_global_version, n, tp, fp, tn, fn, "
        'accuracy, "precision", recall, f1, last_window_end',
        "SELECT date_trunc('hour', window_start AT TIME ZONE 'UTC'), count(*), min(global_version), "
        "max(global_version), sum(n), sum(tp), sum(fp), sum(tn), sum(fn), "
        "CASE WHEN sum(n) > 0 THEN (sum(tp) + sum(tn))::float8 / sum(n) ELSE 0 END, "
        "CASE WHEN sum(tp) + sum(fp) > 0 THEN sum(tp)::float8 / (sum(tp) + sum(fp)) ELSE 0 END, "
        "CASE WHEN sum(tp) + sum(fn) > 0 THEN sum(tp)::float8 / (sum(tp) + sum(fn)) ELSE 0 END, "
        "CASE WHEN 2 * sum(tp) + sum(fp) + sum(fn) > 0 THEN 2 * sum(tp)::float8 / (2 * sum(tp) + sum(fp) + sum(fn)) "
        "ELSE 0 END, max(window_end) FROM model_evaluations GROUP BY 1",
        "1",
    ),
}


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rows(seed: int, devices: list[str], hours: int = 30) -> list[tuple[str, dict[str, Any]]]:
    """Anomalies, local rounds and evaluations of a few devices over ``hours`` hours, at odd minutes."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    for device in devices:
        at, version = START, 0
        while at < START + timedelta(hours=hours):
            at += timedelta(seconds=rng.randint(60, 900))
            version += 1
            samples = rng.randint(1, 50)
            out.append(
                (
                    "local_models",
                    {
                        "device_id": device,
                        "model_version": version,
                        "global_version": version // 7,
                        "samples_processed": samples,
                        "labelled": rng.randint(0, samples),
                        "loss": None if rng.random() < 0.2 else rng.random(),
                        "created_at": iso(at),
                    },
                )
            )
            if rng.random() < 0.4:
                out.append(
                    (
                        "anomalies",
                        {
                            "device_id": device,
                            "timestamp": iso(at + timedelta(seconds=1)),
                            "severity": rng.choice(["warning", "critical"]),
                            "score": rng.random(),
                            "z_score": rng.gauss(0, 3),
                        },
                    )
                )
    at = START
    for version in range(seed * 1000, seed * 1000 + 4 * hours):
        at += timedelta(seconds=rng.randint(60, 1800))
        tp, fp, tn, fn = (rng.choice([0, rng.randint(0, 40)]) for _ in range(4))
        out.append(
            (
                "model_evaluations",
                {
                    "global_version": version,
                    "n": tp + fp + tn + fn,
                    "tp": tp,
                    "fp": fp,
                    "tn": tn,
                    "fn": fn,
                    "window_start": iso(at),
                    "window_end": iso(at + timedelta(minutes=rng.randint(1, 90))),
                },
            )
        )
    return out


def compare(conn) -> None:
    conn.execute("SET TIME ZONE 'Asia/Kolkata'")
    for name, (columns, expected, order) in EXPECTED.items():
        found = conn.execute(f"SELECT {columns} FROM {name} ORDER BY {order}").fetchall()
        wanted = conn.execute(f"{expected} ORDER BY {order}").fetchall()
        assert wanted, name
        assert len(found) == len(wanted), name
        for got, want in zip(found, wanted, strict=True):
            assert _same(got, want), (name, got, want)


def _same(got: tuple, want: tuple) -> bool:
    return len(got) == len(want) and all(
        a == pytest.approx(b, rel=1e-12) if isinstance(a, float) and isinstance(b, float) else a == b
        for a, b in zip(got, want, strict=True)
    )


def refresh(conn, mode: str) -> None:
    """On TimescaleDB, each trend's refresh policy runs now, in the foreground, and stores
    every hour of these rows (all in the past): the aggregate answers from what it stored,
    not from the rows at query time (real-time aggregation would hide a refresh that missed)."""
    if mode != "timescaledb":
        return
    jobs = policy_jobs(conn, "policy_refresh_continuous_aggregate")
    assert set(jobs) == {trend.name for trend in TRENDS}
    for job in jobs.values():
        run_job(conn, job)
    for view, table in conn.execute(
        "SELECT view_name, format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "
        "FROM timescaledb_information.continuous_aggregates"
    ).fetchall():
        stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert stored == conn.execute(f"SELECT count(*) FROM {view}").fetchone()[0], view


@pytest.mark.parametrize("server", SERVERS)
def test_each_trend_equals_a_group_by_over_the_raw_rows(server, request):
    url = fresh_database(request.getfixturevalue(server))
    with connect(url) as conn:
        mode = ensure_schema(conn, "7 days", None)
        assert mode == ("timescaledb" if server == "timescaledb" else "postgresql")
        assert not write_rows(conn, rows(1, ["d1", "d2", "d3"])).rejected
        refresh(conn, mode)
        compare(conn)


@pytest.mark.parametrize("server", SERVERS)
def test_rows_written_later_into_hours_already_aggregated_are_counted_after_the_next_refresh(server, request):
    """A replay of old data writes into hours that an earlier refresh stored: the refresh
    policy covers all of the past, not only its last days."""
    url = fresh_database(request.getfixturevalue(server))
    with connect(url) as conn:
        mode = ensure_schema(conn, "7 days", None)
        assert not write_rows(conn, rows(2, ["d1", "d2"])).rejected
        refresh(conn, mode)
        assert not write_rows(conn, rows(3, ["d2", "d4"])).rejected  # the same hours, new devices and versions
        refresh(conn, mode)
        compare(conn)


@pytest.mark.parametrize("server", SERVERS)
def test_the_trends_are_made_idempotently(server, request):
    url = fresh_database(request.getfixturevalue(server))
    with connect(url) as conn:
        mode = ensure_schema(conn, "7 days", None)
        assert not write_rows(conn, rows(4, ["d1"])).rejected
        assert ensure_schema(conn, "7 days", None) == mode
        refresh(conn, mode)
        compare(conn)


def test_a_database_used_without_timescaledb_gets_continuous_aggregates_once_it_has_it(timescaledb):
    """Plain mode's views of the same names are replaced, and its rows are aggregated."""
    url = fresh_database(timescaledb)
    with connect(url) as conn:
        conn.execute(SCHEMA)  # what plain mode made, in a database that now has TimescaleDB
        for trend in TRENDS:
            conn.execute(f"CREATE VIEW {trend.name} AS {trend.query(date_bin(trend))}")
        assert not write_rows(conn, rows(5, ["d1", "d2"])).rejected
        assert ensure_schema(conn, "7 days", None) == "timescaledb"
        caggs = conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates").fetchall()
        assert {name for (name,) in caggs} == {trend.name for trend in TRENDS}
        refresh(conn, "timescaledb")
        compare(conn)


def test_the_trends_keep_the_hours_whose_rows_retention_dropped(timescaledb):
    """With a retention policy the refresh policy covers its window only: a refresh of hours
    whose rows were dropped would empty them."""
    url = fresh_database(timescaledb)
    aged = datetime.now(UTC) - timedelta(days=40)
    anomalies = [
        ("anomalies", {"device_id": "d1", "timestamp": iso(aged + timedelta(minutes=7 * i)), "severity": "warning"})
        for i in range(30)
    ]
    with connect(url) as conn:
        ensure_schema(conn, None, "60 days")
        assert not write_rows(conn, anomalies).rejected
        refresh(conn, "timescaledb")
        stored = conn.execute("SELECT bucket, anomalies FROM anomalies_hourly ORDER BY 1").fetchall()
        assert sum(n for _, n in stored) == len(anomalies)
        ensure_schema(conn, None, "30 days")  # as if 20 days had passed: the rows are past the window
        for job in policy_jobs(conn, "policy_retention").values():
            run_job(conn, job)
        assert conn.execute("SELECT count(*) FROM anomalies").fetchone()[0] == 0
        for job in policy_jobs(conn, "policy_refresh_continuous_aggregate").values():
            run_job(conn, job)
        assert conn.execute("SELECT bucket, anomalies FROM anomalies_hourly ORDER BY 1").fetchall() == stored
