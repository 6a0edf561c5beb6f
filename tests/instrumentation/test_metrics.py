import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from instrumentation.metrics import BatchHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.5, 1.0, 3.0, 0.05]


def exported(registry: CollectorRegistry) -> dict[str, float]:
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("latency_seconds_") and not line.startswith("latency_seconds_created"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_a_batch_histogram_exports_what_prometheus_clients_histogram_does():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("latency_seconds", "Latency", BUCKETS, registry=ours)
    reference = Histogram("latency_seconds", "Latency", buckets=BUCKETS, registry=theirs)
    batched.observe_many(VALUES[:3])
    batched.observe_many(VALUES[3:])
    for value in VALUES:
        reference.observe(value)
    assert exported(ours) == pytest.approx(exported(theirs))  # the sum is added in another order
    assert exported(ours)['latency_seconds_bucket{le="0.001"}'] == 2
    assert exported(ours)["latency_seconds_count"] == 8
