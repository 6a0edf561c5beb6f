"""TimescaleDB's policies do what they claim: compression, retention, and replays into compressed chunks.

The policies' jobs run in the foreground (``CALL run_job``): the background scheduler on these
machines does the work and then logs an error (``/work/shared/vendor/README.md``), so the
tests judge by the data. The compression tests use the rows FLEAD writes for a generated
fleet (``bench/fleet.py``), the table sizes are taken as ``bench/timescale_compression.py``
takes them.
"""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from bench.fleet import generate_fleet
from bench.timescale_compression import compress_and_measure, policy_jobs, run_compression_jobs, run_job, table_sizes
from dataflows.config import load_settings
from sinks.database_rows import write_rows
from sinks.database_schema import TABLES, connect, ensure_schema
from sinks.timescale import TimescaleSink
from tests.flead_runs import REPO, environment, flead_command
from tests.sinks.test_timescaledb_setup import fresh_database

pytestmark = pytest.mark.integration

COMPRESSED = [name for name, table in TABLES.items() if table.compression is not None]
WRITTEN_BY_ROUND = ("local_models", "anomalies")
"""Most of FLEAD's rows and bytes: one row per device per round, one per anomaly."""


@pytest.fixture(scope="module")
def fleet_run(timescaledb, tmp_path_factory) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """FLEAD's replay of a 300-device fleet into a fresh TimescaleDB database, with the default
    settings but no compression policy yet: the database's URL and the rows (its JSON Lines)."""
    work = tmp_path_factory.mktemp("fleet")
    generate_fleet(work / "fleet.jsonl", devices=300, rows=37_500)
    url = fresh_database(timescaledb)
    env = environment(
        work / "fleet.jsonl",
        work / "out",
        FLEAD_DATABASE_URL=url,
        FLEAD_REPORT_POINTS="0",
        FLEAD_NORMAL_PRIOR_READINGS="300",  # the default, as in the benchmark: it finds anomalies in this fleet
        FLEAD_DB_COMPRESS_AFTER="",  # the test adds the policy once it has measured the tables
    )
    subprocess.run(flead_command(), cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    rows = {
        name: [orjson.loads(line) for line in (work / "out" / f"{name}.jsonl").read_bytes().splitlines()]
        for name in TABLES
        if TABLES[name].chunk_interval is not None
    }
    return url, rows


def write_in_batches(conn, rows: dict[str, list[dict[str, Any]]], batch: int = 5_000) -> None:
    for name, table_rows in rows.items():
        for start in range(0, len(table_rows), batch):
            flush = write_rows(conn, [(name, row) for row in table_rows[start : start + batch]])
            assert not flush.rejected, flush.rejected[:3]


def test_the_compression_job_shrinks_fleads_rows_more_than_three_times(fleet_run):
    """The earlier build's segmentby device_id left a device's few rows per chunk in segments
    of their own: 2.3 times for local_models on this fleet (see docs/operations.md)."""
    url, rows = fleet_run
    with connect(url) as conn:
        assert not any(job for job in policy_jobs(conn, "policy_retention")), "retention must be off by default"
        before, after = compress_and_measure(conn)  # adds the policies as FLEAD_DB_COMPRESS_AFTER=7 days would
    assert {name: before[name].rows for name in before} == {name: len(rows[name]) for name in before}
    for name in COMPRESSED:
        assert after[name].compressed_chunks == after[name].chunks > 0, name
    ratios = {name: before[name].bytes / after[name].bytes for name in COMPRESSED}
    for name in WRITTEN_BY_ROUND:
        assert ratios[name] > 3, ratios
    total_before = sum(before[name].bytes for name in before)
    total_after = sum(after[name].bytes for name in after)
    assert total_before / total_after > 3, (ratios, total_before, total_after)


def test_a_replay_into_compressed_chunks_inserts_nothing_twice_and_new_rows_still_go_in(timescaledb, fleet_run):
    _, rows = fleet_run
    url = fresh_database(timescaledb)
    with connect(url) as conn:
        ensure_schema(conn, None, None)
        write_in_batches(conn, rows)
        ensure_schema(conn, "7 days", None)
        run_compression_jobs(conn)
        compressed = table_sizes(conn)
        assert all(compressed[name].compressed_chunks == compressed[name].chunks > 0 for name in COMPRESSED)
        write_in_batches(conn, rows)  # the replay after recovery
        replayed = table_sizes(conn)
        assert {name: size.rows for name, size in replayed.items()} == {name: len(rows[name]) for name in rows}
        later = {**rows["local_models"][0], "model_version": 10**6}  # a new row in a compressed chunk's range
        assert write_rows(conn, [("local_models", later)]).written == {"local_models": 1}
        keys = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, model_version, created_at)) FROM local_models"
        ).fetchone()
    assert keys == (len(rows["local_models"]) + 1,) * 2


def test_retention_is_off_unless_set():
    settings = load_settings({"FLEAD_DATABASE_URL": "postgresql://flead@localhost/flead"})
    assert settings.database is not None and settings.database.retain_for is None
    assert TimescaleSink("postgresql://flead@localhost/flead")._retain_for is None


def _row(table: str, at: datetime, key: int) -> dict[str, Any]:
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "anomalies": {"device_id": f"d{key}", "timestamp": stamp, "severity": "warning", "score": 0.6},
        "local_models": {"device_id": f"d{key}", "model_version": key, "samples_processed": 5, "created_at": stamp},
        "federated_models": {"global_version": key, "created_at": stamp},
        "model_evaluations": {"global_version": key, "n": 10, "window_start": stamp, "window_end": stamp},
    }[table]


def test_the_retention_job_drops_only_chunks_past_the_window(timescaledb):
    now = datetime.now(UTC)
    ages = {"old": timedelta(days=400), "just inside": timedelta(days=29), "new": timedelta(hours=1)}
    url = fresh_database(timescaledb)
    with connect(url) as conn:
        ensure_schema(conn, None, "30 days")
        for name, table in TABLES.items():
            if table.chunk_interval is not None:
                rows = [(name, _row(name, now - age, key)) for key, age in enumerate(ages.values())]
                assert write_rows(conn, rows).written == {name: 3}
        jobs = policy_jobs(conn, "policy_retention")
        assert set(jobs) == {name for name, table in TABLES.items() if table.chunk_interval is not None}
        for job in jobs.values():
            run_job(conn, job)
        counts = {
            name: conn.execute(
                f"SELECT count(*) FILTER (WHERE \"{table.time_column}\" < now() - INTERVAL '30 days'), "
                f"count(*) FILTER (WHERE \"{table.time_column}\" >= now() - INTERVAL '30 days') FROM {name}"
            ).fetchone()
            for name, table in TABLES.items()
            if name in jobs
        }
        chunk_ends = conn.execute(
            "SELECT hypertable_name, max(range_end) FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = current_schema() AND range_end < now() - INTERVAL '30 days' GROUP BY 1"
        ).fetchall()
    assert {name: kept for name, (_, kept) in counts.items()} == dict.fromkeys(jobs, 2), "a row in the window went"
    assert {name: past for name, (past, _) in counts.items()} == dict.fromkeys(jobs, 0), "a chunk past it stayed"
    assert chunk_ends == []


def test_rows_older_than_the_retention_window_log_one_warning(timescaledb, caplog):
    caplog.set_level(logging.WARNING, logger="flead.timescale")
    now = datetime.now(UTC)
    url = fresh_database(timescaledb)
    sink = TimescaleSink(url, retain_for="30 days")
    anomalies, models = (sink.build_part("database", table, None) for table in ("anomalies", "local_models"))
    anomalies.write_batch([_row("anomalies", now - timedelta(hours=1), 1)])
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    old = now - timedelta(days=400)
    anomalies.write_batch([[_row("anomalies", old, 2), _row("anomalies", old, 3)]])
    models.write_batch([_row("local_models", old, 4)])
    anomalies.close()
    models.close()
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "FLEAD_DB_RETAIN_FOR=30 days" in warnings[0] and "anomalies" in warnings[0]
    assert _row("anomalies", old, 2)["timestamp"] in warnings[0]


def test_without_retention_old_rows_are_written_without_a_warning_and_stay(timescaledb, caplog):
    caplog.set_level(logging.WARNING, logger="flead.timescale")
    url = fresh_database(timescaledb)
    partition = TimescaleSink(url).build_part("database", "anomalies", None)
    partition.write_batch([_row("anomalies", datetime(2014, 3, 7, tzinfo=UTC), 1)])
    partition.close()
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    with connect(url) as conn:
        assert policy_jobs(conn, "policy_retention") == {}
        assert conn.execute("SELECT count(*) FROM anomalies").fetchone()[0] == 1


def _settings(conn) -> dict[str, tuple[str, str | None, str | None]]:
    return {
        name: (str(interval), segmentby, orderby)
        for name, interval, segmentby, orderby in conn.execute(
            "SELECT d.hypertable_name, d.time_interval, s.segmentby, s.orderby "
            "FROM timescaledb_information.dimensions d "
            "LEFT JOIN timescaledb_information.hypertable_compression_settings s "
            "ON s.hypertable = format('%I.%I', d.hypertable_schema, d.hypertable_name)::regclass "
            "WHERE d.hypertable_schema = current_schema()"
        ).fetchall()
    }


def test_an_earlier_builds_chunk_intervals_and_compression_settings_move_to_this_builds(timescaledb):
    url = fresh_database(timescaledb)
    with connect(url) as conn:
        ensure_schema(conn, None, None)
        for name in TABLES:  # what the earlier build made
            if TABLES[name].chunk_interval is not None:
                conn.execute("SELECT set_chunk_time_interval(%s::regclass, INTERVAL '7 days')", (name,))
        for name, settings in {
            "local_models": "'device_id', timescaledb.compress_orderby = 'created_at DESC, model_version'",
            "federated_models": "'', timescaledb.compress_orderby = 'created_at DESC, global_version'",
            "model_evaluations": "'', timescaledb.compress_orderby = 'window_start DESC, global_version'",
            "anomalies": "'device_id'",
        }.items():
            conn.execute(f"ALTER TABLE {name} SET (timescaledb.compress, timescaledb.compress_segmentby = {settings})")
            conn.execute("SELECT add_compression_policy(%s::regclass, INTERVAL '7 days')", (name,))
        ensure_schema(conn, "7 days", None)
        moved = _settings(conn)
        moved_jobs = set(policy_jobs(conn, "policy_compression"))
    with connect(fresh_database(timescaledb)) as conn:
        ensure_schema(conn, "7 days", None)
        fresh = _settings(conn)
        assert moved_jobs == set(policy_jobs(conn, "policy_compression")) == set(COMPRESSED)
    assert {name: moved[name][0] for name in moved} == {name: fresh[name][0] for name in fresh}
    assert {name: moved[name] for name in COMPRESSED} == {name: fresh[name] for name in COMPRESSED}
    assert moved["local_models"][1:] == ("", "created_at DESC,device_id,model_version")
    assert moved["federated_models"][0] == "28 days, 0:00:00"


def test_settings_changed_by_hand_are_left_alone(timescaledb):
    url = fresh_database(timescaledb)
    with connect(url) as conn:
        ensure_schema(conn, "7 days", None)
        conn.execute("SELECT set_chunk_time_interval('local_models', INTERVAL '1 day')")
        conn.execute(
            "ALTER TABLE anomalies SET (timescaledb.compress_segmentby = 'severity', "
            "timescaledb.compress_orderby = '\"timestamp\" DESC')"
        )
        ensure_schema(conn, "7 days", None)
        settings = _settings(conn)
    assert settings["local_models"][0] == "1 day, 0:00:00"
    assert settings["anomalies"][1:] == ("severity", '"timestamp" DESC')


def test_model_evaluations_is_a_hypertable_that_is_never_compressed(timescaledb):
    """Its chunks hold one row per global version, too few to shrink (docs/operations.md)."""
    url = fresh_database(timescaledb)
    with connect(url) as conn:
        ensure_schema(conn, "7 days", "90 days")
        assert "model_evaluations" not in policy_jobs(conn, "policy_compression")
        assert "model_evaluations" in policy_jobs(conn, "policy_retention")
