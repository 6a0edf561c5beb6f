"""How FLEAD meets a server's TimescaleDB: preloaded, or installed but not preloaded."""

from __future__ import annotations

import logging
import uuid

import psycopg
import pytest

from deploy.local.servers import pg_bin_dir
from deploy.local.timescaledb import is_installed
from sinks.database_rows import write_rows
from sinks.database_schema import TABLES, connect, ensure_schema, prepare_database

pytestmark = pytest.mark.integration

ANOMALY = {
    "device_id": "d1",
    "timestamp": "2024-01-01T00:00:00.000Z",
    "values": {"value": 1.0},
    "field": "value",
    "z_score": 4.0,
    "severity": "critical",
    "score": 0.9,
    "global_version": 1,
    "explanation": [],
}


def fresh_database(server) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.skipif(not is_installed(pg_bin_dir()), reason="TimescaleDB is not installed for this server")
def test_a_server_that_has_timescaledb_but_does_not_preload_it_gets_plain_tables_and_one_line_saying_so(
    postgres, caplog
):
    url = fresh_database(postgres)
    with caplog.at_level(logging.INFO, logger="flead.timescale"):
        assert prepare_database(url, "7 days", None) == "postgresql"
        assert prepare_database(url, "7 days", None) == "postgresql"  # once per process
    with connect(url) as conn:
        assert write_rows(conn, [("anomalies", ANOMALY)]).written == {"anomalies": 1}
    (line,) = [record for record in caplog.records if record.name == "flead.timescale"]
    assert line.levelno == logging.WARNING
    assert "plain PostgreSQL tables" in line.getMessage() and "shared_preload_libraries" in line.getMessage()


def test_a_server_that_preloads_timescaledb_gets_hypertables(timescaledb):
    url = fresh_database(timescaledb)
    with connect(url) as conn:
        assert ensure_schema(conn, "7 days", None) == "timescaledb"
        hypertables = {
            row[0] for row in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
    assert hypertables == {name for name, table in TABLES.items() if table.chunk_interval is not None}
