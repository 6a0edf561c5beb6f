"""Crashes and outages on the real stack: Kafka in, PostgreSQL and Kafka out.

Each scenario ends by comparing every row in the database with a run that nothing disturbed:
not "it ran", but 0 rows lost and 0 rows twice. The moments of the kills are random; the seed
that drew them is in every failure message (``FLEAD_TEST_SEED`` draws them again).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from deploy.local.servers import KafkaServer, PostgresServer, free_port
from operators.messages import iso_timestamp
from sinks.database_schema import connect, ensure_schema
from tests.flead_runs import REPO, anomaly_rows_keys, environment, flead_command
from tests.integration.test_kafka import consume, messages_on, produce, rows, topics_env

pytestmark = pytest.mark.integration

SERIES = [
    *sorted((REPO / "data" / "nab" / "artificialWithAnomaly").glob("*.csv")),
    REPO / "data" / "nab" / "realKnownCause" / "ec2_request_latency_system_failure.csv",
]
"""Seven bundled series, 28,224 readings: a run long enough for a kill to land mid-stream."""


# What a run reading Kafka writes the same whatever its timing, per table. Global models
# return to the devices through their topic, so when one reaches a device (and hence the
# version a row names, the local model's weights, and which readings each version is
# evaluated on) depends on timing; so does which updates make up each version, with two
# processes and, after a resume, with one (the batches the input is read in differ). Two
# undisturbed runs differ there, so those columns are left out, and the global versions and
# their evaluations are checked by :func:`assert_each_version_once`.
DETERMINED = {
    "anomalies": 'device_id, "timestamp", severity, field, score, z_score',
    "local_models": "device_id, model_version, created_at, samples_processed",
    "dead_letters": "id, reason, source, payload",
}


def table_rows(url: str) -> dict[str, Counter[str]]:
    """Each table's rows (their determined columns) counted: a row written twice counts 2."""
    with connect(url) as conn:
        return {
            name: Counter(row[0] for row in conn.execute(f"SELECT row({columns})::text FROM {name}"))
            for name, columns in DETERMINED.items()
        }


def versions(url: str, table: str) -> list[int]:
    """The global versions of ``table``'s rows, in order: each once, if none was written twice."""
    with connect(url) as conn:
        return [v for (v,) in conn.execute(f"SELECT global_version FROM {table} ORDER BY 1")]


def assert_each_version_once(database: str, stream: Stream, context: str, summary: dict[str, Any]) -> None:
    """Every global version the undisturbed run made, once, and each evaluated at most once.

    Which updates make up a version (with two processes, and after a resume with one) and which
    readings each version is evaluated on depend on timing, so the versions made again after a kill may differ from the
    first ones: the database keeps the first row of each version (``once_per``). A run that
    reads a full topic can score every reading before the first global model reaches its
    shard: then no reading has a global score (the summary's ``global_model`` count is 0) and
    no version has an evaluation; whenever one has, some evaluation must be in the database."""
    assert versions(database, "federated_models") == stream.versions, context
    evaluated = versions(database, "model_evaluations")
    assert len(evaluated) == len(set(evaluated)), context
    if summary["detection_quality"]["global_model"]["n"]:
        assert evaluated, f"readings were scored by global models, but no evaluation was written: {context}"


def differences(found: dict[str, Counter[str]], expected: dict[str, Counter[str]]) -> dict[str, str]:
    """Per table, how the rows differ from the expected ones (none: an empty dict)."""
    differ = {}
    for name in expected:
        missing, extra = expected[name] - found[name], found[name] - expected[name]
        if missing or extra:
            differ[name] = f"{sum(missing.values())} missing, {sum(extra.values())} extra or twice"
    return differ


def new_database(server: PostgresServer) -> str:
    name = f"crash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def new_recovery_store(folder: Path, partitions: int = 1) -> Path:
    folder.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(folder), str(partitions)], check=True)
    return folder


@dataclass
class Stream:
    """Telemetry on a topic of its own, and what an undisturbed run made of it."""

    telemetry: str
    rows: int
    reference: dict[str, Counter[str]] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)
    processing: float = 0.0
    """Seconds from the undisturbed run's first progress line to its last reading processed."""

    def settings(self, kafka: KafkaServer, database: str, **extra: str) -> dict[str, str]:
        """Fresh output topics (a run reads the newest global model back from its own), this
        stream's telemetry, read to its end, into ``database``."""
        topics = topics_env(kafka, FLEAD_TOPIC_TELEMETRY=self.telemetry, FLEAD_DATABASE_URL=database)
        return {"FLEAD_KAFKA_TAIL": "false", "FLEAD_PROGRESS_SECONDS": "0.1", **topics, **extra}


@pytest.fixture(scope="module")
def stream(kafka, postgres, tmp_path_factory) -> Stream:
    """Seven bundled series on a topic, read once by an undisturbed run."""
    tmp = tmp_path_factory.mktemp("crash-stream")
    for series in SERIES:
        target = tmp / "input" / series.relative_to(REPO / "data" / "nab")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(series, target)
    topics = topics_env(kafka)
    produce(tmp / "input", tmp / "producer", topics)
    found = Stream(topics["FLEAD_TOPIC_TELEMETRY"], rows=28_224)
    database = new_database(postgres)
    env = environment("kafka", tmp / "reference", **found.settings(kafka, database))
    log = tmp / "reference.log"
    reference = start(flead_command(), env, log)
    progress = Progress([reference])
    progress.wait_for(found.rows)
    found.processing = time.monotonic() - progress.first_seen
    reference.communicate(timeout=300)
    assert reference.returncode == 0, log.read_text()[-3000:]
    found.reference = table_rows(database)
    found.versions = versions(database, "federated_models")
    summary = orjson.loads((tmp / "reference" / "summary.json").read_bytes())
    assert summary["rows_read"] == summary["rows_processed"] == found.rows
    assert found.versions and all(found.reference[name] for name in ("anomalies", "local_models")), (
        "the undisturbed run left a table empty: comparisons with it would prove little"
    )
    return found


def rows_processed(line: str) -> int | None:
    """The rows processed so far, from a progress line (``flead: read 1,234 · processed 1,200 · …``)."""
    if not line.startswith("flead: read "):
        return None
    return int(line.split(" · ")[1].split()[1].replace(",", ""))


@dataclass
class Kill:
    """One SIGKILL: when (seconds after the first progress line, or once a progress line shows
    ``at_rows`` rows processed) and how far the run had got."""

    after: float = math.inf
    rows_processed: int | None = None
    at_rows: int | None = None


def seeded() -> tuple[int, random.Random]:
    seed = int(os.environ.get("FLEAD_TEST_SEED") or random.SystemRandom().randrange(2**32))
    return seed, random.Random(seed)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log.open("a"), text=True, bufsize=1
    )


class Progress:
    """The newest progress line of any of ``processes`` (whichever prints them), read as they come."""

    def __init__(self, processes: list[subprocess.Popen[str]]) -> None:
        self.processes = processes
        self.processed: int | None = None
        self.first_seen: float | None = None
        for process in processes:
            os.set_blocking(process.stdout.fileno(), False)

    def read(self) -> int | None:
        """Rows processed by the newest line so far (``None`` before the first)."""
        for process in self.processes:
            for line in iter(process.stdout.readline, ""):
                processed = rows_processed(line)
                if processed is not None:
                    self.processed = processed
                    self.first_seen = self.first_seen or time.monotonic()
        return self.processed

    def wait_for(self, rows: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while (self.read() or 0) < rows:
            assert all(p.poll() is None for p in self.processes), "the run ended before it processed the rows"
            assert time.monotonic() < deadline, f"processed {self.processed} of {rows} rows in {timeout:g} s"
            time.sleep(0.05)


def kill_at(processes: list[subprocess.Popen[str]], kill: Kill, victim: subprocess.Popen[str]) -> bool:
    """Follow the progress of ``processes``; ``kill.after`` seconds after their first progress
    line, SIGKILL ``victim``. False if the run ended before that moment."""
    progress = Progress(processes)
    while victim.poll() is None:
        kill.rows_processed = progress.read()
        due = progress.first_seen is not None and (
            time.monotonic() - progress.first_seen >= kill.after
            or (kill.at_rows is not None and (kill.rows_processed or 0) >= kill.at_rows)
        )
        if due:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            return True
        time.sleep(0.01)
    return False


def resumed_after_kills(command: list[str], env: dict[str, str], kills: list[Kill], log: Path) -> list[Kill]:
    """Run ``command`` again and again from its recovery store, killing each run at the next
    of ``kills``; once they are spent, run it to its end. The kills that hit a running process."""
    landed = []
    for kill in kills:
        process = start(command, env, log)
        if kill_at([process], kill, victim=process):
            landed.append(kill)
        else:
            assert process.returncode == 0, log.read_text()[-3000:]
    final = start(command, env, log)
    final.communicate(timeout=300)
    assert final.returncode == 0, log.read_text()[-3000:]
    return landed


def test_sigkill_at_random_moments_resumes_to_the_same_rows(kafka, postgres, stream, tmp_path):
    """One process, killed twice at random moments of its run, each time resumed from its
    recovery store: the database ends with exactly the undisturbed run's rows. The first kill
    comes within a second of the first progress line, mostly before FedAvg's state is first
    committed: the resumed run must then go on from the global model the first start took, not
    from the newest the killed run left on the topic."""
    seed, rng = seeded()
    database = new_database(postgres)
    recovery = new_recovery_store(tmp_path / "recovery")
    command = flead_command("-r", str(recovery), "-s", "1", "-b", "0")
    env = environment("kafka", tmp_path / "out", **stream.settings(kafka, database))
    kills = [Kill(rng.uniform(0, 1)), Kill(rng.uniform(0, stream.processing))]

    landed = resumed_after_kills(command, env, kills, tmp_path / "flead.log")

    context = f"seed {seed}, kills {kills}"
    assert any(0 < (kill.rows_processed or 0) < stream.rows for kill in landed), f"no kill mid-stream: {context}"
    assert differences(table_rows(database), stream.reference) == {}, context
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert_each_version_once(database, stream, context, summary)
    assert summary["rows_read"] == summary["rows_processed"] == stream.rows, context


def slow_inserts(database: str, seconds: float) -> None:
    """Every INSERT statement into the tables of many rows takes ``seconds`` longer: the
    sink's writer falls behind the dataflow, as it does on a busy database."""
    with connect(database) as conn:
        ensure_schema(conn)
        conn.execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$"
        )
        for table in ("anomalies", "local_models"):
            trigger = f"CREATE TRIGGER slow AFTER INSERT ON {table} FOR EACH STATEMENT"
            conn.execute(f"{trigger} EXECUTE FUNCTION slow_insert()")


def test_sigkill_while_the_database_lags_loses_no_row(kafka, postgres, stream, tmp_path):
    """The writer is behind when the process is killed: rows made before the last snapshot
    still wait in its buffer. The snapshot keeps them and the resumed run writes them. The kill
    comes at a row count, between half and nine tenths of the stream: a moment drawn from the
    undisturbed run's time could fall after a faster run had processed every row."""
    seed, rng = seeded()
    database = new_database(postgres)
    slow_inserts(database, 0.5)
    recovery = new_recovery_store(tmp_path / "recovery")
    command = flead_command("-r", str(recovery), "-s", "1", "-b", "0")
    env = environment("kafka", tmp_path / "out", **stream.settings(kafka, database))
    kills = [Kill(at_rows=rng.randrange(stream.rows // 2, stream.rows * 9 // 10))]

    landed = resumed_after_kills(command, env, kills, tmp_path / "flead.log")

    context = f"seed {seed}, kills {kills}"
    assert landed and 0 < (landed[0].rows_processed or 0) < stream.rows, f"no kill mid-stream: {context}"
    assert differences(table_rows(database), stream.reference) == {}, context


def start_two_processes(command: list[str], env: dict[str, str], log: Path) -> list[subprocess.Popen[str]]:
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    return [start([*command, "-i", str(i), "-a", addresses], env, log) for i in range(2)]


def test_sigkill_of_one_of_two_processes_resumes_to_the_same_rows(kafka, postgres, stream, tmp_path):
    """Two processes, one of them (drawn at random) killed at a random row count (before nine
    tenths of the stream, so that the kill lands however fast the two run): the other stops
    too, with an error; both started again from the recovery store end with the undisturbed
    run's rows."""
    seed, rng = seeded()
    database = new_database(postgres)
    recovery = new_recovery_store(tmp_path / "recovery", partitions=2)
    command = flead_command("-r", str(recovery), "-s", "1", "-b", "0")
    env = environment("kafka", tmp_path / "out", **stream.settings(kafka, database))
    log = tmp_path / "flead.log"
    kill = Kill(at_rows=rng.randrange(stream.rows * 9 // 10))
    victim_index = rng.randrange(2)

    processes = start_two_processes(command, env, log)
    landed = kill_at(processes, kill, victim=processes[victim_index])
    context = f"seed {seed}, process {victim_index} killed: {kill}"
    assert landed, f"the run ended before the kill: {context}"
    survivor = processes[1 - victim_index]
    try:
        survivor.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        survivor.kill()
        survivor.wait()
        pytest.fail(f"the other process went on for 60 s without its peer: {context}")
    assert survivor.returncode != 0, f"the other process ended as if nothing had happened: {context}"

    for process in start_two_processes(command, env, log):
        process.communicate(timeout=300)
        assert process.returncode == 0, log.read_text()[-3000:]
    assert differences(table_rows(database), stream.reference) == {}, f"{context}; log: {log}"
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert_each_version_once(database, stream, context, summary)
    assert summary["rows_read"] == summary["rows_processed"] == stream.rows, context


def split_sample(nab_sample: Path, folder: Path) -> tuple[Path, Path]:
    """The sample's first series in one folder, the other two in another (device ids kept)."""
    files = sorted(nab_sample.rglob("*.csv"))
    parts = (folder / "first", folder / "rest")
    for part, chosen in zip(parts, (files[:1], files[1:]), strict=True):
        for file in chosen:
            target = part / file.relative_to(nab_sample)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, target)
    return parts


def live_run(topics: dict[str, str], out: Path, log: Path) -> subprocess.Popen[str]:
    """The dataflow following the topics as they grow (until it is stopped), progress every 0.1 s."""
    env = environment("kafka", out, FLEAD_PROGRESS_SECONDS="0.1", **topics)
    return start(flead_command(), env, log)


def stop(process: subprocess.Popen[str], log: Path) -> dict:
    """SIGTERM, as a process manager stops it: it drains, writes its summary and exits 0."""
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 0, log.read_text()[-3000:]
    return orjson.loads((log.parent / "out" / "summary.json").read_bytes())


def outputs_match_tables(kafka: KafkaServer, topics: dict[str, str], database: str, summary: dict) -> None:
    """Each result topic holds what the summary counted, each message once, and the database
    the same rows, none missing, none twice (the tables' keys would hide a second copy, so
    the counts are compared too)."""
    anomalies = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_ANOMALIES"]))
    updates = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"]))
    models = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_GLOBAL_MODELS"]))
    assert len(anomalies) == sum(summary["anomalies"].values())
    assert len(updates) == summary["local_updates"]
    assert sorted(m["global_version"] for m in models) == list(range(1, summary["global_versions"] + 1))
    with connect(database) as conn:
        in_tables = {
            "anomalies": Counter((a["device_id"], a["timestamp"]) for a in table_anomalies(database)),
            "local_models": Counter(conn.execute("SELECT device_id, model_version FROM local_models").fetchall()),
            "federated_models": Counter(conn.execute("SELECT global_version FROM federated_models").fetchall()),
        }
    on_topics = {
        "anomalies": Counter((a["device_id"], a["timestamp"]) for a in anomalies),
        "local_models": Counter((u["device_id"], u["model_version"]) for u in updates),
        "federated_models": Counter((m["global_version"],) for m in models),
    }
    for table, expected in on_topics.items():
        assert max(expected.values()) == 1, f"a message twice on the {table} topic"
        assert in_tables[table] == expected, f"{table}: the table differs from its topic"


@pytest.fixture
def own_kafka() -> Iterator[KafkaServer]:
    """A broker of the test's own, to restart without disturbing the session's."""
    with KafkaServer() as server:
        yield server


def test_a_broker_restarted_mid_stream_loses_nothing_and_repeats_nothing(
    own_kafka, postgres, nab_sample, replay_reference, tmp_path
):
    """The broker is stopped (SIGTERM) and started again while the producer sends and the
    dataflow reads and writes: every reading is on its topic once and processed once, and the
    results are on their topics and in the database once each, the anomalies those of a replay."""
    reference, reference_anomalies = replay_reference
    kafka = own_kafka
    database = new_database(postgres)
    topics = topics_env(kafka, FLEAD_DATABASE_URL=database)
    log = tmp_path / "flead.log"
    flead = live_run(topics, tmp_path / "out", log)
    progress = Progress([flead])
    producer = subprocess.Popen(
        flead_command(dataflow="dataflows.producer"),
        cwd=REPO,
        env=environment(nab_sample, tmp_path / "producer", FLEAD_RATE="1000", **topics),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    expected_rows = reference["rows_read"] - 3  # the producer skips the 3 invalid rows
    progress.wait_for(2_000)
    assert (progress.read() or 0) < expected_rows, "the stream was over before the restart: the test proves nothing"
    kafka.restart(down_seconds=2)
    _, errors = producer.communicate(timeout=300)
    assert producer.returncode == 0, errors[-3000:]
    progress.wait_for(expected_rows)
    summary = stop(flead, log)

    assert messages_on(kafka.bootstrap, topics["FLEAD_TOPIC_TELEMETRY"]) == expected_rows
    assert (summary["rows_read"], summary["rows_processed"], summary["rows_rejected"]) == (expected_rows,) * 2 + (0,)
    outputs_match_tables(kafka, topics, database, summary)
    assert anomaly_rows_keys(table_anomalies(database)) == reference_anomalies


def table_anomalies(database: str) -> list[dict]:
    with connect(database) as conn:
        return [
            {"device_id": device, "timestamp": iso_timestamp(at.timestamp()), "severity": severity}
            for device, at, severity in conn.execute('SELECT device_id, "timestamp", severity FROM anomalies')
        ]


def test_a_database_down_for_60_seconds_mid_stream_loses_nothing(
    kafka, postgres, nab_sample, replay_reference, tmp_path
):
    """PostgreSQL stops while the dataflow runs; readings keep coming and are processed while it
    is down; it comes back after 60 s, and every row reaches it once."""
    reference, reference_anomalies = replay_reference
    first, rest = split_sample(nab_sample, tmp_path / "input")
    database = new_database(postgres)
    topics = topics_env(kafka, FLEAD_DATABASE_URL=database)
    log = tmp_path / "flead.log"
    flead = live_run(topics, tmp_path / "out", log)
    progress = Progress([flead])
    produce(first, tmp_path / "producer-first", topics)
    progress.wait_for(messages_on(kafka.bootstrap, topics["FLEAD_TOPIC_TELEMETRY"]))

    postgres.stop_server()
    down_since = time.monotonic()
    try:
        produce(rest, tmp_path / "producer-rest", topics)
        expected_rows = reference["rows_read"] - 3  # the producer skips the 3 invalid rows
        progress.wait_for(expected_rows)
        time.sleep(max(0.0, 60 - (time.monotonic() - down_since)))
    finally:
        postgres.start_again()
    summary = stop(flead, log)

    assert "database write failed" in log.read_text(), "the outage was not noticed: the test proved nothing"
    assert (summary["rows_read"], summary["rows_processed"]) == (expected_rows, expected_rows)
    outputs_match_tables(kafka, topics, database, summary)
    assert anomaly_rows_keys(table_anomalies(database)) == reference_anomalies
