"""The database sink against a real PostgreSQL server (no TimescaleDB here: plain mode)."""

from __future__ import annotations

import logging
import subprocess
import threading
import time

import orjson
import psycopg
import pytest

from sinks.timescale import TABLES, BufferedWriter, connect, ensure_schema, prepare_database, redact, write_rows
from tests.flead_runs import REPO, environment, flead_command

pytestmark = pytest.mark.integration

ROWS = [
    (
        "anomalies",
        {
            "device_id": "pump-1",
            "timestamp": "2013-07-04T00:00:00.000Z",
            "values": {"value": 69.9},
            "field": "value",
            "z_score": 3.42,
            "severity": "critical",
            "score": 0.81,
            "global_version": 3,
            "explanation": [{"feature": "abs_z", "value": 3.42, "contribution": 1.2}],
        },
    ),
    (
        "local_models",
        {
            "device_id": "pump-1",
            "model_version": 1,
            "global_version": 0,
            "weights": {"abs_z": 0.1},
            "intercept": -0.05,
            "samples_processed": 2,
            "accuracy": 0.5,
            "loss": 0.687,
            "created_at": "2013-07-04T01:00:00.000Z",
        },
    ),
    (
        "federated_models",
        {
            "global_version": 1,
            "aggregation_round": 1,
            "weights": {"abs_z": 0.2},
            "intercept": -0.62,
            "accuracy": 0.975,
            "num_devices": 1,
            "num_updates": 20,
            "samples": 40,
            "created_at": "2013-07-05T15:00:00.000Z",
        },
    ),
    (
        "model_evaluations",
        {
            "global_version": 1,
            "n": 10,
            "tp": 1,
            "fp": 2,
            "tn": 6,
            "fn": 1,
            "accuracy": 0.7,
            "precision": 1 / 3,
            "recall": 0.5,
            "f1": 0.4,
            "window_start": "2013-10-01T15:00:00.000Z",
            "window_end": "2013-11-15T04:00:00.000Z",
        },
    ),
    (
        "dead_letters",
        {
            "received_at": "2026-11-24T09:09:47.101Z",
            "reason": "invalid_json",
            "detail": "unexpected end",
            "source": "kafka:edge-iiot-stream:0:17",
            "payload": "{",
        },
    ),
]


def counts(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}


def test_the_schema_is_created_once_and_says_its_mode(database, caplog):
    caplog.set_level(logging.INFO, logger="flead.timescale")
    assert prepare_database(database, "7 days", "90 days") == "postgresql"
    assert prepare_database(database, "7 days", "90 days") == "postgresql"
    with connect(database) as conn:
        assert ensure_schema(conn, None, None) == "postgresql"  # again, directly: nothing fails
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"anomalies_timestamp_idx", "local_models_created_at_idx", "dead_letters_received_at_idx"} <= indexes
    lines = [r.message for r in caplog.records if "plain PostgreSQL" in r.message]
    assert len(lines) == 1


def test_rows_round_trip_and_a_replay_inserts_nothing_twice(database):
    prepare_database(database, None, None)
    with connect(database) as conn:
        write_rows(conn, ROWS)
        write_rows(conn, ROWS)
        anomaly = conn.execute("SELECT explanation, values, timestamp, severity FROM anomalies").fetchone()
        evaluation = conn.execute("SELECT precision, window_end FROM model_evaluations").fetchone()
    assert counts(database) == dict.fromkeys(TABLES, 1)
    assert anomaly[0] == [{"feature": "abs_z", "value": 3.42, "contribution": 1.2}]
    assert anomaly[1] == {"value": 69.9}
    assert anomaly[2].isoformat() == "2013-07-04T00:00:00+00:00"
    assert evaluation[0] == pytest.approx(1 / 3)


def test_a_flush_is_one_transaction_not_one_per_row(database):
    prepare_database(database, None, None)
    rows = [("local_models", {**ROWS[1][1], "device_id": f"d{i}", "model_version": i}) for i in range(5000)]
    with connect(database) as conn:
        before = commits(conn)
        write_rows(conn, rows)
        after = commits(conn)
    assert counts(database)["local_models"] == 5000
    assert after - before <= 3  # the insert, and the two count queries' own transactions


def commits(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def test_rows_wait_while_the_database_is_away_and_are_written_when_it_returns(postgres, database):
    prepare_database(database, None, None)
    writer = BufferedWriter(lambda: connect(database, timeout=2), backoff=(0.1, 0.5))
    writer.put([("local_models", {**ROWS[1][1], "model_version": i}) for i in range(100)])
    wait_for(lambda: writer.written == 100)
    postgres.stop_server()
    try:
        started = time.monotonic()
        writer.put([("local_models", {**ROWS[1][1], "model_version": i}) for i in range(100, 300)])
        assert time.monotonic() - started < 0.5  # put never waits for the database
        wait_for(lambda: writer.errors >= 2)
        assert writer.buffered == 200
    finally:
        postgres.start_again()
    wait_for(lambda: writer.written == 300, timeout=30)
    writer.close(5)
    assert counts(database)["local_models"] == 300
    assert writer.dropped == 0


def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(postgres, database):
    prepare_database(database, None, None)
    postgres.stop_server()
    try:
        writer = BufferedWriter(
            lambda: connect(database, timeout=2), max_buffered_rows=50, batch_rows=10, backoff=(0.1, 0.2)
        )
        writer.put([("local_models", {**ROWS[1][1], "model_version": i}) for i in range(100)])
        wait_for(lambda: writer.errors >= 1)
        writer.put([("local_models", {**ROWS[1][1], "model_version": i}) for i in range(100, 110)])
    finally:
        postgres.start_again()
    writer.close(20)
    with connect(database) as conn:
        versions = [row[0] for row in conn.execute("SELECT model_version FROM local_models ORDER BY 1")]
    assert writer.dropped == len(range(110)) - len(versions)
    assert writer.dropped > 0
    assert versions[-10:] == list(range(100, 110))  # the newest survive


def test_the_password_never_appears_in_what_is_logged():
    assert redact("postgresql://flead:s3cret@db:5432/flead") == "postgresql://flead:***@db:5432/flead"
    with pytest.raises(RuntimeError) as raised:
        prepare_database("postgresql://flead:s3cret@127.0.0.1:1/flead", None, None, timeout=1)
    assert "s3cret" not in str(raised.value)
    assert "127.0.0.1:1" in str(raised.value)


def test_a_replay_survives_the_database_going_away(postgres, database, tmp_path):
    """The bundled data to the database; the server stops mid-run and comes back; nothing is lost."""
    bundled = REPO / "data" / "nab"
    env = environment(bundled, tmp_path / "out", FLEAD_DATABASE_URL=database, FLEAD_PROGRESS_SECONDS="0.2")
    run = subprocess.Popen(
        flead_command(), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    outage = threading.Event()

    def watch() -> None:
        for line in run.stdout:
            if line.startswith("flead: read ") and int(line.split()[2].replace(",", "")) >= 20_000:
                outage.set()
        outage.set()

    threading.Thread(target=watch, daemon=True).start()
    assert outage.wait(120)
    postgres.stop_server()
    time.sleep(2)
    postgres.start_again()
    assert run.wait(timeout=180) == 0, run.stderr.read()[-2000:]
    stderr = run.stderr.read()
    assert "database write failed" in stderr, "the outage was not noticed: the test proved nothing"

    files = {name: (tmp_path / "out" / f"{name}.jsonl").read_bytes().splitlines() for name in TABLES}
    assert counts(database) == {name: len(lines) for name, lines in files.items()}
    in_files = {(r["device_id"], r["model_version"]) for r in map(orjson.loads, files["local_models"])}
    with connect(database) as conn:
        in_table = set(conn.execute("SELECT device_id, model_version FROM local_models").fetchall())
    assert in_table == in_files


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
