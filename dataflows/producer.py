"""Replays any input the replay mode accepts into the telemetry topic, at a chosen rate.

    FLEAD_KAFKA_BROKERS=127.0.0.1:9092 FLEAD_RATE=500 python -m bytewax.run dataflows.producer

Messages are keyed by device id, in timestamp order, in the schema of ``design.md``.
``FLEAD_RATE`` is messages per second (0 = as fast as possible); ``FLEAD_LOOP=true`` starts
again at the end, shifted in time so that event time keeps moving forward. Rows the replay
would reject are counted and skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulBatchLogic

from dataflows import stopping
from dataflows.config import ConfigError, Settings, start_or_exit
from dataflows.kafka_admin import check_brokers, ensure_topics
from dataflows.replay_files import read_replay
from operators.compact_json import dumps
from operators.messages import SINGLE_FIELD, MessageLimits, Telemetry, iso_timestamp
from sinks.console import ReportSink
from sinks.kafka import KafkaRecord, KafkaTopicsSink


def telemetry_message(reading: Telemetry, time_shift: float = 0.0) -> bytes:
    """A reading as the JSON message the dataflow reads."""
    values = reading.values
    data: Any = values[SINGLE_FIELD] if len(values) == 1 and SINGLE_FIELD in values else values
    message: dict[str, Any] = {
        "device_id": reading.device_id,
        "timestamp": iso_timestamp(reading.timestamp + time_shift),
        "data": data,
    }
    if reading.label is not None:
        message["label"] = reading.label
    return dumps(message)


@dataclass
class Produced:
    """What one batch of the source did: messages sent, rows skipped as invalid, loops finished."""

    sent: int
    skipped: int
    loops: int


@dataclass
class _Position:
    loop: int = 0
    rows: int = 0


class _ReplayToTopic(StatefulSourcePartition[list[KafkaRecord] | Produced, tuple[int, int]]):
    def __init__(
        self,
        path: Path,
        limits: MessageLimits,
        topic: str,
        rate: float,
        loop: bool,
        batch_size: int,
        resume: tuple[int, int] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (seconds, only its differences count) paces the rate."""
        self._clock = clock
        self._path, self._limits, self._topic = path, limits, topic
        self._rate, self._loop, self._batch_size = rate, loop, batch_size
        self._position = _Position(*resume) if resume else _Position()
        self._span = self._time_span() if loop else 0.0
        self._rows = self._open()
        self._started = clock()
        self._sent_since_start = 0

    def _time_span(self) -> float:
        """How far each loop shifts event time: the input's time span plus one median step."""
        stamps = [r.timestamp for r in read_replay(self._path, self._limits) if isinstance(r, Telemetry)]
        if not stamps:
            raise ConfigError(f"FLEAD_INPUT={str(self._path)!r} holds no valid rows to produce")
        return max(stamps) - min(stamps) + 1.0

    def _open(self):
        rows = read_replay(self._path, self._limits)
        return islice(rows, self._position.rows, None)

    def next_batch(self) -> list[list[KafkaRecord] | Produced]:
        if stopping.requested():
            raise StopIteration
        allowed = self._batch_size
        if self._rate:
            due = int((self._clock() - self._started) * self._rate) - self._sent_since_start
            allowed = min(allowed, due)
            if allowed <= 0:
                return []
        batch: list[KafkaRecord] = []
        skipped = loops = 0
        shift = self._position.loop * self._span
        for record in islice(self._rows, allowed):
            self._position.rows += 1
            if isinstance(record, Telemetry):
                batch.append((self._topic, record.device_id.encode(), telemetry_message(record, shift)))
            else:
                skipped += 1
        if not batch and not skipped:
            if not self._loop:
                raise StopIteration
            self._position = _Position(self._position.loop + 1, 0)
            self._rows = self._open()
            loops = 1
        self._sent_since_start += len(batch)
        return [batch, Produced(len(batch), skipped, loops)]

    def next_awake(self) -> datetime | None:
        if not self._rate:
            return None
        return datetime.now(UTC) + timedelta(seconds=min(0.05, self._batch_size / self._rate))

    def snapshot(self) -> tuple[int, int]:
        return self._position.loop, self._position.rows


class ReplayToTopicSource(FixedPartitionedSource[list[KafkaRecord] | Produced, tuple[int, int]]):
    """One partition keeps the replay in one global time order."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def list_parts(self) -> list[str]:
        return ["producer"]

    def build_part(self, step_id: str, for_part: str, resume_state: tuple[int, int] | None) -> _ReplayToTopic:
        s = self._settings
        return _ReplayToTopic(
            s.input_path, s.limits, s.kafka.telemetry_topic, s.rate, s.loop, s.batch_size, resume_state
        )


class ProducerProgress(StatefulBatchLogic[Produced, tuple[str, Any], dict[str, int]]):
    """Counts what was produced: a progress line every few seconds, the final count at the end."""

    def __init__(self, totals: dict[str, int], progress_seconds: float, topic: str) -> None:
        self.totals = totals
        self.progress_seconds = progress_seconds
        self.topic = topic
        self.started = time.monotonic()
        self.next_progress = time.monotonic() + progress_seconds if progress_seconds else None

    def on_batch(self, values: list[Produced]) -> tuple[list[tuple[str, Any]], bool]:
        for produced in values:
            self.totals["sent"] += produced.sent
            self.totals["skipped"] += produced.skipped
            self.totals["loops"] += produced.loops
        return [], StatefulBatchLogic.RETAIN

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        sent = self.totals["sent"]
        return (
            f"produced {sent:,} messages to {self.topic} in {elapsed:,.1f} s ({sent / max(elapsed, 1e-9):,.0f}/s)"
            f" · skipped {self.totals['skipped']:,} invalid rows · loops {self.totals['loops']}"
        )

    def notify_at(self) -> datetime | None:
        if self.next_progress is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(0.0, self.next_progress - time.monotonic()))

    def on_notify(self) -> tuple[list[tuple[str, Any]], bool]:
        self.next_progress = time.monotonic() + self.progress_seconds
        return [("progress", self._line())], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[str, Any]], bool]:
        return [("progress", f"done: {self._line()}")], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, int]:
        return self.totals


def build_producer(settings: Settings) -> Dataflow:
    if settings.kafka is None:
        raise ConfigError("the producer needs FLEAD_KAFKA_BROKERS (host:port,...)")
    if settings.reads_kafka:
        raise ConfigError("FLEAD_INPUT must be a file or directory to replay, not kafka")
    flow = Dataflow("flead_producer")
    items = op.input("replay", flow, ReplayToTopicSource(settings))
    records = op.filter("records", items, lambda item: isinstance(item, list))
    produced = op.filter("produced", items, lambda item: isinstance(item, Produced))
    op.output("topic", records, KafkaTopicsSink(settings.kafka.client_config(), stop_on_loss=True))

    def progress(resume: dict[str, int] | None) -> ProducerProgress:
        totals = resume if resume is not None else {"sent": 0, "skipped": 0, "loops": 0}
        return ProducerProgress(totals, settings.progress_seconds, settings.kafka.telemetry_topic)

    reports = op.key_rm(
        "reports", op.stateful_batch("progress", op.key_on("one_key", produced, lambda _: "producer"), progress)
    )
    op.output("console", reports, ReportSink(settings.out_dir / "producer-summary.json"))
    return flow


def checked_producer(settings: Settings) -> Dataflow:
    flow = build_producer(settings)
    ensure_topics(settings.kafka, check_brokers(settings.kafka))
    stopping.install()
    return flow


def __getattr__(name: str) -> Dataflow:
    """``flow`` is built on first access, so importing this module reads no settings."""
    if name != "flow":
        raise AttributeError(name)
    return start_or_exit(checked_producer)
