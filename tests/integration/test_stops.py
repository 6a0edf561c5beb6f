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


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_edge_client_on_an_open_standard_input_stops_with_its_updates_sent(kafka, tmp_path, stop_signal):
    """A device pipes its readings in and never closes the pipe: the signal ends the client,
    which sends what it made and writes its summary."""
    import math
    import sys

    from tests.integration.test_kafka import consume, rows

    topics = topics_env(kafka)
    env = environment("-", tmp_path, FLEAD_ROUND_SECONDS="0", **topics)
    edge = subprocess.Popen(
        [sys.executable, "-m", "dataflows.edge"],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for i in range(120):
            reading = {"device_id": "edge-pump", "timestamp": 1_700_000_000 + 300 * i, "data": math.sin(i)}
            edge.stdin.write(orjson.dumps(reading) + b"\n")
        edge.stdin.flush()
        deadline = time.monotonic() + 60
        while sent_updates(kafka, topics) < 2:  # two full rounds of 50
            assert edge.poll() is None and time.monotonic() < deadline, "the client sent no updates"
            time.sleep(0.5)
        edge.send_signal(stop_signal)
        assert edge.wait(timeout=60) == 0, edge.stdout.read().decode()[-2000:]
    finally:
        if edge.poll() is None:
            edge.kill()
    summary = orjson.loads((tmp_path / "edge-summary.json").read_bytes())
    assert (summary["rows_processed"], summary["stopped_by"]) == (120, stop_signal.name)
    updates = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"]))
    assert len(updates) == summary["local_updates"] >= 2


def sent_updates(kafka, topics: dict[str, str]) -> int:
    """Updates on the edge client's topic so far (0 while the topic it creates has no leader yet)."""
    from confluent_kafka import KafkaException

    from tests.integration.test_kafka import messages_on

    try:
        return messages_on(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"])
    except KafkaException:
        return 0
