import math
import random

import pytest

from operators.device import DetectionSettings, DeviceState
from operators.fedavg import GlobalModel
from operators.local_model import ModelParameters
from operators.messages import Telemetry
from operators.normal_model import pooled
from operators.threshold import GRID

SETTINGS = DetectionSettings(window=20, short_window=5, warmup=5, round_rows=4, round_seconds=0)


def reading(t: float, value: float, label: int | None = None, device: str = "d1") -> Telemetry:
    return Telemetry(device, t, {"value": value}, label)


def feed(device: DeviceState, values: list[float], settings=SETTINGS, global_model=None, start=0.0, labels=None):
    results = []
    for i, value in enumerate(values):
        label = labels[i] if labels else None
        results.append(device.observe(reading(start + i, value, label), settings, global_model))
    return results


def global_model(version: int, intercept: float = 0.0) -> GlobalModel:
    return GlobalModel(version, ModelParameters({"abs_z": 1.0}, intercept), 0.9, 3, 20, 100, 0.0)


def test_severity_levels_follow_the_configured_z_thresholds():
    settings = DetectionSettings()
    assert settings.severity(2.49) is None
    assert settings.severity(2.5) == "warning"
    assert settings.severity(3.0) == "critical"


def test_readings_during_warmup_are_never_anomalous_by_z():
    device = DeviceState("d1", SETTINGS)
    detections = [d for d, _ in feed(device, [1.0, 1.1, 50.0, 1.0])]
    assert all(d.z_score == 0.0 for d in detections)


def test_with_the_z_rule_a_spike_after_warmup_is_critical_with_its_signed_z():
    settings = DetectionSettings(window=20, short_window=5, warmup=5, round_rows=4, round_seconds=0, detector="z_rule")
    device = DeviceState("d1", settings)
    feed(device, [10.0, 10.2, 9.8, 10.1, 9.9, 10.0], settings)
    detection, _ = device.observe(reading(10, 5.0), settings, None)
    assert detection.severity == "critical"
    assert detection.is_anomaly
    assert detection.z_score < -3
    assert detection.field == "value"


def noisy(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [20.0 + rng.gauss(0.0, 0.5) for _ in range(n)]


def test_the_calibrated_score_flags_a_spike_the_device_never_showed_and_explains_it():
    settings = DetectionSettings()
    device = DeviceState("d1", settings)
    detections = [d for d, _ in feed(device, noisy(600), settings)]
    ordinary = [d.score for d in detections[400:]]
    assert min(ordinary) > 0.0 and max(ordinary) < settings.score_threshold  # never pinned, never flagged
    spike, _ = device.observe(reading(600, 30.0), settings, None)
    assert spike.is_anomaly and spike.alert and spike.severity == "critical"
    assert spike.explanation[0]["evidence"] == "forecast" and spike.explanation[0]["field"] == "value"
    assert spike.explanation[0]["value"] > 10  # ten error spreads above the forecast


def test_the_same_noise_in_other_units_gives_the_same_scores():
    settings = DetectionSettings()
    celsius, millikelvin = DeviceState("a", settings), DeviceState("b", settings)
    values = [*noisy(500), 26.0, 20.0, 20.5]
    a = [d.score for d, _ in feed(celsius, values, settings)]
    b = [d.score for d, _ in feed(millikelvin, [(v + 273.15) * 1000 for v in values], settings)]
    assert a == pytest.approx(b, abs=1e-6)


def test_an_incident_raises_one_alert_and_a_new_one_needs_the_gap_without_anomalies():
    settings = DetectionSettings(alert_gap=50)
    device = DeviceState("d1", settings)
    feed(device, noisy(500), settings)
    flags = [d for d, _ in feed(device, [40.0] * 5, settings, start=500)]
    assert all(d.is_anomaly for d in flags[:2])
    assert [d.alert for d in flags].count(True) == 1 and flags[0].alert
    after = [d for d, _ in feed(device, noisy(300, seed=5), settings, start=505)]
    quiet = next(i for i, d in enumerate(after) if not d.is_anomaly)
    assert not any(d.alert for d in after[: quiet + 50])  # fewer than 50 readings without an anomaly
    again = [d for d, _ in feed(device, [40.0] * 5, settings, start=805)]
    assert [d.alert for d in again].count(True) == 1  # a new incident, long after the last anomaly


def test_a_level_shift_stays_flagged_while_the_incident_is_open():
    settings = DetectionSettings()
    device = DeviceState("d1", settings)
    feed(device, noisy(600), settings)
    shifted = [d for d, _ in feed(device, [v + 3.0 for v in noisy(30, seed=9)], settings, start=600)]
    # a shift of six noise spreads: flagged from its first readings, and still 20 readings on
    # (by the level evidence, while the long window has not absorbed it)
    assert shifted[1].is_anomaly and shifted[20].is_anomaly
    assert "level" in {d.explanation[0]["evidence"] for d in shifted[:21]}


def test_a_stuck_sensor_is_flagged_by_its_spread():
    settings = DetectionSettings()
    device = DeviceState("d1", settings)
    feed(device, noisy(600), settings)
    stuck = [d for d, _ in feed(device, [20.0] * 30, settings, start=600)]
    assert any(d.is_anomaly and d.explanation[0]["evidence"] == "spread" for d in stuck)


def test_a_new_device_is_calibrated_against_the_fleets_normal_model():
    settings = DetectionSettings()
    veteran = DeviceState("old", settings)
    updates = [u for _, u in feed(veteran, noisy(1000), settings) if u is not None]
    fleet = pooled(u.normal for u in updates)
    model = GlobalModel(1, ModelParameters(), None, 1, len(updates), 1000, 0.0, normal=fleet)
    alone, joined = DeviceState("a", settings), DeviceState("b", settings)
    values = [*noisy(40, seed=2), 35.0]
    # 40 readings: too few to calibrate on its own (the score stays at its neutral value) ...
    assert feed(alone, values, settings)[-1][0].score < 0.1
    # ... but against the fleet's normal model the spike is an anomaly from the start
    assert feed(joined, values, settings, global_model=model)[-1][0].is_anomaly


def test_a_round_closes_after_round_rows_with_its_model_and_counts():
    device = DeviceState("d1", SETTINGS)
    results = feed(device, [1.0, 1.0, 1.5, 1.2, 1.1], labels=[0, 0, 0, 1, 0])
    updates = [u for _, u in results if u is not None]
    assert len(updates) == 1
    update = updates[0]
    assert (update.device_id, update.model_version, update.global_version, update.samples) == ("d1", 1, 0, 4)
    assert update.timestamp == 3.0

    # By hand. In the warm-up (5 readings) every z is 0, and with fewer readings than the short
    # window the short and long windows are the same: every feature is 0, except "flat" for the
    # second reading (two equal readings). Each labelled reading is one logistic SGD step
    # (rate 0.05, a label-1 reading weighs 5) from weights 0 and intercept 0, scored before it.
    rate, positive_weight = 0.05, 5.0
    flat_weight = intercept = 0.0
    correct, losses = 0, []
    for flat, label in [(0.0, 0), (1.0, 0), (0.0, 0), (0.0, 1)]:
        probability = 1.0 / (1.0 + math.exp(-(intercept + flat_weight * flat)))
        correct += (probability > 0.5) == bool(label)
        losses.append(-math.log(probability if label else 1.0 - probability))
        gradient = (probability - label) * (positive_weight if label else 1.0)
        flat_weight -= rate * gradient * flat
        intercept -= rate * gradient
    assert (update.labelled, update.accuracy) == (4, correct / 4) == (4, 0.75)  # the anomaly is missed
    assert update.loss == pytest.approx(sum(losses) / 4, rel=1e-12)
    assert update.parameters.intercept == pytest.approx(intercept, rel=1e-12)
    assert update.parameters.weights == pytest.approx(
        {
            "abs_z": 0.0,
            "abs_z_mean": 0.0,
            "z_change": 0.0,
            "level_shift": 0.0,
            "spread_ratio": 0.0,
            "flat": flat_weight,
        },
        rel=1e-12,
    )
    assert flat_weight < 0 < intercept  # one normal stuck reading pulled "flat" down; the anomaly pulled the rest up


def test_a_round_closes_after_round_seconds_of_event_time():
    settings = DetectionSettings(window=20, warmup=5, short_window=5, round_rows=1000, round_seconds=60)
    device = DeviceState("d1", settings)
    closed_at = [t for t in (0, 30, 59, 60, 61, 100, 121) if device.observe(reading(t, 1.0), settings, None)[1]]
    # The first round starts at 0 and closes with the reading at 60; the next starts at 61.
    assert closed_at == [60, 121]


def test_model_versions_count_up_per_device():
    device = DeviceState("d1", SETTINGS)
    updates = [u for _, u in feed(device, [1.0] * 12) if u is not None]
    assert [u.model_version for u in updates] == [1, 2, 3]


def test_a_round_starts_from_the_newest_global_model():
    device = DeviceState("d1", SETTINGS)
    feed(device, [1.0, 2.0])  # a round is under way: a new global model waits for the next round
    model = global_model(version=3, intercept=-2.0)
    updates = [u for _, u in feed(device, [1.0] * 6, global_model=model, start=2) if u is not None]
    assert [u.global_version for u in updates] == [0, 3]


def test_the_global_weights_are_the_next_rounds_starting_point():
    settings = DetectionSettings(window=20, warmup=5, short_window=5, round_rows=1, round_seconds=0)
    device = DeviceState("d1", settings)
    model = global_model(version=1, intercept=-2.0)
    detection, update = device.observe(reading(0, 1.0), settings, model)
    # one SGD step (learning rate 0.05) away from the global model's intercept, not from 0
    assert update.parameters.intercept == pytest.approx(-2.0, abs=0.1)
    assert detection.global_version == 1
    assert detection.global_score == pytest.approx(model.parameters.probability({"abs_z": 0.0}))


def test_an_update_carries_what_its_round_started_from():
    device = DeviceState("d1", SETTINGS)
    model = global_model(version=2, intercept=-2.0)
    labels = [0] * 12
    results = feed(device, [1.0] * 4, labels=labels) + feed(
        device, [1.0] * 8, global_model=model, start=4, labels=labels
    )
    first, second, third = [update for _, update in results if update is not None]
    assert first.base == ModelParameters()  # a new device's model: no weights, intercept 0
    assert second.base is model.parameters  # adopted at the start of the round
    assert third.base == second.parameters  # no newer global model: it went on from its own
    assert third.parameters.intercept < second.parameters.intercept < -2.0  # it learned "normal" all along


def test_without_labels_the_logistic_model_does_not_learn():
    device = DeviceState("d1", SETTINGS)
    results = feed(device, [10.0, 10.2, 9.8, 10.1, 9.9, 10.0, 100.0, 10.0])
    assert not device.model.trained
    updates = [update for _, update in results if update is not None]
    assert len(updates) == 2 and all(update.labelled == 0 and update.accuracy is None for update in updates)


def test_a_label_trains_the_model_when_it_arrives_late():
    settings = DetectionSettings(window=20, short_window=5, warmup=5, round_rows=100, round_seconds=0, label_delay=3)
    device = DeviceState("d1", settings)
    feed(device, [10.0, 10.2, 9.8, 10.1, 9.9, 10.0], settings)
    device.observe(reading(10, 100.0, label=1), settings, None)
    feed(device, [10.0, 10.1], settings, start=11)
    assert not device.model.trained  # two readings later the label is still on its way
    device.observe(reading(13, 10.0), settings, None)
    assert device.model.trained and device.model.parameters.weights["abs_z"] > 0  # the third brought it


def test_a_field_that_stops_moving_with_the_others_is_flagged_by_the_relation():
    settings = DetectionSettings()
    device = DeviceState("d1", settings)
    rng = random.Random(4)

    def reading_at(t: int, against: bool = False) -> Telemetry:
        load = math.sin(t / 40)
        temperature = 50 + 5 * (-load if against else load) + rng.gauss(0, 0.3)
        return Telemetry("d1", float(t), {"cpu": 40 + 10 * load + rng.gauss(0, 0.5), "temperature": temperature})

    for t in range(800):
        device.observe(reading_at(t), settings, None)
    # the temperature now falls as the load rises: each field on its own stays in its range
    broken = [device.observe(reading_at(t, against=True), settings, None)[0] for t in range(800, 860)]
    assert any(d.is_anomaly and d.explanation[0]["evidence"] == "relation" for d in broken)


def test_a_device_survives_a_snapshot_and_goes_on_scoring_the_same():
    import pickle

    settings = DetectionSettings()
    for fields in (1, 2):
        device = DeviceState("d1", settings)
        values = noisy(300)
        for t, v in enumerate(values):
            device.observe(Telemetry("d1", float(t), {f"f{i}": v + i for i in range(fields)}), settings, None)
        copy = pickle.loads(pickle.dumps(device))
        later = enumerate(noisy(50, 3))
        after = [Telemetry("d1", 300.0 + t, {f"f{i}": v + i for i in range(fields)}) for t, v in later]
        assert [copy.observe(r, settings, None)[0].score for r in after] == [
            device.observe(r, settings, None)[0].score for r in after
        ]


def test_with_a_target_rate_the_global_models_threshold_is_in_force():
    targeted = DetectionSettings(target_false_alarm_rate=0.01)
    model = GlobalModel(1, ModelParameters(), None, 1, 1, 1, 0.0, threshold=0.9)
    device = DeviceState("d1", targeted)
    assert device.observe(reading(0, 1.0), targeted, model)[0].threshold == 0.9
    fixed = DetectionSettings()  # no target: the setting's threshold, whatever the model carries
    assert DeviceState("d2", fixed).observe(reading(0, 1.0), fixed, model)[0].threshold == 0.5


def test_with_a_target_rate_a_round_counts_its_scores_for_fedavg():
    targeted = DetectionSettings(target_false_alarm_rate=0.01, round_rows=50, round_seconds=0)
    device = DeviceState("d1", targeted)
    update = next(u for _, u in feed(device, noisy(50), targeted) if u is not None)
    samples, reached = update.threshold_counts
    assert samples == 50 and len(reached) == len(GRID) and reached[0] <= 50
    assert DeviceState("d2", SETTINGS).observe(reading(0, 1.0), SETTINGS, None)[1] is None
