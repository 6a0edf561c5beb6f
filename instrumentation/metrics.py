"""FLEAD's Prometheus metrics (prefix ``flead_``), served by Bytewax at ``/metrics``.

Bytewax serves prometheus_client's default registry on its dataflow API when
``BYTEWAX_DATAFLOW_API_ENABLED`` is set (port ``BYTEWAX_DATAFLOW_API_PORT``, default 3030,
one port per process). Totals are counted by the one worker that adds up the run (the
summary step), so a sum over processes is the fleet's total; latency is observed where the
readings are processed, in every process.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from operators.alerts import HELD_BACK_REASONS
from operators.evaluation import ConfusionCounts
from operators.fedavg import GlobalModel
from operators.messages import REJECTION_REASONS
from operators.run_totals import SourceProgress
from operators.shard import ShardCounters

EVENTS = Counter("flead_events", "Telemetry rows by outcome", ["outcome"])
ANOMALIES = Counter("flead_anomalies", "Flagged readings by severity", ["severity"])
LOCAL_UPDATES = Counter("flead_local_updates", "Local model updates (closed rounds)")
DEAD_LETTERS = Counter("flead_dead_letters", "Rejected input by reason", ["reason"])
GLOBAL_VERSION = Gauge("flead_global_model_version", "Newest global model version")
GLOBAL_ACCURACY = Gauge("flead_global_model_accuracy", "Sample-weighted accuracy of the newest global model")
KAFKA_CONSUMER_LAG = Gauge(
    "flead_kafka_consumer_lag", "Telemetry messages on the topic not read yet", ["topic", "partition"]
)
FEDERATION_CAPPED = Counter(
    "flead_federation_updates_capped", "Devices' contributions to a global version whose weight was cut to the cap"
)
FEDERATION_CLIPPED = Counter(
    "flead_federation_updates_clipped", "Devices' changes scaled down to the clipping bound in a global version"
)
DP_EPSILON = Gauge(
    "flead_dp_epsilon", "With differential privacy: the epsilon spent by the global versions so far (at FLEAD_DP_DELTA)"
)
LIVE_EVALUATION = Gauge(
    "flead_live_evaluation", "Live evaluation of the global models on the labelled stream, so far", ["metric"]
)


class BatchHistogram:
    """A Prometheus histogram that takes a batch of observations under one lock.

    prometheus_client's ``Histogram.observe`` takes a lock and searches the buckets in
    Python for each value: about a microsecond per reading on the hot path. This one counts
    a batch into local buckets first and exports the same series (``_bucket``, ``_count``,
    ``_sum``) through a collector.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts = [0] * len(self.counts)
        total = 0.0
        bounds = self.bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        with self._lock:
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
            self.sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self.counts), self.sum
        cumulative = list(accumulate(counts))
        buckets = [(floatToGoString(bound), n) for bound, n in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]


LATENCY = BatchHistogram(
    "flead_event_latency_seconds",
    "From a reading entering the dataflow (replay) or its Kafka produce time to its processing in the device stage",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SINK_ROWS_WRITTEN = Counter("flead_sink_rows_written", "Rows a sink wrote", ["sink", "table"])
SINK_WRITE_ERRORS = Counter("flead_sink_write_errors", "Failed writes of a sink", ["sink"])
SINK_RETRIES = Counter("flead_sink_retries", "Retried writes of a sink", ["sink"])
SINK_BUFFERED_ROWS = Gauge("flead_sink_buffered_rows", "Rows waiting in a sink's buffer", ["sink"])
SINK_DROPPED_ROWS = Counter("flead_sink_dropped_rows", "Rows a sink dropped because its buffer was full", ["sink"])
ALERTS_SENT = Counter("flead_alerts_sent", "Alerts the webhook receiver accepted")
ALERTS_HELD_BACK = Counter(
    "flead_alerts_held_back",
    "Alert-worthy anomalies not sent, by reason (cooldown, rate_limit); counted into their device's next alert",
    ["reason"],
)
ALERT_DROP_REASONS = ("queue_full", "rejected", "failed", "shutdown")
"""Why an alert was not delivered: the queue was full (the oldest goes), the receiver refused it (4xx),
every attempt failed (5xx, timeouts, no connection), or it was still queued when the dataflow stopped."""
ALERTS_DROPPED = Counter("flead_alerts_dropped", "Alerts not delivered, by reason", ["reason"])
ALERTS_RETRIES = Counter("flead_alerts_retries", "Webhook deliveries tried again")
EDGE_UPDATES = Counter("flead_edge_updates", "Edge clients' local updates that passed the checks into FedAvg")
BANDWIDTH = Counter(
    "flead_bandwidth_bytes",
    "Bytes of readings (the dataflow: read; an edge client: behind the updates it sent), of local updates as edge "
    "clients' messages (the dataflow: made; an edge client: sent) and of anomalies an edge client sent",
    ["kind"],
)
for _kind in ("readings", "updates", "anomalies"):
    BANDWIDTH.labels(_kind)


# Every known label value exists from the start, at 0, so that dashboards and alerts see the
# series before the first event (Prometheus cannot tell "none yet" from "not exported").
for _reason in REJECTION_REASONS:
    DEAD_LETTERS.labels(_reason)
for _severity in ("warning", "critical"):
    ANOMALIES.labels(_severity)
for _reason in ALERT_DROP_REASONS:
    ALERTS_DROPPED.labels(_reason)
for _reason in HELD_BACK_REASONS:
    ALERTS_HELD_BACK.labels(_reason)


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


def count_read(progress: SourceProgress) -> None:
    _READ.inc(progress.rows_read)
    BANDWIDTH.labels("readings").inc(progress.bytes_read)


def count_rejected(reason: str) -> None:
    _REJECTED.inc()
    DEAD_LETTERS.labels(reason).inc()


def count_shard(counters: ShardCounters) -> None:
    _PROCESSED.inc(counters.processed)
    if counters.local_updates:
        LOCAL_UPDATES.inc(counters.local_updates)
        BANDWIDTH.labels("updates").inc(counters.update_bytes)
    for severity, n in counters.anomalies.items():
        ANOMALIES.labels(severity).inc(n)


def record_global(model: GlobalModel) -> None:
    GLOBAL_VERSION.set(model.version)
    if model.accuracy is not None:
        GLOBAL_ACCURACY.set(model.accuracy)
    if model.capped_devices:
        FEDERATION_CAPPED.inc(model.capped_devices)
    if model.clipped_devices:
        FEDERATION_CLIPPED.inc(model.clipped_devices)
    if model.dp_epsilon is not None:
        DP_EPSILON.set(model.dp_epsilon)


def record_live_evaluation(total: ConfusionCounts) -> None:
    for name, gauge in _EVALUATION.items():
        gauge.set(getattr(total, name))


def count_edge_updates(n: int) -> None:
    if n:
        EDGE_UPDATES.inc(n)


def count_bandwidth(kind: str, n: int) -> None:
    """An edge client's bytes. ``kind``: ``readings`` (behind the updates sent), ``updates`` or ``anomalies`` (sent)."""
    BANDWIDTH.labels(kind).inc(n)


def count_alerts_held_back(held_back: dict[str, int]) -> None:
    for reason, n in held_back.items():
        if n:
            ALERTS_HELD_BACK.labels(reason).inc(n)
