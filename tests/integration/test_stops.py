"""Long-running commands stop cleanly on SIGTERM and SIGINT: inputs end, the readings in flight
are processed, the sinks flush, the summary says so, and nothing is left running."""

from __future__ import annotations

import signal
import subprocess
import time

import orjson
import psycopg
import pytest

from tests.flead_runs import REPO, environment, flead_command
from tests.integration.test_kafka import topics_env

pytestmark = pytest.mark.integration


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal delivers Ctrl-C
    )


def wait_for_line(process: subprocess.Popen[str], prefix: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    printed = []
    for line in process.stdout:
        if line.startswith(prefix):
            return line
        printed.append(line)
        assert time.monotonic() < deadline, f"no line starting {prefix!r} within {timeout} s: {printed[-20:]}"
    raise AssertionError(f"the process ended before printing {prefix!r}: {''.join(printed)[-3000:]}")


def test_the_live_dataflow_and_the_looping_producer_stop_on_sigterm_with_every_row_written(
    kafka, database, nab_sample, tmp_path
):
    """SIGTERM here; the replay's recovery test stops with SIGINT (the same handler)."""
    stop_signal = signal.SIGTERM
    topics = topics_env(kafka)
    producer = start(
        flead_command(dataflow="dataflows.producer"),
        environment(
            nab_sample,
            tmp_path / "producer",
            FLEAD_LOOP="true",
            FLEAD_RATE="4000",
            FLEAD_PROGRESS_SECONDS="1",
            **topics,
        ),
    )
    flead = start(
        flead_command(),
        environment(
            "kafka", tmp_path / "flead", FLEAD_DATABASE_URL=database, FLEAD_PROGRESS_SECONDS="1", **topics
        ),  # tail mode: it would run for ever
    )
    try:
        wait_for_line(producer, "flead: produced ")
        line = wait_for_line(flead, "flead: read ")
        while int(line.split()[2].replace(",", "")) < 3_000:
            line = wait_for_line(flead, "flead: read ")
        producer.send_signal(stop_signal)
        flead.send_signal(stop_signal)
        assert producer.wait(timeout=60) == 0, producer.stdout.read()[-2000:]
        assert flead.wait(timeout=120) == 0, flead.stdout.read()[-2000:]
    finally:
        for process in (producer, flead):
            if process is not None and process.poll() is None:
                process.kill()
    summary = orjson.loads((tmp_path / "flead" / "summary.json").read_bytes())
    assert summary["stopped_by"] == stop_signal.name
    assert summary["rows_read"] == summary["rows_processed"] + summary["rows_rejected"] >= 3_000
    # what the dataflow counted is in the database: the buffer was written before it exited
    with psycopg.connect(database) as conn:
        anomalies = conn.execute("SELECT count(*) FROM anomalies").fetchone()[0]
        updates = conn.execute("SELECT count(*) FROM local_models").fetchone()[0]
    assert anomalies == sum(summary["anomalies"].values()) > 0
    assert updates == summary["local_updates"] > 0
