"""FLEAD's Prometheus metrics (prefix ``flead_``), served by Bytewax at ``/metrics``.

Bytewax serves prometheus_client's default registry on its dataflow API when
``BYTEWAX_DATAFLOW_API_ENABLED`` is set (port ``BYTEWAX_DATAFLOW_API_PORT``, default 3030,
one port per process). Totals are counted by the one worker that adds up the run (the
summary step), so a sum over processes is the fleet's total; latency is observed where the
readings are processed, in every process.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from operators.evaluation import ConfusionCounts
from operators.fedavg import GlobalModel
from operators.messages import REJECTION_REASONS
from operators.shard import ShardCounters

EVENTS = Counter("flead_events", "Telemetry rows by outcome", ["outcome"])
ANOMALIES = Counter("flead_anomalies", "Flagged readings by severity", ["severity"])
LOCAL_UPDATES = Counter("flead_local_updates", "Local model updates (closed rounds)")
DEAD_LETTERS = Counter("flead_dead_letters", "Rejected input by reason", ["reason"])
GLOBAL_VERSION = Gauge("flead_global_model_version", "Newest global model version")
GLOBAL_ACCURACY = Gauge("flead_global_model_accuracy", "Sample-weighted accuracy of the newest global model")
LIVE_EVALUATION = Gauge(
    "flead_live_evaluation", "Live evaluation of the global models on the labelled stream, so far", ["metric"]
)
LATENCY = Histogram(
    "flead_event_latency_seconds",
    "From a reading entering the dataflow (replay) or its Kafka produce time to its processing in the device stage",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SINK_ROWS_WRITTEN = Counter("flead_sink_rows_written", "Rows a sink wrote", ["sink", "table"])
SINK_WRITE_ERRORS = Counter("flead_sink_write_errors", "Failed writes of a sink", ["sink"])
SINK_RETRIES = Counter("flead_sink_retries", "Retried writes of a sink", ["sink"])
SINK_BUFFERED_ROWS = Gauge("flead_sink_buffered_rows", "Rows waiting in a sink's buffer", ["sink"])
SINK_DROPPED_ROWS = Counter("flead_sink_dropped_rows", "Rows a sink dropped because its buffer was full", ["sink"])


# Every known label value exists from the start, at 0, so that dashboards and alerts see the
# series before the first event (Prometheus cannot tell "none yet" from "not exported").
for _reason in REJECTION_REASONS:
    DEAD_LETTERS.labels(_reason)
for _severity in ("warning", "critical", "suspect"):
    ANOMALIES.labels(_severity)


def initialize_sink(sink: str) -> None:
    """Create a sink's series at 0 when the sink starts."""
    SINK_WRITE_ERRORS.labels(sink)
    SINK_RETRIES.labels(sink)
    SINK_BUFFERED_ROWS.labels(sink)
    SINK_DROPPED_ROWS.labels(sink)


_READ = EVENTS.labels("read")
_PROCESSED = EVENTS.labels("processed")
_REJECTED = EVENTS.labels("rejected")
_EVALUATION = {name: LIVE_EVALUATION.labels(name) for name in ("precision", "recall", "f1")}


def count_read(rows: int) -> None:
    _READ.inc(rows)


def count_rejected(reason: str) -> None:
    _REJECTED.inc()
    DEAD_LETTERS.labels(reason).inc()


def count_shard(counters: ShardCounters) -> None:
    _PROCESSED.inc(counters.processed)
    if counters.local_updates:
        LOCAL_UPDATES.inc(counters.local_updates)
    for severity, n in counters.anomalies.items():
        ANOMALIES.labels(severity).inc(n)


def record_global(model: GlobalModel) -> None:
    GLOBAL_VERSION.set(model.version)
    GLOBAL_ACCURACY.set(model.accuracy)


def record_live_evaluation(total: ConfusionCounts) -> None:
    for name, gauge in _EVALUATION.items():
        gauge.set(getattr(total, name))
