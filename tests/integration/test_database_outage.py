"""The whole dataflow writing to a real PostgreSQL that goes away mid-run (the sink's own
behaviour, row by row, is tested in ``tests/sinks/test_timescale.py``)."""

from __future__ import annotations

import subprocess
import threading
import time

import orjson
import pytest

from sinks.database_schema import TABLES, connect
from tests.flead_runs import REPO, environment, flead_command

pytestmark = pytest.mark.integration


def counts(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}


def test_a_replay_survives_the_database_going_away(database_server, database, tmp_path):
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
    database_server.stop_server()
    time.sleep(2)
    database_server.start_again()
    assert run.wait(timeout=180) == 0, run.stderr.read()[-2000:]
    stderr = run.stderr.read()
    assert "database write failed" in stderr, "the outage was not noticed: the test proved nothing"

    files = {name: (tmp_path / "out" / f"{name}.jsonl").read_bytes().splitlines() for name in TABLES}
    assert counts(database) == {name: len(lines) for name, lines in files.items()}
    in_files = {(r["device_id"], r["model_version"]) for r in map(orjson.loads, files["local_models"])}
    assert in_files, "the run wrote no local models: the comparison would prove nothing"
    with connect(database) as conn:
        in_table = set(conn.execute("SELECT device_id, model_version FROM local_models").fetchall())
    assert in_table == in_files
