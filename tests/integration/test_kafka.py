"""FLEAD against a real Kafka broker: producer → topic → dataflow → topics, and the failure modes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from dataflows.config import KafkaSettings
from dataflows.kafka_admin import check_brokers, ensure_topics, newest_global_model
from deploy.local.servers import KafkaServer, free_port
from tests.flead_runs import REPO, anomaly_rows_keys, comparable, environment, flead_command

pytestmark = pytest.mark.integration


def topics_env(kafka: KafkaServer, **extra: str) -> dict[str, str]:
    """Fresh topic names per test, so tests sharing the broker never see each other's data."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "FLEAD_KAFKA_BROKERS": kafka.bootstrap,
        "FLEAD_TOPIC_TELEMETRY": f"edge-iiot-stream-{suffix}",
        "FLEAD_TOPIC_ANOMALIES": f"anomalies-{suffix}",
        "FLEAD_TOPIC_LOCAL_UPDATES": f"local-model-updates-{suffix}",
        "FLEAD_TOPIC_GLOBAL_MODELS": f"global-model-updates-{suffix}",
        "FLEAD_TOPIC_DEAD_LETTERS": f"dead-letters-{suffix}",
        "FLEAD_KAFKA_IDLE_SECONDS": "3",
        **extra,
    }


def run_producer(input_path: Path, out_dir: Path, topics: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flead_command(dataflow="dataflows.producer"),
        cwd=REPO,
        env=environment(input_path, out_dir, **topics),
        capture_output=True,
        text=True,
        timeout=300,
    )


def produce(input_path: Path, out_dir: Path, topics: dict[str, str]) -> str:
    result = run_producer(input_path, out_dir, topics)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_from_kafka(out_dir: Path, topics: dict[str, str], *args: str) -> dict:
    return run_from_kafka_logged(out_dir, topics, *args)[0]


def run_from_kafka_logged(out_dir: Path, topics: dict[str, str], *args: str) -> tuple[dict, str]:
    """The summary of a run that reads the topics to their end, and what it logged."""
    env = environment("kafka", out_dir, FLEAD_KAFKA_TAIL="false", **topics)
    result = subprocess.run(flead_command(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return orjson.loads((out_dir / "summary.json").read_bytes()), result.stderr


def consume(bootstrap: str, topic: str, timeout: float = 60.0) -> list:
    """Every message on ``topic`` when called: each partition read from its start up to the end
    it had then (its high watermark), however long the first message takes, for up to
    ``timeout`` seconds. Called once whatever writes the topic is done."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        bounds = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        position = {p: low for p, (low, high) in bounds.items() if high > low}
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in position.items()])
        messages = []
        deadline = time.monotonic() + timeout
        while any(position[p] < bounds[p][1] for p in position):
            assert time.monotonic() < deadline, f"{topic}: read up to {position} of {bounds} in {timeout:g} s"
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            messages.append(message)
            position[message.partition()] = message.offset() + 1
    finally:
        consumer.close()
    return messages


def messages_on(bootstrap: str, topic: str, partition: int | None = None) -> int:
    """Messages on ``topic`` now, over all its partitions or on one (from their watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4()}"})
    try:
        partitions = (
            consumer.list_topics(topic, timeout=10).topics[topic].partitions if partition is None else [partition]
        )
        watermarks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions]
    finally:
        consumer.close()
    return sum(high - low for low, high in watermarks)


def rows(messages: list) -> list[dict]:
    return [orjson.loads(message.value()) for message in messages]


def test_producer_to_dataflow_to_topics_and_tables_matches_replay(
    kafka, database, nab_sample, replay_reference, tmp_path
):
    reference, reference_anomalies = replay_reference
    topics = topics_env(kafka)
    printed = produce(nab_sample, tmp_path / "producer", topics)
    assert "done: produced 9,946 messages" in printed  # 9,949 rows less the 3 invalid ones
    assert "skipped 3 invalid rows" in printed

    summary = run_from_kafka(tmp_path / "flead", {**topics, "FLEAD_DATABASE_URL": database})
    assert summary["rows_processed"] == reference["rows_processed"]
    assert summary["local_updates"] == reference["local_updates"]
    assert summary["global_versions"] == reference["global_versions"]

    anomalies = consume(kafka.bootstrap, topics["FLEAD_TOPIC_ANOMALIES"])
    assert anomaly_rows_keys(rows(anomalies)) == reference_anomalies
    assert all(m.key().decode() == orjson.loads(m.value())["device_id"] for m in anomalies)

    updates = consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"])
    assert len(updates) == reference["local_updates"]
    assert all(m.key().decode() == orjson.loads(m.value())["device_id"] for m in updates)
    models = consume(kafka.bootstrap, topics["FLEAD_TOPIC_GLOBAL_MODELS"])
    assert sorted(int(m.key()) for m in models) == list(range(1, reference["global_versions"] + 1))

    with psycopg.connect(database) as conn:
        table_anomalies = conn.execute(
            "SELECT device_id, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), severity"
            " FROM anomalies"
        ).fetchall()
        local_models = conn.execute("SELECT count(*) FROM local_models").fetchone()[0]
        global_versions = conn.execute("SELECT max(global_version) FROM federated_models").fetchone()[0]
    assert Counter(tuple(row) for row in table_anomalies) == reference_anomalies
    assert local_models == reference["local_updates"]
    assert global_versions == reference["global_versions"]


def test_global_models_return_to_the_devices_through_their_topic(kafka, nab_sample, tmp_path):
    topics = topics_env(kafka)
    produce(nab_sample, tmp_path / "producer", topics)
    run_from_kafka(tmp_path / "flead", topics)
    updates = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_LOCAL_UPDATES"]))
    models = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_GLOBAL_MODELS"]))
    first_global = min(m["created_at"] for m in models)
    later = [u for u in updates if u["created_at"] > first_global]
    assert later, "no local update after the first global version"
    assert max(u["global_version"] for u in later) >= 1
    # once a device has started from a global model, its later rounds never go back to 0
    for device in {u["device_id"] for u in updates}:
        versions = [u["global_version"] for u in updates if u["device_id"] == device]
        assert versions == sorted(versions)


def run_from_kafka_scraped(out_dir: Path, topics: dict[str, str], *args: str) -> tuple[dict, dict[str, float]]:
    """The summary of a run that reads the topics to their end, and the last scrape of its
    ``/metrics`` (scraped all along: the run ends ``FLEAD_KAFKA_IDLE_SECONDS`` after its input)."""
    port = free_port()
    env = environment(
        "kafka",
        out_dir,
        FLEAD_KAFKA_TAIL="false",
        BYTEWAX_DATAFLOW_API_ENABLED="1",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
        **topics,
    )
    errors = out_dir.parent / f"{out_dir.name}.log"
    with errors.open("w") as error_file:
        process = subprocess.Popen(
            flead_command(*args), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=error_file
        )
    metrics: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    metrics = parse_metrics(response.read().decode())
            except OSError:
                pass
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == 0, errors.read_text()[-3000:]
    return orjson.loads((out_dir / "summary.json").read_bytes()), metrics


def items_per_worker(metrics: dict[str, float], step_id: str) -> dict[int, float]:
    """Items each worker's ``step_id`` emitted, from Bytewax's own ``item_out_count``."""
    found = {}
    for name, value in metrics.items():
        if name.startswith("bytewax_item_out_count_total{") and f'step_id="{step_id}"' in name:
            found[int(re.search(r'worker_index="(\d+)"', name).group(1))] = value
    return found


def test_four_partitions_are_read_by_two_workers(kafka, nab_sample, replay_reference, tmp_path):
    """Bytewax gives each of the two workers two of the four partitions; each worker's
    telemetry input emits what it reads (its ``item_out_count``: readings, plus one progress
    item per batch), so both counts are above 0 only if both workers read."""
    reference, reference_anomalies = replay_reference
    topics = topics_env(kafka)
    telemetry = topics["FLEAD_TOPIC_TELEMETRY"]
    kafka.create_topic(telemetry, partitions=4)
    produce(nab_sample, tmp_path / "producer", topics)
    per_partition = [messages_on(kafka.bootstrap, telemetry, partition) for partition in range(4)]
    assert sum(per_partition) == 9946 and sorted(per_partition)[-2] > 0, per_partition  # keyed over several

    summary, metrics = run_from_kafka_scraped(tmp_path / "flead", topics, "-w", "2")
    # the producer skipped the 3 invalid rows: the dataflow reads 3 rows fewer and rejects none
    assert (summary["rows_read"], summary["rows_rejected"]) == (9946, 0)
    assert comparable(summary) == comparable(reference) | {"rows_read": reference["rows_read"] - 3, "rows_rejected": 0}
    sent = sum(len(message.value()) for message in consume(kafka.bootstrap, telemetry))
    assert summary["bandwidth"]["reading_bytes"] == sent == metrics['flead_bandwidth_bytes_total{kind="readings"}']
    items = items_per_worker(metrics, "flead.telemetry")
    assert sorted(items) == [0, 1] and min(items.values()) > 0, f"items each worker's input emitted: {items}"
    assert sum(items.values()) >= summary["rows_read"]  # the last scrape came after the whole topic was read
    anomalies = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_ANOMALIES"]))
    assert anomaly_rows_keys(anomalies) == reference_anomalies


def test_invalid_messages_go_to_the_dead_letter_topic_and_table_with_reason_and_offset(kafka, database, tmp_path):
    topics = topics_env(kafka)
    topic = topics["FLEAD_TOPIC_TELEMETRY"]
    kafka.create_topic(topic)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    good = {"device_id": "pump-1", "timestamp": "2024-05-01T00:00:00Z", "data": 1.5}
    for value in [orjson.dumps(good), b"{not json", orjson.dumps({**good, "data": "hot"}), orjson.dumps(good)]:
        producer.produce(topic, value, b"pump-1")
    assert producer.flush(10) == 0

    summary = run_from_kafka(tmp_path, {**topics, "FLEAD_DATABASE_URL": database})
    assert (summary["rows_read"], summary["rows_processed"], summary["rows_rejected"]) == (4, 2, 2)
    with psycopg.connect(database) as conn:
        table = conn.execute("SELECT reason, source FROM dead_letters ORDER BY source").fetchall()
    assert table == [("invalid_json", f"kafka:{topic}:0:1"), ("invalid_value", f"kafka:{topic}:0:2")]
    letters = consume(kafka.bootstrap, topics["FLEAD_TOPIC_DEAD_LETTERS"])
    assert sorted((orjson.loads(m.value())["reason"], m.key().decode()) for m in letters) == [
        ("invalid_json", f"kafka:{topic}:0:1"),
        ("invalid_value", f"kafka:{topic}:0:2"),
    ]
    assert orjson.loads(letters[0].value())["payload"] in ("{not json", orjson.dumps({**good, "data": "hot"}).decode())


def test_an_unreachable_broker_stops_start_up_within_seconds_naming_it(tmp_path):
    brokers = f"127.0.0.1:{free_port()}"
    env = environment(
        "kafka",
        tmp_path,
        FLEAD_KAFKA_BROKERS=brokers,
        FLEAD_KAFKA_CONFIG="client.id=flead-test;sasl.password=hunter2-do-not-print",
    )
    started = time.monotonic()
    result = subprocess.run(flead_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert f"cannot reach the Kafka brokers {brokers}" in result.stderr
    assert elapsed < 20
    assert "hunter2" not in result.stdout + result.stderr


def scrape_kafka_run(kafka, input_path, tmp_path, done) -> tuple[dict[str, float], bool]:
    """Produce ``input_path``, run the dataflow on the topic with its API on, and scrape
    ``/metrics`` until ``done(metrics)``; returns the metrics and whether it was still running."""
    topics = topics_env(kafka)
    produce(input_path, tmp_path / "producer", topics)
    port = free_port()
    env = environment(
        "kafka", tmp_path / "flead", BYTEWAX_DATAFLOW_API_ENABLED="1", BYTEWAX_DATAFLOW_API_PORT=str(port), **topics
    )
    process = subprocess.Popen(flead_command(), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = scrape_until(port, done)
        return metrics, process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_metrics_on_the_dataflow_api_match_the_run(kafka, nab_sample, replay_reference, tmp_path):
    reference, _ = replay_reference

    def done(metrics: dict[str, float]) -> bool:
        # The consumer lag comes from librdkafka's statistics, once a second: a run can
        # process every row before the first of them.
        processed = metrics.get('flead_events_total{outcome="processed"}', 0) >= 9946
        return processed and any(name.startswith("flead_kafka_consumer_lag") for name in metrics)

    metrics, following = scrape_kafka_run(kafka, nab_sample, tmp_path, done)
    assert following, "the dataflow should still be following its topics"
    assert metrics['flead_events_total{outcome="read"}'] == reference["rows_read"] - 3
    assert metrics['flead_events_total{outcome="processed"}'] == reference["rows_processed"]
    for severity in ("warning", "critical"):
        assert metrics[f'flead_anomalies_total{{severity="{severity}"}}'] == reference["anomalies"][severity]
    assert metrics["flead_global_model_version"] >= 1
    assert metrics["flead_event_latency_seconds_count"] == reference["rows_processed"]


def scrape_until(port: int, done, timeout: float = 120.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    metrics: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                metrics = parse_metrics(response.read().decode())
            if done(metrics):
                return metrics
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"metrics never reached the expected values: {metrics}")


def parse_metrics(text: str) -> dict[str, float]:
    metrics = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    return metrics


def test_a_restart_without_recovery_state_goes_on_from_the_newest_global_model(kafka, nab_sample, tmp_path):
    topics = topics_env(kafka)
    produce(nab_sample, tmp_path / "producer", topics)
    first = run_from_kafka(tmp_path / "first", topics)
    models_after_first = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_GLOBAL_MODELS"]))
    newest = max(models_after_first, key=lambda m: m["global_version"])
    assert newest["global_version"] == first["global_versions"] > 0

    second = run_from_kafka(tmp_path / "second", topics)  # no recovery store: reads the telemetry again
    later = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_GLOBAL_MODELS"]))[len(models_after_first) :]
    assert later
    # versions go on after the first run's newest instead of repeating 1, 2, …
    assert [m["global_version"] for m in later] == list(
        range(newest["global_version"] + 1, newest["global_version"] + 1 + len(later))
    )
    assert second["global_versions"] == newest["global_version"] + len(later)  # the newest version made


def first_run_with_recovery(kafka, nab_sample, tmp_path) -> tuple[dict[str, str], list[str], dict]:
    """Topics holding the sample, read to their end by a run with a recovery store: the topics,
    the arguments that resume from that store, and the run's summary."""
    topics = topics_env(kafka)
    produce(nab_sample, tmp_path / "producer", topics)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    resume = ["-r", str(recovery), "-s", "1", "-b", "0"]
    first = run_from_kafka(tmp_path / "first", topics, *resume)
    assert first["rows_read"] == 9946
    return topics, resume, first


def produce_late_readings(bootstrap: str, topic: str, count: int, *extra: bytes) -> None:
    """``count`` valid readings of a new device, then ``extra`` messages as they are."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for minute in range(count):
        reading = {"device_id": "late-pump", "timestamp": f"2025-01-01T00:{minute:02d}:00Z", "data": 1.0 + minute}
        producer.produce(topic, orjson.dumps(reading))
    for message in extra:
        producer.produce(topic, message)
    assert producer.flush(10) == 0


def test_a_restart_with_recovery_state_reads_only_the_messages_it_had_not_read(kafka, nab_sample, tmp_path):
    topics, resume, first = first_run_with_recovery(kafka, nab_sample, tmp_path)
    produce_late_readings(kafka.bootstrap, topics["FLEAD_TOPIC_TELEMETRY"], 50, b"{not json")

    second = run_from_kafka(tmp_path / "second", topics, *resume)
    # the totals resume with the offsets: reading the topic again would count its messages twice
    assert second["rows_read"] == 9946 + 51
    assert second["rows_processed"] == first["rows_processed"] + 50
    assert second["rows_rejected"] == first["rows_rejected"] + 1


def test_a_restart_whose_next_messages_were_deleted_reads_on_from_the_oldest_left_and_says_so(
    kafka, nab_sample, tmp_path
):
    """Retention (here: deleted records) removed messages the recovery state had not read yet."""
    topics, resume, _ = first_run_with_recovery(kafka, nab_sample, tmp_path)
    topic = topics["FLEAD_TOPIC_TELEMETRY"]
    produce_late_readings(kafka.bootstrap, topic, 50)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 9946 + 20)]).values():
        future.result(timeout=30)

    second, logged = run_from_kafka_logged(tmp_path / "second", topics, *resume)
    assert second["rows_read"] == 9946 + 30  # the 30 left, not none (librdkafka's default jumps to the end)
    assert f"{topic} partition 0: offsets 9946 to 9965 are no longer on the topic" in logged


def kafka_settings(kafka: KafkaServer, topics: dict[str, str]) -> KafkaSettings:
    """The Kafka settings of a dataflow with the topics of :func:`topics_env`."""
    return KafkaSettings(
        brokers=(kafka.bootstrap,),
        config={},
        tail=False,
        idle_seconds=3,
        connect_seconds=10,
        telemetry_topic=topics["FLEAD_TOPIC_TELEMETRY"],
        anomalies_topic=topics["FLEAD_TOPIC_ANOMALIES"],
        local_updates_topic=topics["FLEAD_TOPIC_LOCAL_UPDATES"],
        global_models_topic=topics["FLEAD_TOPIC_GLOBAL_MODELS"],
        dead_letters_topic=topics["FLEAD_TOPIC_DEAD_LETTERS"],
    )


def test_start_up_waits_for_the_leader_of_a_global_model_topic_created_a_moment_before(kafka, monkeypatch):
    """Start-up creates missing topics and then reads the newest global model. A partition
    created a moment before may have no leader yet ("Not leader for partition").

    The window is provoked: 20 global-model topics are created in one request, and each is read
    the moment its creation is confirmed, all at once; if no read met the window, up to four
    more tries. Without the wait, 15 to 19 of such 20 reads failed in each try here, and the
    test failed 10 times in 10. (One read at a time after start-up's own creation, as this test
    did before, about 4 % failed: 6 of 150, 2 of 50.) The reads that met a partition without a
    leader are counted on their way to the wait, so the test also fails if the window was never
    hit. A unit test covers the wait itself (tests/dataflow/test_kafka_io.py)."""
    admin_module = sys.modules[newest_global_model.__module__]
    retry = admin_module.retry_until_partitions_ready
    not_ready: list[str] = []

    def counting_retry(read, seconds, pause=0.1):
        def counted_read():
            try:
                return read()
            except KafkaException as exc:
                if exc.args[0].code() in admin_module.PARTITION_NOT_READY:
                    not_ready.append(exc.args[0].name())
                raise

        return retry(counted_read, seconds, pause)

    monkeypatch.setattr(admin_module, "retry_until_partitions_ready", counting_retry)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})  # kept: its futures end with it
    for _ in range(5):  # the window is usually hit at once; each try is another 20 topics
        readers = [kafka_settings(kafka, topics_env(kafka)) for _ in range(20)]
        created = admin.create_topics([NewTopic(reader.global_models_topic, 1, 1) for reader in readers])

        def read_once_created(reader: KafkaSettings, created=created):
            created[reader.global_models_topic].result(30)
            return newest_global_model(reader)

        with ThreadPoolExecutor(len(readers)) as pool:
            assert list(pool.map(read_once_created, readers)) == [None] * len(readers)
        if not_ready:
            break
    assert not_ready, "no read met a partition without a leader in 5 tries: the test proved nothing"

    # start-up's own sequence on fresh topics: it makes all five, then reads the (empty) newest
    settings = kafka_settings(kafka, topics_env(kafka))
    ensure_topics(settings, check_brokers(settings))
    assert newest_global_model(settings) is None
    assert {settings.telemetry_topic, settings.global_models_topic, settings.dead_letters_topic} <= check_brokers(
        settings
    )


def test_a_broker_that_stops_answering_for_a_while_loses_nothing(kafka, nab_sample, replay_reference, tmp_path):
    """The broker hangs (SIGSTOP) for 10 s while the producer writes telemetry and the dataflow
    reads it and writes its results. Once it answers again, every reading is on its topic once
    and processed once, and every anomaly reaches its topic once, as in a replay. (Requests
    that time out during the hang are sent again: only the producers' idempotence keeps a
    retried message from being written twice.)"""
    reference, reference_anomalies = replay_reference
    processed = 'flead_events_total{outcome="processed"}'
    # Produce requests time out well within the hang and are sent again, as over a link that
    # drops: the broker, once it answers, finds both copies of each such request.
    topics = topics_env(kafka, FLEAD_KAFKA_CONFIG="socket.timeout.ms=3000")
    port = free_port()
    env = environment(
        "kafka", tmp_path / "flead", BYTEWAX_DATAFLOW_API_ENABLED="1", BYTEWAX_DATAFLOW_API_PORT=str(port), **topics
    )
    log = tmp_path / "flead.log"  # a file, not a pipe: librdkafka logs every failed connect while the broker hangs
    with log.open("w") as log_file:
        flead = subprocess.Popen(flead_command(), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        scrape_until(port, bool)
        producer = subprocess.Popen(
            flead_command(dataflow="dataflows.producer"),
            cwd=REPO,
            env=environment(nab_sample, tmp_path / "producer", FLEAD_RATE="2000", **topics),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        scrape_until(port, lambda metrics: metrics.get(processed, 0) >= 2000)
        os.kill(kafka.pid, signal.SIGSTOP)
        try:
            time.sleep(10)
            during = scrape_until(port, bool)[processed]
        finally:
            os.kill(kafka.pid, signal.SIGCONT)
        _, errors = producer.communicate(timeout=300)
        assert producer.returncode == 0, errors[-3000:]
        assert during < reference["rows_processed"], "the run did not wait for the broker: the test proved nothing"
        delivered = f'flead_sink_rows_written_total{{sink="kafka",table="{topics["FLEAD_TOPIC_ANOMALIES"]}"}}'
        expected = sum(reference_anomalies.values())
        metrics = scrape_until(
            port,
            lambda metrics: (
                metrics.get(processed, 0) >= reference["rows_processed"] and metrics.get(delivered, 0) >= expected
            ),
        )
        assert metrics[processed] == reference["rows_processed"]
        assert metrics[delivered] == expected  # delivery reports: one per anomaly, even for one written twice
        assert metrics['flead_sink_write_errors_total{sink="kafka"}'] == 0
        assert messages_on(kafka.bootstrap, topics["FLEAD_TOPIC_TELEMETRY"]) == reference["rows_read"] - 3
        anomalies = rows(consume(kafka.bootstrap, topics["FLEAD_TOPIC_ANOMALIES"]))
        assert flead.poll() is None, log.read_text()[-3000:]
    finally:
        flead.terminate()
        flead.wait(timeout=30)
    assert anomaly_rows_keys(anomalies) == reference_anomalies


def test_the_producer_stops_with_an_error_when_the_broker_refuses_its_messages(kafka, nab_sample, tmp_path):
    """A topic that refuses every message (here: larger than it allows). The producer used to
    print "done: produced 9,946 messages" and exit 0 with none of them on the topic."""
    topics = topics_env(kafka)
    topic = topics["FLEAD_TOPIC_TELEMETRY"]
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "64"})])[topic].result(30)
    result = run_producer(nab_sample, tmp_path, topics)
    assert result.returncode != 0
    assert "messages were not delivered to Kafka (first: Broker: Message size too large); stopping" in result.stderr
    assert "done:" not in result.stdout
