"""FLEAD through a real Kafka broker: back-fill throughput, the highest offered rate it keeps
up with, and latency at a fixed offered rate.

Latency is from a reading's produce time (its Kafka timestamp on the telemetry topic) to the
produce time of its anomaly on the ``anomalies`` topic; readings and anomalies are matched by
device and event time. Throughput comes from the dataflow's own ``/metrics``; lag while the
producer runs is the topic's high watermark minus the rows FLEAD has processed.
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


class _Dataflow(subprocess.Popen):
    """A ``bytewax.run`` of ``module``; its standard error goes to a file so that a full pipe never blocks it."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.module = module
        self.error_file = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the process
        super().__init__(
            [sys.executable, "-m", "bytewax.run", module],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.error_file,
            text=True,
        )

    def check(self) -> None:
        """Raise, with the end of its standard error, if it has exited with an error."""
        if self.poll():
            self.error_file.seek(0)
            raise RuntimeError(f"{self.module} exited with {self.returncode}: {self.error_file.read()[-2000:]}")


def _run_to_end(module: str, env: dict[str, str]) -> None:
    dataflow = _Dataflow(module, env)
    dataflow.wait()
    dataflow.check()


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
    return sum(value for name, value in metrics.items() if name.startswith("flead_kafka_consumer_lag"))


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


SUSTAIN_PROBES = (1.0, 0.85, 0.7, 0.55)
"""Offered rates tried, as fractions of the back-fill rate, until one is sustained."""


SAMPLE_SECONDS = 0.5


def lag_growth(lags: list[int], every: float) -> float:
    """How fast the lag grew over the second half of production (least squares, messages/s);
    the first half holds the start-up, when the consumer is still joining."""
    tail = lags[len(lags) // 2 :]
    if len(tail) < 2:
        return 0.0
    xs = [i * every for i in range(len(tail))]
    x_mean, y_mean = sum(xs) / len(xs), sum(tail) / len(tail)
    covariance = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, tail, strict=True))
    return covariance / sum((x - x_mean) ** 2 for x in xs)


def sustained(lags: list[int], rate: float) -> bool:
    """Kept up: over the second half of production the lag grew by less than 2 % of the rate
    per second, and production ended with less than one second of input waiting."""
    return bool(lags) and lag_growth(lags, SAMPLE_SECONDS) < 0.02 * rate and lags[-1] < rate


def _high_watermark(consumer: Consumer, topic: str) -> int:
    """Messages written to ``topic`` so far, over all its partitions."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)


def _start_flead(kafka: KafkaServer, suffix: str, out_dir: str) -> tuple[_Dataflow, int]:
    """FLEAD reading ``telemetry-<suffix>``, with its ``/metrics`` on a free port."""
    port = free_port()
    env = _env(
        kafka,
        suffix,
        FLEAD_INPUT="kafka",
        FLEAD_OUT_DIR=out_dir,
        BYTEWAX_DATAFLOW_API_ENABLED="1",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
    )
    return _Dataflow("dataflows.flead", env), port


def _offer(kafka: KafkaServer, fleet: Path, records: int, rate: float, out_dir: Path) -> dict[str, Any]:
    """FLEAD on fresh topics while the producer offers the fleet at ``rate``.

    Lag is what the producer has written (the topic's high watermark) minus what FLEAD has
    processed (its ``/metrics``), sampled every half second while the producer runs.
    """
    suffix = uuid.uuid4().hex[:6]
    flead, port = _start_flead(kafka, suffix, str(out_dir / suffix))
    while not _metrics(port) and flead.poll() is None:
        time.sleep(0.2)
    flead.check()  # a FLEAD that did not start would read as "processed nothing": not sustained
    topic = f"telemetry-{suffix}"
    producer = subprocess.Popen(
        [sys.executable, "-m", "bench.paced_producer", str(fleet), topic, kafka.bootstrap, f"{rate:.0f}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    lags: list[int] = []
    first_written = None
    watermarks = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    while producer.poll() is None:
        time.sleep(SAMPLE_SECONDS)
        written = _high_watermark(watermarks, topic)
        if first_written is None and written:
            first_written = (time.monotonic(), written)
        flead.check()
        lags.append(int(written - _processed(_metrics(port))))
    production_end = time.monotonic()
    written = _high_watermark(watermarks, topic)
    watermarks.close()
    achieved = (written - first_written[1]) / (production_end - first_written[0]) if first_written else 0.0
    produced_output = producer.stdout.read() if producer.stdout else ""
    deadline = time.monotonic() + 60
    while _processed(_metrics(port)) < records and time.monotonic() < deadline:
        time.sleep(0.2)
    final_lag = _lag(_metrics(port))
    flead.terminate()
    flead.wait(30)
    return {
        "offered_rate": rate,
        "achieved_rate": achieved,
        "producer": produced_output.strip().splitlines()[-1] if produced_output.strip() else "",
        "lag_samples": lags,
        "lag_at_end_of_production": lags[-1] if lags else 0,
        "lag_growth_per_second": lag_growth(lags, SAMPLE_SECONDS),
        "sustained": sustained(lags, achieved),
        "final_lag": int(final_lag),
        "topics": suffix,
    }


def _backfill(kafka: KafkaServer, fleet: Path, records: int, out: str, progress: Callable[[str], None]) -> float:
    suffix = uuid.uuid4().hex[:6]
    progress("kafka: producing the fleet for the back-fill")
    _run_to_end("dataflows.producer", _env(kafka, suffix, FLEAD_INPUT=str(fleet), FLEAD_OUT_DIR=out))
    progress("kafka: back-fill")
    flead, port = _start_flead(kafka, suffix, out)
    first = done = None
    while done is None and flead.poll() is None:
        processed = _processed(_metrics(port))
        now = time.monotonic()
        if first is None and processed > 0:
            first = (now, processed)
        if processed >= records:
            done = now
        time.sleep(0.1)
    flead.check()
    flead.terminate()
    flead.wait(30)
    if first is None or done is None:
        raise RuntimeError("the back-fill did not finish")
    return (records - first[1]) / (done - first[0])


def _summary(probe: dict[str, Any]) -> dict[str, Any]:
    summary = {name: value for name, value in probe.items() if name != "lag_samples"}
    return summary | {"max_lag": max(probe["lag_samples"], default=0)}


def measure_kafka(fleet: Path, records: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Back-fill rate; the highest offered rate FLEAD keeps up with (trying fractions of the
    back-fill rate from the top); latency at half of that rate."""
    with KafkaServer() as kafka, tempfile.TemporaryDirectory() as out:
        out_dir = Path(out)
        backfill = _backfill(kafka, fleet, records, out, progress)
        probes = []
        for fraction in SUSTAIN_PROBES:
            rate = backfill * fraction
            progress(f"kafka: offering {rate:,.0f} msg/s ({fraction:.0%} of the back-fill rate)")
            probe = _offer(kafka, fleet, records, rate, out_dir)
            progress(f"kafka: lag at the end of production {probe['lag_at_end_of_production']:,} messages")
            probes.append(probe)
            if probe["sustained"]:
                break
        # What the producer managed, not what it was asked for: on a small machine it shares the
        # cores with FLEAD and may fall short of the offered rate.
        sustained = max((p["achieved_rate"] for p in probes if p["sustained"]), default=None)
        rate = (sustained or backfill * SUSTAIN_PROBES[-1]) / 2
        progress(f"kafka: latency at {rate:,.0f} msg/s offered")
        live = _offer(kafka, fleet, records, rate, out_dir)
        readings = _produce_times(
            kafka.bootstrap, f"telemetry-{live['topics']}", lambda m: (m["device_id"], m["timestamp"])
        )
        anomalies = _produce_times(
            kafka.bootstrap, f"anomalies-{live['topics']}", lambda m: (m["device_id"], m["timestamp"])
        )
    latencies = sorted(
        (produced_at - readings[key]) * 1000 for key, produced_at in anomalies.items() if key in readings
    )
    return {
        "backfill_records_per_second": backfill,
        "sustained_records_per_second": sustained,
        "sustain_probes": [_summary(probe) for probe in probes],
        "offered_rate": rate,
        "producer": live["producer"],
        "anomalies_measured": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_lag_at_latency_rate": max(live["lag_samples"], default=0),
        "final_lag": live["final_lag"],
    }
