from operators.device import Detection, DetectionSettings
from operators.fedavg import GlobalModel, LocalUpdate
from operators.local_model import ModelParameters
from operators.messages import Telemetry
from operators.shard import ShardCounters, ShardState

SETTINGS = DetectionSettings(window=20, short_window=5, warmup=5, round_rows=5, round_seconds=0)


def model(version: int, intercept: float) -> GlobalModel:
    return GlobalModel(version, ModelParameters({}, intercept), 0.5, 1, 1, 1, 0.0)


def readings(n: int, label: int | None = 1, device: str = "d1", start: float = 0.0) -> list[Telemetry]:
    return [Telemetry(device, start + i, {"value": float(i % 3)}, label) for i in range(n)]


def of(outputs, kind):
    return [item for item in outputs if isinstance(item, kind)]


def test_a_batch_reports_its_counts():
    shard = ShardState(SETTINGS, emit_scores=False)
    outputs = shard.process(readings(12, device="a") + readings(3, device="b"))
    (counters,) = of(outputs, ShardCounters)
    assert counters.processed == 15
    assert counters.local_updates == len(of(outputs, LocalUpdate)) == 2
    assert counters.detection["z_rule"].n == 15


def test_scores_are_emitted_for_every_reading_only_when_asked():
    assert len(of(ShardState(SETTINGS, emit_scores=True).process(readings(10)), Detection)) == 10
    quiet = of(ShardState(SETTINGS, emit_scores=False).process(readings(10)), Detection)
    assert all(d.is_anomaly for d in quiet)


def test_labelled_readings_are_scored_by_the_global_model_before_learning():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(1, intercept=5.0)])  # says "anomalous" to everything
    outputs = shard.process(readings(4, label=1) + readings(2, label=0, start=10))
    assert (shard.evaluation.tp, shard.evaluation.fp) == (4, 2)
    (counters,) = of(outputs, ShardCounters)
    assert counters.detection["global_model"].tp == 4


def test_no_global_model_no_live_evaluation():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process(readings(5))
    assert shard.evaluation.n == 0


def test_a_newer_global_model_closes_the_evaluation_of_the_older_one():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(1, 5.0), *readings(3)])
    outputs = shard.process([model(3, 5.0)])
    (counters,) = of(outputs, ShardCounters)
    # v1 with its 3 scored readings, and v2, which this shard never had, closed empty
    assert {version: counts.n for version, counts in counters.closed_evaluations.items()} == {1: 3, 2: 0}
    assert shard.global_version == 3


def test_duplicates_and_late_copies_of_global_models_are_harmless():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(2, 1.0)])
    outputs = shard.process([model(2, 9.0), model(1, 9.0)])
    assert of(outputs, ShardCounters)[0].closed_evaluations == {}
    assert shard.global_model.parameters.intercept == 1.0


def test_finish_closes_partial_rounds_and_the_open_evaluation():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(1, 5.0), *readings(7, device="a"), *readings(2, device="b")])
    outputs = shard.finish()
    assert sorted((u.device_id, u.samples) for u in of(outputs, LocalUpdate)) == [("a", 2), ("b", 2)]
    (counters,) = of(outputs, ShardCounters)
    assert {version: counts.n for version, counts in counters.closed_evaluations.items()} == {1: 9}
