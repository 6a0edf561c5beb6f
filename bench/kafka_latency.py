"""FLEAD through a real Kafka broker: back-fill throughput, and latency at a fixed offered rate.

Latency is from a reading's produce time (its Kafka timestamp on the telemetry topic) to the
produce time of its anomaly on the ``anomalies`` topic; readings and anomalies are matched by
device and event time. Throughput and lag come from the dataflow's own ``/metrics``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from deploy.local.servers import KafkaServer, free_port

REPO = Path(__file__).resolve().parents[1]


def _env(kafka: KafkaServer, suffix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
    env.update(
        FLEAD_KAFKA_BROKERS=kafka.bootstrap,
        FLEAD_TOPIC_TELEMETRY=f"telemetry-{suffix}",
        FLEAD_TOPIC_ANOMALIES=f"anomalies-{suffix}",
        FLEAD_TOPIC_LOCAL_UPDATES=f"updates-{suffix}",
        FLEAD_TOPIC_GLOBAL_MODELS=f"models-{suffix}",
        FLEAD_TOPIC_DEAD_LETTERS=f"dead-{suffix}",
        FLEAD_PROGRESS_SECONDS="0",
        **extra,
    )
    return env


def _bytewax(module: str, env: dict[str, str], wait: bool = True, output: bool = False) -> subprocess.Popen:
    """Runs a dataflow; its standard error goes to a file so that a full pipe never blocks it."""
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", module],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE if output else subprocess.DEVNULL,
        stderr=errors,
        text=True,
    )
    if wait and process.wait() != 0:
        errors.seek(0)
        raise RuntimeError(f"{module} failed: {errors.read()[-2000:]}")
    return process


def _metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _processed(metrics: dict[str, float]) -> float:
    return metrics.get('flead_events_total{outcome="processed"}', 0.0)


def _lag(metrics: dict[str, float]) -> float:
    return sum(value for name, value in metrics.items() if name.startswith("bytewax_kafka_consumer_lag"))


def _produce_times(bootstrap: str, topic: str, key: Callable[[dict], Any]) -> dict[Any, float]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    times: dict[Any, float] = {}
    last = time.monotonic()
    while time.monotonic() - last < 3:
        for message in consumer.consume(10_000, 0.5):
            if message.error() is None:
                times[key(orjson.loads(message.value()))] = message.timestamp()[1] / 1000.0
                last = time.monotonic()
    consumer.close()
    return times


def measure_kafka(fleet: Path, records: int, progress: Callable[[str], None]) -> dict[str, Any]:
    with KafkaServer() as kafka, tempfile.TemporaryDirectory() as out:
        out_dir = Path(out)
        suffix = uuid.uuid4().hex[:6]
        progress("kafka: producing the fleet for the back-fill")
        _bytewax("dataflows.producer", _env(kafka, suffix, FLEAD_INPUT=str(fleet), FLEAD_OUT_DIR=out))
        port = free_port()
        progress("kafka: back-fill")
        flead = _bytewax(
            "dataflows.flead",
            _env(
                kafka,
                suffix,
                FLEAD_INPUT="kafka",
                FLEAD_OUT_DIR=out,
                BYTEWAX_DATAFLOW_API_ENABLED="1",
                BYTEWAX_DATAFLOW_API_PORT=str(port),
            ),
            wait=False,
        )
        first = done = None
        while done is None and flead.poll() is None:
            processed = _processed(_metrics(port))
            now = time.monotonic()
            if first is None and processed > 0:
                first = (now, processed)
            if processed >= records:
                done = now
            time.sleep(0.1)
        flead.terminate()
        flead.wait(30)
        if first is None or done is None:
            raise RuntimeError("the back-fill did not finish")
        backfill = (records - first[1]) / (done - first[0])

        rate = backfill / 2
        suffix = uuid.uuid4().hex[:6]
        port = free_port()
        progress(f"kafka: latency at {rate:,.0f} msg/s offered")
        live_env = _env(
            kafka,
            suffix,
            FLEAD_INPUT="kafka",
            FLEAD_OUT_DIR=str(out_dir / "live"),
            BYTEWAX_DATAFLOW_API_ENABLED="1",
            BYTEWAX_DATAFLOW_API_PORT=str(port),
        )
        flead = _bytewax("dataflows.flead", live_env, wait=False)
        while not _metrics(port) and flead.poll() is None:
            time.sleep(0.2)
        produced = _bytewax(
            "dataflows.producer",
            _env(kafka, suffix, FLEAD_INPUT=str(fleet), FLEAD_OUT_DIR=out, FLEAD_RATE=f"{rate:.0f}"),
            wait=False,
            output=True,
        )
        produced_output, _ = produced.communicate(timeout=3600)
        deadline = time.monotonic() + 60
        while _processed(_metrics(port)) < records and time.monotonic() < deadline:
            time.sleep(0.2)
        final_lag = _lag(_metrics(port))
        flead.terminate()
        flead.wait(30)
        readings = _produce_times(kafka.bootstrap, f"telemetry-{suffix}", lambda m: (m["device_id"], m["timestamp"]))
        anomalies = _produce_times(kafka.bootstrap, f"anomalies-{suffix}", lambda m: (m["device_id"], m["timestamp"]))
    latencies = sorted(
        (produced_at - readings[key]) * 1000 for key, produced_at in anomalies.items() if key in readings
    )
    return {
        "backfill_records_per_second": backfill,
        "offered_rate": rate,
        "producer": produced_output.strip().splitlines()[-1] if produced_output.strip() else "",
        "anomalies_measured": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "final_lag": int(final_lag),
    }
