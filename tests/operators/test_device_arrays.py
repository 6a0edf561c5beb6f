"""The array device stage against the per-reading one that defines it: same scores, decisions,
local updates and models for the same readings and global models."""

import dataclasses
import math
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from river import linear_model, optim

from bench.fleet import generate_fleet
from dataflows.replay_files import read_replay
from operators import shard
from operators.device import DetectionSettings, DeviceState
from operators.device_arrays import learn, sigmoid
from operators.features import FEATURE_NAMES
from operators.fedavg import FedAvgAggregator, GlobalModel
from operators.messages import MessageLimits, Telemetry, decode_message
from operators.shard import DeviceLimits, ShardState

REPO = Path(__file__).resolve().parents[2]
BATCH = 300

SCORE_TOLERANCE = 1e-9
"""numpy's log and exp may differ from the C library's in the last bit: that much, carried
through the likelihoods, is what the scores may differ by (measured: below 1e-12)."""
MODEL_TOLERANCE = 1e-12


def _batches(readings: list[Telemetry]) -> list[list[Telemetry]]:
    it = iter(readings)
    return [batch for batch in iter(lambda: list(islice(it, BATCH)), [])]


def _reference(batches: list[list[Telemetry]], settings: DetectionSettings) -> tuple[list, list, list]:
    """The per-reading device stage, with FedAvg making global models from its updates; each
    new model enters the middle of the next batch. Returns the batches with the models in
    them, every reading's detection, and every update (the last ones from closing the rounds)."""
    aggregator = FedAvgAggregator(50, 0.0, settings.score_threshold, settings.target_false_alarm_rate)
    devices: dict[str, DeviceState] = {}
    global_model: GlobalModel | None = None
    fed, detections, updates = [], [], []
    newest: list[GlobalModel] = []
    for batch in batches:
        items = [*batch[: len(batch) // 2], *newest, *batch[len(batch) // 2 :]]
        fed.append(items)
        made = []
        for item in items:
            if isinstance(item, GlobalModel):
                if global_model is None or item.version > global_model.version:
                    global_model = item
                continue
            device = devices.setdefault(item.device_id, DeviceState(item.device_id, settings))
            detection, update = device.observe(item, settings, global_model)
            detections.append(detection)
            if update is not None:
                updates.append(update)
                made.extend(model for model in [aggregator.add(update)] if model is not None)
        newest = made[-1:]
    updates.extend(update for device in devices.values() if (update := device.close_round()) is not None)
    return fed, detections, updates


def _arrays(fed: list[list], settings: DetectionSettings) -> tuple[list, list]:
    state = ShardState(settings, emit_scores=True, device_limits=DeviceLimits(idle_seconds=0, max_devices=0))
    detections, updates = [], []
    for items in fed:
        result = state.process(items)
        detections.extend(result.detections)
        updates.extend(result.updates)
    updates.extend(state.close_rounds().updates)
    return detections, updates


def _assert_same(reference: tuple[list, list], arrays: tuple[list, list]) -> None:
    (expected_detections, expected_updates), (detections, updates) = reference, arrays
    assert len(detections) == len(expected_detections)
    for got, want in zip(detections, expected_detections, strict=True):
        assert got.reading is want.reading
        assert (got.is_anomaly, got.alert, got.severity, got.field, got.reading_index, got.global_version) == (
            want.is_anomaly,
            want.alert,
            want.severity,
            want.field,
            want.reading_index,
            want.global_version,
        )
        assert got.z_score == want.z_score and got.threshold == want.threshold
        assert got.score == pytest.approx(want.score, abs=SCORE_TOLERANCE, rel=0)
        assert got.model_score == pytest.approx(want.model_score, abs=MODEL_TOLERANCE, rel=0)
        assert (got.global_score is None) == (want.global_score is None)
        if want.global_score is not None:
            assert got.global_score == pytest.approx(want.global_score, abs=MODEL_TOLERANCE, rel=0)
        assert [(e["evidence"], e["field"]) for e in got.explanation] == [
            (e["evidence"], e["field"]) for e in want.explanation
        ]
    assert [(u.device_id, u.model_version) for u in updates] == [
        (u.device_id, u.model_version) for u in expected_updates
    ]
    for got, want in zip(updates, expected_updates, strict=True):
        assert (got.global_version, got.samples, got.labelled, got.timestamp, got.threshold_counts) == (
            want.global_version,
            want.samples,
            want.labelled,
            want.timestamp,
            want.threshold_counts,
        )
        assert got.accuracy == want.accuracy
        assert (got.loss is None) == (want.loss is None)
        if want.loss is not None:
            assert got.loss == pytest.approx(want.loss, rel=1e-12)
        for mine, theirs in ((got.parameters, want.parameters), (got.base, want.base)):
            assert sorted(mine.weights) == sorted(theirs.weights)
            for name, weight in theirs.weights.items():
                assert mine.weights[name] == pytest.approx(weight, abs=MODEL_TOLERANCE, rel=MODEL_TOLERANCE)
            assert mine.intercept == pytest.approx(theirs.intercept, abs=MODEL_TOLERANCE, rel=MODEL_TOLERANCE)
        for mine, theirs in zip(got.normal.evidence, want.normal.evidence, strict=True):
            assert mine.samples == theirs.samples
            assert mine.mean == pytest.approx(theirs.mean, abs=SCORE_TOLERANCE, rel=SCORE_TOLERANCE)
            assert mine.second == pytest.approx(theirs.second, abs=SCORE_TOLERANCE, rel=SCORE_TOLERANCE)


def _fleet(tmp_path: Path) -> list[Telemetry]:
    """24 devices of one to three fields, labelled, with every kind of anomaly the generator makes."""
    path = tmp_path / "fleet.jsonl"
    generate_fleet(path, devices=24, rows_per_device=700, seed=3, interval=300.0, anomaly_rate=0.01)
    limits = MessageLimits()
    return [decode_message(line, "fleet", limits) for line in path.read_bytes().splitlines()]


def _compare(readings: list[Telemetry], settings: DetectionSettings) -> tuple[list, list]:
    fed, detections, updates = _reference(_batches(readings), settings)
    _assert_same((detections, updates), _arrays(fed, settings))
    return detections, updates


def test_the_bundled_replay_scores_and_learns_as_the_per_reading_code():
    """Its series follow one another in time: a batch holds one or two devices, scored one by one."""
    readings = list(islice(read_replay(REPO / "data" / "nab", MessageLimits()), 30_000))
    detections, updates = _compare(readings, DetectionSettings())
    assert sum(d.is_anomaly for d in detections) > 100 and len(updates) > 1000


@pytest.mark.parametrize(
    ("settings", "array_step_devices"),
    [
        (DetectionSettings(), 1),
        (DetectionSettings(), shard.ARRAY_STEP_DEVICES),
        (DetectionSettings(detector="z_rule", round_seconds=0, round_rows=37), 1),
        (DetectionSettings(label_delay=5, prior_weight=0.0), shard.ARRAY_STEP_DEVICES),
        (DetectionSettings(target_false_alarm_rate=0.01, window=30, short_window=5, warmup=3), 1),
    ],
    ids=["defaults-arrays", "defaults-mixed", "z-rule-arrays", "late-labels-mixed", "fleet-threshold-arrays"],
)
def test_a_labelled_multi_field_fleet_scores_and_learns_as_the_per_reading_code(
    tmp_path, monkeypatch, settings, array_step_devices
):
    """Every step as arrays, or (mixed) the steps of fewer devices one by one: the devices'
    state goes from arrays to ``DeviceState`` and back in the middle of their streams."""
    monkeypatch.setattr(shard, "ARRAY_STEP_DEVICES", array_step_devices)
    detections, updates = _compare(_fleet(tmp_path), settings)
    assert sum(d.is_anomaly for d in detections) > 50
    assert any(u.labelled for u in updates) and any(u.parameters.weights for u in updates)


def test_the_logistic_step_is_rivers_learn_one():
    rng = np.random.default_rng(4)
    models = [linear_model.LogisticRegression(optimizer=optim.SGD(0.05), intercept_lr=0.05) for _ in range(5)]
    weights, intercept = np.zeros((5, len(FEATURE_NAMES))), np.zeros(5)
    for _ in range(400):
        features = rng.normal(0.0, 3.0, (5, len(FEATURE_NAMES)))
        labels = (rng.random(5) < 0.2).astype(np.int64)
        logit = (weights * features).sum(axis=1) + intercept
        probability = sigmoid(logit)
        for k, model in enumerate(models):
            x = dict(zip(FEATURE_NAMES, features[k].tolist(), strict=True))
            assert probability[k] == pytest.approx(model.predict_proba_one(x)[True], abs=MODEL_TOLERANCE, rel=0)
            model.learn_one(x, bool(labels[k]), w=5.0 if labels[k] else 1.0)
        weights, intercept = learn(weights, intercept, features, labels, logit, 0.05, 5.0)
        for k, model in enumerate(models):
            for j, name in enumerate(FEATURE_NAMES):
                assert weights[k, j] == pytest.approx(model.weights.get(name, 0.0), abs=MODEL_TOLERANCE, rel=0)
            assert intercept[k] == pytest.approx(model.intercept, abs=MODEL_TOLERANCE, rel=0)
    assert not math.isclose(float(np.abs(weights).max()), 0.0)


def test_readings_of_one_device_in_one_batch_keep_their_order_across_steps():
    settings = DetectionSettings(round_rows=4, round_seconds=0)
    state = ShardState(settings, emit_scores=True)
    batch = [Telemetry(f"d{i % 3}", float(i), {"value": float(i % 5)}, None) for i in range(30)]
    result = state.process(batch)
    assert [d.reading for d in result.detections] == batch
    assert [(u.device_id, u.samples) for u in result.updates] == [
        (f"d{i % 3}", 4) for i in range(30) if (i // 3 + 1) % 4 == 0
    ]
    assert dataclasses.astuple(result.counters)[0] == 30
