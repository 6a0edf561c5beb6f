"""The edge client: one device trains on its own hardware and sends only what it learned.

    FLEAD_INPUT=readings.csv FLEAD_KAFKA_BROKERS=broker:9092 python -m dataflows.edge
    producer-of-readings | FLEAD_INPUT=- FLEAD_KAFKA_BROKERS=broker:9092 python -m dataflows.edge

    readings (a replay file, or JSON Lines on standard input; never sent anywhere)
      │  parse + validate ──rejected──► counted (a rejected reading is a reading too)
      ▼
    device     the dataflow's device stage (operators/shard.py), the same code and settings:
      │        score, incidents, rounds from the newest global model
      ├─► anomalies ─► FLEAD_TOPIC_ANOMALIES
      └─► local updates, marked "origin": "edge", with the model their round started from
                    ─► FLEAD_TOPIC_LOCAL_UPDATES ─► the dataflow's FedAvg (FLEAD_EDGE_UPDATES=true)
    global models ◄── FLEAD_TOPIC_GLOBAL_MODELS, adopted at the next round's start

It ends with its input, closing its last round, and prints its summary: rows, anomalies,
updates, the bytes it sent, and how they compare with the bytes of the readings they stand
for. ``python -m bytewax.run dataflows.edge`` runs it too.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from dataflows import garbage_collection, stopping
from dataflows.config import ConfigError, Settings, load_settings
from dataflows.kafka_admin import check_brokers, ensure_topics, global_model_of
from dataflows.producer import telemetry_message
from dataflows.replay_files import read_replay
from dataflows.snapshots import Snapshot, thaw
from instrumentation import metrics
from operators.fedavg import GlobalModel, LocalUpdate
from operators.messages import MessageLimits, Rejection, Telemetry, decode_message
from operators.shard import ShardState
from operators.update_validation import edge_update_message
from sinks.console import ReportSink
from sinks.kafka import KafkaRecord, KafkaTopicsSink

STDIN = "-"
EdgeItem = Telemetry | Rejection | GlobalModel


class _StdinLines:
    """Lines of standard input, read by a thread so that waiting for the next one never
    holds up the worker (global models keep arriving).

    The thread reads the file descriptor itself (``os.read``), not ``sys.stdin``: a daemon
    thread waiting inside ``sys.stdin.buffer`` holds its lock, and Python aborts at exit
    ("could not acquire lock for <stdin> at interpreter shutdown") when a signal stops the
    client while the pipe is still open.
    """

    def __init__(self, fd: int = 0) -> None:
        self.lines: queue.Queue[bytes | None] = queue.Queue(maxsize=10_000)
        self.ended = False
        self._fd = fd
        threading.Thread(target=self._read, name="flead-edge-stdin", daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while chunk := os.read(self._fd, 1 << 16):
            *complete, pending = (pending + chunk).split(b"\n")
            for line in complete:
                self.lines.put(line + b"\n")
        if pending:
            self.lines.put(pending)
        self.lines.put(None)

    def take(self, limit: int, limits: MessageLimits, line_number: int) -> tuple[list[Telemetry | Rejection], bool]:
        """Up to ``limit`` lines decoded, and whether the input has ended."""
        records: list[Telemetry | Rejection] = []
        while len(records) < limit and not self.ended:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return records, False
            if line is None:
                self.ended = True
                break
            line_number += 1
            if line.strip():
                record = decode_message(line.rstrip(b"\r\n"), "stdin", limits)
                if type(record) is Rejection:
                    record.source = f"stdin:{line_number}"
                records.append(record)
        return records, self.ended


class _EdgePartition(StatefulSourcePartition[EdgeItem, int]):
    """The device's readings and the global models, in one partition: its state is the count of
    readings emitted (a resumed file skips them; standard input cannot be read again)."""

    def __init__(self, settings: Settings, path: str, resume: int | None) -> None:
        self._rows = resume or 0
        self._batch_size = settings.batch_size
        self._limits = settings.limits
        self._stdin = _StdinLines() if path == STDIN else None
        self._records = None if path == STDIN else read_replay(Path(path), settings.limits)
        if self._records is not None and self._rows:
            for _ in zip(range(self._rows), self._records, strict=False):
                pass
        kafka = settings.kafka
        self._models = Consumer(
            {**kafka.client_config(), "group.id": "flead-edge-global-models", "enable.auto.commit": "false"}
        )
        topic = kafka.global_models_topic
        partitions = self._models.list_topics(topic, timeout=kafka.connect_seconds).topics[topic].partitions or {}
        self._models.assign([TopicPartition(topic, index, OFFSET_BEGINNING) for index in partitions])

    def next_batch(self) -> list[EdgeItem]:
        if stopping.requested():
            raise StopIteration
        models = [m for message in self._models.consume(100, 0) if (m := self._model(message)) is not None]
        if self._stdin is not None:
            records, ended = self._stdin.take(self._batch_size, self._limits, self._rows)
        else:
            records = [record for _, record in zip(range(self._batch_size), self._records, strict=False)]
            ended = not records
        self._rows += len(records)
        if ended and not records:
            raise StopIteration
        return [*models, *records]

    @staticmethod
    def _model(message) -> GlobalModel | None:
        if message.error() is not None:
            return None  # the end of a partition, or an error librdkafka retries
        return global_model_of(message)

    def next_awake(self) -> datetime | None:
        return None if self._stdin is None else datetime.now(UTC) + timedelta(milliseconds=50)

    def snapshot(self) -> int:
        return self._rows

    def close(self) -> None:
        self._models.close()


class EdgeSource(FixedPartitionedSource[EdgeItem, int]):
    def __init__(self, settings: Settings, path: str) -> None:
        self._settings = settings
        self._path = path

    def list_parts(self) -> list[str]:
        return ["edge"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _EdgePartition:
        return _EdgePartition(self._settings, self._path, resume_state)


@dataclass
class EdgeTotals:
    """What the client did, and its bytes: of the readings behind its updates, and on the wire."""

    rows_read: int = 0
    rows_rejected: int = 0
    rows_processed: int = 0
    anomalies: int = 0
    local_updates: int = 0
    global_version: int = 0
    reading_bytes: int = 0
    """The readings behind the updates sent, each as the telemetry message the producer would send."""
    update_bytes: int = 0
    anomaly_bytes: int = 0
    open_round_bytes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        share = 100.0 * self.update_bytes / self.reading_bytes if self.reading_bytes else 0.0
        return {
            "rows_read": self.rows_read,
            "rows_processed": self.rows_processed,
            "rows_rejected": self.rows_rejected,
            "anomalies": self.anomalies,
            "local_updates": self.local_updates,
            "global_version": self.global_version,
            "bytes_sent": {"updates": self.update_bytes, "anomalies": self.anomaly_bytes},
            "reading_bytes_behind_updates": self.reading_bytes,
            "bandwidth": f"updates are {share:.1f} % of the readings they stand for ({100 - share:.1f} % saved)",
        }


class EdgeDevice(StatefulBatchLogic[EdgeItem, tuple[str, Any], Any]):
    """The device stage of the dataflow (one :class:`ShardState`) on the client's own readings;
    its outputs are Kafka records, and at the end its summary."""

    def __init__(self, settings: Settings, state: ShardState, totals: EdgeTotals) -> None:
        kafka = settings.kafka
        self.anomalies_topic = kafka.anomalies_topic
        self.updates_topic = kafka.local_updates_topic
        self.state = state
        self.totals = totals

    def on_batch(self, values: list[EdgeItem]) -> tuple[list[tuple[str, Any]], bool]:
        records: list[KafkaRecord] = []
        totals = self.totals
        now = time.time()
        for item in values:
            if type(item) is Rejection:
                totals.rows_read += 1
                totals.rows_rejected += 1
                continue
            result = self.state.process([item], now)
            if type(item) is Telemetry:
                totals.rows_read += 1
                size = len(telemetry_message(item))
                totals.open_round_bytes[item.device_id] = totals.open_round_bytes.get(item.device_id, 0) + size
            else:
                totals.global_version = self.state.global_version
            totals.rows_processed += result.counters.processed
            for detection in result.anomalies:
                value = orjson.dumps(detection.anomaly_row())
                totals.anomalies += 1
                totals.anomaly_bytes += len(value)
                metrics.count_bandwidth("anomalies", len(value))
                records.append((self.anomalies_topic, detection.reading.device_id.encode(), value))
            records.extend(self._sent(result.updates))
        return ([("records", records)] if records else []), StatefulBatchLogic.RETAIN

    def _sent(self, updates: list[LocalUpdate]) -> list[KafkaRecord]:
        totals = self.totals
        records = []
        for update in updates:
            value = edge_update_message(update)
            readings = totals.open_round_bytes.pop(update.device_id, 0)
            totals.local_updates += 1
            totals.update_bytes += len(value)
            totals.reading_bytes += readings
            metrics.count_bandwidth("readings", readings)
            metrics.count_bandwidth("updates", len(value))
            records.append((self.updates_topic, update.device_id.encode(), value))
        return records

    def on_eof(self) -> tuple[list[tuple[str, Any]], bool]:
        if stopping.requested():  # not the end of the input: the round stays open for a resume
            return [
                ("summary", {**self.totals.summary(), "stopped_by": stopping.stopped_by()})
            ], StatefulBatchLogic.RETAIN
        records = self._sent(self.state.finish().updates)
        out: list[tuple[str, Any]] = [("records", records)] if records else []
        return [*out, ("summary", self.totals.summary())], StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot:
        return Snapshot((self.state, self.totals))


def build_edge(settings: Settings, path: str) -> Dataflow:
    """The client's dataflow; ``path`` is a replay file (or directory), or ``-`` for standard input."""
    flow = Dataflow("flead_edge")
    items = op.input("edge_input", flow, EdgeSource(settings, path))

    def device(resume: Any) -> EdgeDevice:
        if resume is not None:
            state, totals = thaw(resume, "edge")
        else:
            state = ShardState(settings.detection, False, settings.limits, 0, settings.device_limits)
            totals = EdgeTotals()
        return EdgeDevice(settings, state, totals)

    out = op.key_rm("edge_out", op.stateful_batch("device", op.key_on("edge_key", items, lambda _: "edge"), device))
    records = op.filter_map("records", out, lambda item: item[1] if item[0] == "records" else None)
    op.output("kafka", records, KafkaTopicsSink(settings.kafka.client_config(), stop_on_loss=True))
    summary = op.filter("summary", out, lambda item: item[0] == "summary")
    op.output("console", summary, ReportSink(settings.out_dir / "edge-summary.json"))
    return flow


def edge_settings() -> tuple[Settings, str]:
    """The settings, and what to read: ``FLEAD_INPUT`` (``-``: standard input)."""
    environ = dict(os.environ)
    path = environ.get("FLEAD_INPUT", "")
    if path == STDIN:
        environ["FLEAD_INPUT"] = "kafka"  # checked as needing brokers, which the client needs anyway
    settings = load_settings(environ)
    if settings.kafka is None:
        raise ConfigError("the edge client needs FLEAD_KAFKA_BROKERS (host:port,...)")
    if settings.reads_kafka and path != STDIN:
        raise ConfigError("FLEAD_INPUT must be the device's readings (a file, or - for standard input), not kafka")
    return settings, path or str(settings.input_path)


def checked_edge(_: Settings | None = None) -> Dataflow:
    settings, path = edge_settings()
    ensure_topics(settings.kafka, check_brokers(settings.kafka))
    flow = build_edge(settings, path)
    stopping.install()
    garbage_collection.collect_less_often()
    return flow


def _start() -> Dataflow:
    import logging

    logging.basicConfig(level=logging.INFO, format="flead: %(name)s: %(message)s")
    try:
        return checked_edge()
    except ConfigError as exc:
        sys.exit(f"flead: bad setting: {exc}")
    except RuntimeError as exc:
        sys.exit(f"flead: cannot start: {exc}")


def __getattr__(name: str) -> Dataflow:
    """``flow`` is built on first access, so importing this module reads no settings."""
    if name != "flow":
        raise AttributeError(name)
    return _start()


if __name__ == "__main__":
    from bytewax.run import cli_main

    cli_main(_start())
