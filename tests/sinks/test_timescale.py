"""The database sink against real servers: each test runs on plain PostgreSQL and on
PostgreSQL with TimescaleDB, in a fresh database (the ``database`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from prometheus_client import REGISTRY
from psycopg.rows import dict_row

from deploy.local.servers import free_port
from instrumentation.masking import masked_url
from sinks.buffered_writer import BufferedWriter
from sinks.database_rows import dead_letter_id, encode_row, write_rows
from sinks.database_schema import TABLES, connect, ensure_schema, prepare_database
from sinks.timescale import TimescaleSink

pytestmark = pytest.mark.integration

EXAMPLES: dict[str, dict[str, Any]] = {
    "anomalies": {
        "device_id": "realKnownCause/ambient_temperature_system_failure",
        "timestamp": "2013-07-04T00:00:00.000Z",
        "values": {"value": 69.88},
        "field": "value",
        "z_score": 3.42,
        "severity": "critical",
        "score": 0.81,
        "global_version": 3,
        "explanation": [{"evidence": "forecast", "field": "value", "value": 9.1, "log10_tail": -14.2}],
    },
    "local_models": {
        "device_id": "realKnownCause/ambient_temperature_system_failure",
        "model_version": 1,
        "global_version": 0,
        "weights": {"abs_z": 0.1, "flat": 0.0},
        "intercept": -0.05,
        "samples_processed": 2,
        "labelled": 2,
        "accuracy": 0.5,
        "loss": 0.687,
        "normal_model": {"forecast": [2, 0.8, 0.7], "spread": [2, 0.2, 0.05], "level": [2, 0.4, 0.2]},
        "created_at": "2013-07-04T01:00:00.000Z",
    },
    "federated_models": {
        "global_version": 1,
        "aggregation_round": 1,
        "weights": {"abs_z": -0.375, "flat": 0.0},
        "intercept": -0.62,
        "accuracy": 0.975,
        "num_devices": 1,
        "num_updates": 20,
        "samples": 40,
        "threshold": 0.5,
        "normal_model": {"forecast": [40, 0.8, 0.7], "spread": [40, 0.2, 0.05], "level": [40, 0.4, 0.2]},
        "capped_devices": 1,
        "clipped_devices": 2,
        "dp_epsilon": 3.25,
        "created_at": "2013-07-05T15:00:00.000Z",
    },
    "model_evaluations": {
        "global_version": 20,
        "n": 1000,
        "tp": 0,
        "fp": 0,
        "tn": 1000,
        "fn": 0,
        "accuracy": 1.0,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "window_start": "2013-10-01T15:00:00.000Z",
        "window_end": "2013-11-15T04:00:00.000Z",
    },
    "dead_letters": {
        "received_at": "2026-11-24T09:09:47.101Z",
        "reason": "invalid_json",
        "detail": "unexpected end of data: line 2 column 1 (char 2)",
        "source": "kafka:edge-iiot-stream:3:1042",
        "payload": "{\n",
    },
}
TIME_COLUMNS = {"timestamp", "created_at", "window_start", "window_end", "received_at"}
KEYS = {
    "anomalies": ["device_id", "timestamp"],
    "local_models": ["device_id", "model_version", "created_at"],
    "federated_models": ["global_version", "created_at"],
    "model_evaluations": ["global_version", "window_start"],
    "dead_letters": ["id"],
}


def model(version: int) -> tuple[str, dict[str, Any]]:
    return "local_models", {**EXAMPLES["local_models"], "model_version": version}


def versions(url: str) -> list[int]:
    with connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT model_version FROM local_models ORDER BY 1")]


def counts(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": "timescale", **labels}) or 0.0


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_schema_is_created_idempotently_and_the_mode_is_logged_once(database, database_mode, caplog):
    caplog.set_level(logging.INFO, logger="flead.timescale")
    assert prepare_database(database, "7 days", "90 days") == database_mode
    with connect(database) as conn:
        write_rows(conn, EXAMPLES.items())
        assert ensure_schema(conn, "7 days", "90 days") == database_mode  # again on a filled schema
        assert ensure_schema(conn) == database_mode
        keys = {
            table: list(
                conn.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
                    "ORDER BY array_position(i.indkey, a.attnum)",
                    (table,),
                ).fetchall()
            )
            for table in TABLES
        }
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert prepare_database(database, "7 days", "90 days") == database_mode
    assert counts(database) == dict.fromkeys(TABLES, 1)
    assert {table: [name for (name,) in columns] for table, columns in keys.items()} == KEYS
    assert {f"{table.name}_{table.time_column}_idx" for table in TABLES.values()} <= indexes
    mode_lines = [r.getMessage() for r in caplog.records if r.name == "flead.timescale"]
    assert len(mode_lines) == 1, mode_lines
    assert ("TimescaleDB hypertables" if database_mode == "timescaledb" else "plain PostgreSQL") in mode_lines[0]


def test_a_bad_policy_interval_fails_at_start_up_in_either_mode(database):
    with pytest.raises(RuntimeError, match="interval"):
        prepare_database(database, "7 dayz", None)


def test_every_table_round_trips_and_a_replay_inserts_nothing_twice(database):
    prepare_database(database, None, None)
    with connect(database) as conn:
        first = write_rows(conn, EXAMPLES.items())
        again = write_rows(conn, EXAMPLES.items())
        conn.row_factory = dict_row
        stored = {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in TABLES}
    assert first.written == again.written == dict.fromkeys(TABLES, 1)
    assert first.rejected == again.rejected == []
    for table, row in EXAMPLES.items():
        expected = {k: datetime.fromisoformat(v) if k in TIME_COLUMNS else v for k, v in row.items()}
        if table == "dead_letters":
            expected["id"] = dead_letter_id(row)
        assert stored[table] == [expected], table
    assert stored["anomalies"][0]["timestamp"].utcoffset() is not None  # timestamptz, not timestamp


@pytest.mark.parametrize(
    ("table", "time_column"), [("federated_models", "created_at"), ("model_evaluations", "window_start")]
)
def test_a_global_version_made_again_at_another_time_is_not_written_twice(database, table, time_column):
    """After a crash the dataflow makes the versions since its snapshot again, and with several
    processes one may come out at another time: its first row stays, in one flush or later ones."""
    prepare_database(database, None, None)
    first = EXAMPLES[table]
    later = {**first, time_column: "2031-01-01T00:00:00.000Z"}
    much_later = {**first, time_column: "2032-01-01T00:00:00.000Z"}
    with connect(database) as conn:
        write_rows(conn, [(table, first)])
        write_rows(conn, [(table, later), (table, much_later)])
        stored = conn.execute(f"SELECT global_version, {time_column} FROM {table}").fetchall()
        write_rows(conn, [(table, {**first, "global_version": first["global_version"] + 1}), (table, later)])
        versions = conn.execute(f"SELECT global_version FROM {table} ORDER BY 1").fetchall()
    assert stored == [(first["global_version"], datetime.fromisoformat(first[time_column]))]
    assert [v for (v,) in versions] == [first["global_version"], first["global_version"] + 1]


def test_a_flush_is_one_insert_statement_per_table(database):
    """A statement-level trigger counts INSERT statements: a row-at-a-time sink would count thousands."""
    prepare_database(database, None, None)
    with connect(database) as conn:
        conn.execute("CREATE TABLE statements (tbl text)")
        conn.execute(
            "CREATE FUNCTION count_statement() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO statements VALUES (TG_TABLE_NAME); RETURN NULL; END $$"
        )
        for table in TABLES:
            trigger = f"CREATE TRIGGER {table}_statements AFTER INSERT ON {table} FOR EACH STATEMENT"
            conn.execute(f"{trigger} EXECUTE FUNCTION count_statement()")
    rows = [model(i) for i in range(5000)]
    rows += [("anomalies", {**EXAMPLES["anomalies"], "device_id": f"d{i}"}) for i in range(2000)]
    rows += [(table, row) for table, row in EXAMPLES.items() if table not in ("anomalies", "local_models")]
    writer = BufferedWriter(lambda: connect(database), batch_rows=10_000)
    writer.put(rows)
    assert writer.close(15) == 0
    assert writer.written == len(rows)
    with connect(database) as conn:
        statements = dict(conn.execute("SELECT tbl, count(*) FROM statements GROUP BY tbl").fetchall())
    assert statements == dict.fromkeys(TABLES, 1)
    assert counts(database)["local_models"] == 5000


def test_a_row_the_database_refuses_is_dropped_and_counted_and_the_others_are_written(database, caplog):
    prepare_database(database, None, None)
    dropped_before = metric("flead_sink_dropped_rows_total")
    bad = {**model(7)[1], "created_at": "not a time"}
    nul = {**EXAMPLES["dead_letters"], "payload": "a\x00b"}  # PostgreSQL text cannot hold NUL
    writer = BufferedWriter(lambda: connect(database))
    writer.put([*(model(i) for i in range(7)), ("local_models", bad), *(model(i) for i in range(8, 20))])
    writer.put([("dead_letters", nul)])
    assert writer.close(15) == 0
    assert versions(database) == [i for i in range(20) if i != 7]
    with connect(database) as conn:
        assert conn.execute("SELECT payload FROM dead_letters").fetchone() == ("a\ufffdb",)
    assert (writer.written, writer.rejected, writer.dropped, writer.errors) == (20, 1, 1, 0)
    assert metric("flead_sink_dropped_rows_total") - dropped_before == 1
    refusals = [r.getMessage() for r in caplog.records if "refused a local_models row" in r.getMessage()]
    assert len(refusals) == 1 and "not a time" in refusals[0]


def test_rows_wait_while_the_database_is_away_and_are_written_when_it_returns(database_server, database):
    prepare_database(database, None, None)
    before = {
        "written": metric("flead_sink_rows_written_total", table="local_models"),
        "errors": metric("flead_sink_write_errors_total"),
        "retries": metric("flead_sink_retries_total"),
        "buffered": metric("flead_sink_buffered_rows"),
    }
    away, reconnecting, release = threading.Event(), threading.Event(), threading.Event()

    def reconnect():
        if away.is_set():  # the database is down: the writer's attempt is held until the test lets it go
            reconnecting.set()
            release.wait(60)
        return connect(database, timeout=2)

    writer = BufferedWriter(reconnect, backoff=(0.05, 0.2))
    writer.put([model(i) for i in range(100)])
    wait_for(lambda: writer.written == 100)
    database_server.stop_server()
    away.set()
    try:
        writer.put([model(i) for i in range(100, 120)])  # its write fails, and the writer reconnects ...
        assert reconnecting.wait(15), "the writer did not try to reconnect"
        # ... and stays inside connect() while nine more puts come: put never waits for the database
        putting = threading.Thread(
            target=lambda: [writer.put([model(i) for i in range(start, start + 20)]) for start in range(120, 300, 20)],
            daemon=True,
        )
        putting.start()
        putting.join(30)
        assert not putting.is_alive(), "put() waited for the writer's reconnect"
        assert writer.buffered == 200
        release.set()
        wait_for(lambda: writer.retries >= 2)
        assert writer.buffered == 200
        assert metric("flead_sink_buffered_rows") - before["buffered"] == 200
        assert metric("flead_sink_write_errors_total") - before["errors"] >= 2
        assert metric("flead_sink_retries_total") - before["retries"] >= 2
    finally:
        release.set()
        database_server.start_again()
    wait_for(lambda: writer.written == 300, timeout=20)
    assert writer.close(5) == 0
    assert versions(database) == list(range(300))
    assert writer.dropped == 0
    assert metric("flead_sink_rows_written_total", table="local_models") - before["written"] == 300
    assert metric("flead_sink_buffered_rows") == before["buffered"]


def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(database):
    prepare_database(database, None, None)
    up = threading.Event()
    refused = f"postgresql://flead@127.0.0.1:{free_port()}/flead"
    writer = BufferedWriter(
        lambda: connect(database if up.is_set() else refused), max_buffered_rows=50, batch_rows=10, backoff=(0.02, 0.05)
    )
    dropped_before = metric("flead_sink_dropped_rows_total")
    total = 0
    for size in (30, 40, 60, 5):
        writer.put([model(i) for i in range(total, total + size)])
        total += size
        wait_for(lambda: writer.errors >= 1)
        assert writer.buffered == min(total, 50)
        assert writer.dropped + writer.buffered == total
    up.set()
    assert writer.close(10) == 0
    kept = versions(database)
    assert len(kept) == 50 == total - writer.dropped
    assert metric("flead_sink_dropped_rows_total") - dropped_before == writer.dropped
    assert kept[-10:] == list(range(total - 10, total))  # the newest survive
    # The oldest go first; only a batch being written when the buffer overflowed can outlive newer rows.
    assert len([v for v in kept if v < total - 50]) <= 10


def test_close_gives_up_after_its_timeout_and_reports_what_is_left(caplog):
    refused = f"postgresql://flead@127.0.0.1:{free_port()}/flead"
    writer = BufferedWriter(lambda: connect(refused), backoff=(0.05, 0.1))
    writer.put([model(i) for i in range(10)])
    started = time.monotonic()
    assert writer.close(0.3) == 10
    assert time.monotonic() - started < 2
    assert writer.dropped == 10
    assert any("10 rows were not written" in r.getMessage() for r in caplog.records)


def test_the_sink_in_a_dataflow_takes_single_rows_and_lists_and_replays_idempotently(database):
    items = [
        ("anomalies", EXAMPLES["anomalies"]),
        ("local_models", [model(i)[1] for i in range(3)]),
        *((table, [row]) for table, row in EXAMPLES.items() if table not in ("anomalies", "local_models")),
    ]
    for _ in range(2):
        flow = Dataflow("timescale_sink_test")
        op.output("db", op.input("rows", flow, TestingSource(items)), TimescaleSink(database, close_timeout=10))
        run_main(flow)  # close() drains the buffer before run_main returns
    assert counts(database) == {**dict.fromkeys(TABLES, 1), "local_models": 3}


def test_an_unknown_table_fails_loudly_in_write_batch(database):
    prepare_database(database, None, None)
    writer = BufferedWriter(lambda: connect(database))
    with pytest.raises(ValueError, match="scores"):
        writer.put([("scores", {"device_id": "x"})])
    assert writer.close(1) == 0
    with pytest.raises(ValueError, match="scores"):
        TimescaleSink(database).part_fn("scores")


def test_the_rows_not_yet_written_are_a_tables_own_oldest_first():
    refused = f"postgresql://flead@127.0.0.1:{free_port()}/flead"
    writer = BufferedWriter(lambda: connect(refused), batch_rows=3, backoff=(0.01, 0.02))
    rows = [model(i) for i in range(10)]
    writer.put([*rows[:4], ("anomalies", EXAMPLES["anomalies"]), *rows[4:]])
    wait_for(lambda: writer.errors >= 3)  # whether a batch is being tried or waits again, it is listed
    assert writer.unwritten("local_models") == [(table, encode_row(table, row)) for table, row in rows]
    assert writer.unwritten("anomalies") == [("anomalies", encode_row("anomalies", EXAMPLES["anomalies"]))]
    assert writer.unwritten("dead_letters") == []
    assert writer.close(0.1) == 11


def test_rows_waiting_at_a_snapshot_are_written_by_the_resumed_partition(database_server, database):
    """A crash while the writer is behind: the partition's snapshot holds the rows it had not
    written, and the partition a resumed run builds from that snapshot writes them."""
    prepare_database(database, None, None)  # once per process: the partitions below do not connect for it
    database_server.stop_server()
    try:
        crashed = TimescaleSink(database, close_timeout=0.1).build_part("database", "local_models", None)
        crashed.write_batch([[row for _, row in map(model, range(5))], model(5)[1]])
        state = crashed.snapshot()
        assert [orjson.loads(doc)["model_version"] for _, doc in state] == list(range(6))
        crashed.close()  # the crashed run's writer gives up: its rows are gone with it
    finally:
        database_server.start_again()
    assert versions(database) == []
    resumed = TimescaleSink(database, close_timeout=10).build_part("database", "local_models", state)
    resumed.write_batch([model(6)[1]])
    resumed.close()
    assert versions(database) == list(range(7))


def test_the_password_never_appears_in_what_the_database_start_up_raises():
    unreachable = f"postgresql://flead:s3cret@127.0.0.1:{free_port()}/flead"
    started = time.monotonic()
    with pytest.raises(RuntimeError) as raised:
        prepare_database(unreachable, None, None, timeout=2)
    assert time.monotonic() - started < 5
    assert "s3cret" not in str(raised.value)
    assert masked_url(unreachable) in str(raised.value)
    with pytest.raises(RuntimeError) as raised:  # libpq would quote the whole string
        prepare_database("postgres:/flead:s3cret@127.0.0.1/flead", None, None)
    assert "s3cret" not in str(raised.value)
