"""What the run report gathers: every device, its readings thinned evenly, exact counts."""

import pickle
import random

import pytest

from operators.device import DetectionSettings
from operators.fedavg import GlobalModel
from operators.local_model import ModelParameters
from operators.messages import Telemetry
from operators.report_sampling import MIN_POINTS_PER_DEVICE, ReportPoint, report_point
from operators.shard import DeviceLimits, ShardState
from report.collect import TIMELINE_POINTS, ReportCollector
from report.data import ModelVersion, RunReport
from report.html import _threshold_steps

SETTINGS = DetectionSettings(window=20, short_window=5, warmup=5, round_rows=50, round_seconds=0)


def noisy(device: str, n: int, spike_at: tuple[int, ...] = (), seed: int = 3) -> list[Telemetry]:
    rng = random.Random(seed)
    return [
        Telemetry(device, 1_000.0 + 60 * i, {"value": (400.0 if i in spike_at else 0.0) + rng.gauss(10, 1)})
        for i in range(n)
    ]


def test_a_shard_sends_the_report_every_reading_of_a_short_stream_and_a_share_of_a_long_one():
    shard = ShardState(SETTINGS, emit_scores=False, report_points=100)
    short = shard.process(noisy("a", 60))
    assert [p.reading_index for p in short.report] == list(range(1, 61))
    long = shard.process(noisy("a", 2_000)[60:])
    # one device, capacity 100: spacing 2 up to 200, 4 up to 400, ... 32 up to 3,200
    expected = [n for n in range(61, 2_001) if n <= 100 or n % (1 << ((n - 1) // 100).bit_length()) == 0]
    assert [p.reading_index for p in long.report if p.severity is None] == [
        n for n in expected if n not in {d.reading_index for d in long.anomalies}
    ]
    assert len(long.report) < 2_000 // 4


def test_without_a_report_a_shard_sends_only_its_anomalies():
    result = ShardState(SETTINGS, emit_scores=False).process(noisy("a", 600, spike_at=(500,)))
    assert result.detections == result.anomalies != [] and result.report == []


def test_at_the_end_the_shard_counts_every_devices_readings_for_the_report():
    shard = ShardState(SETTINGS, emit_scores=False, report_points=100)
    shard.process(noisy("a", 300) + noisy("b", 7))
    assert shard.finish().counters.readings_by_device == {"a": 300, "b": 7}
    assert ShardState(SETTINGS, emit_scores=False).finish().counters.readings_by_device == {}


def collected(points: int, streams: dict[str, list[Telemetry]], sent: list | None = None) -> ReportCollector:
    """What a collector gathers from one shard; ``sent`` receives every point the shard sent it."""
    shard = ShardState(SETTINGS, emit_scores=False, report_points=points)
    collector = ReportCollector(points)
    for readings in streams.values():
        for start in range(0, len(readings), 250):
            result = shard.process(readings[start : start + 250])
            collector.undraw(result.counters.undrawn)
            collector.add_points(result.report)
            if sent is not None:
                sent.extend(result.report)
    collector.add_readings(shard.finish().counters.readings_by_device)
    return collector


def test_the_report_lists_every_device_the_most_anomalies_first_with_exact_counts():
    streams = {"quiet": noisy("quiet", 700), "spiky": noisy("spiky", 700, spike_at=(400,), seed=4)}
    sent: list = []
    report = collected(10_000, streams, sent).report({"rows_read": 1_400})
    assert [trace.device_id for trace in report.devices] == ["spiky", "quiet"]
    spiky, quiet = report.devices
    assert (spiky.readings, quiet.readings) == (700, 700)
    flagged = [p for p in sent if p.severity is not None and p.device_id == "spiky"]
    assert 1_000 + 60 * 400 in {p.timestamp for p in flagged}
    assert [(m.time, m.severity, m.score, m.alert) for m in spiky.anomalies] == [
        (p.timestamp, p.severity, p.score, p.alert) for p in flagged
    ]
    assert spiky.anomaly_count == len(flagged)
    assert spiky.anomalies[0].alert
    assert len(spiky.times) == 700  # a short stream: every reading
    assert report.summary == {"rows_read": 1_400}


def test_a_long_stream_is_drawn_with_evenly_spaced_readings_within_its_share():
    report = collected(200, {"a": noisy("a", 5_000), "b": noisy("b", 5_000, seed=9)}).report({})
    for trace in report.devices:
        assert MIN_POINTS_PER_DEVICE <= len(trace.times) <= 100
        gaps = {round(b - a) for a, b in zip(trace.times, trace.times[1:], strict=False)}
        assert gaps == {60 * 64}  # 5,000 readings in at most 100: every 64th, one minute apart
        assert len(trace.scores) == len(trace.values["value"]) == len(trace.times)
        assert trace.readings == 5_000


def test_global_versions_and_evaluations_come_out_in_order():
    collector = ReportCollector(1_000)
    for version in (3, 1, 2):
        collector.add_model(
            GlobalModel(version, ModelParameters({}, 0.0), None, 2, 4, 80, 60.0 * version, threshold=0.5)
        )
    collector.add_evaluation({"global_version": 2, "window_start": "2024-01-01T00:00:00.000Z", "f1": 0.5})
    collector.add_evaluation({"global_version": 1, "window_start": "2024-01-01T00:00:00.000Z", "f1": 0.25})
    report = collector.report({})
    assert [(m.version, m.created_at, m.threshold, m.samples) for m in report.models] == [
        (1, 60.0, 0.5, 80),
        (2, 120.0, 0.5, 80),
        (3, 180.0, 0.5, 80),
    ]
    assert [row["f1"] for row in report.evaluations] == [0.25, 0.5]


def version(number: int, threshold: float) -> GlobalModel:
    return GlobalModel(number, ModelParameters({}, 0.0), 0.5, 3, 2, 40, 60.0 * number, threshold=threshold)


@pytest.mark.parametrize("first", [1, 1_000_001])  # a run that went on from earlier versions draws as many
def test_a_long_run_keeps_evenly_spaced_versions_the_newest_and_every_threshold_change(first):
    # the threshold moves at a few versions that no spacing would keep, and back
    thresholds = {first + 13: 0.6, first + 2_777: 0.55, first + 9_001: 0.6}

    def threshold_at(number: int) -> float:
        changes = [t for n, t in thresholds.items() if n <= number]
        return changes[-1] if changes else 0.5

    collector = ReportCollector(1_000)
    last = first + 9_998
    for number in range(first, last + 1):
        collector.add_model(version(number, threshold_at(number)))
        assert len(collector.models) <= 2 * TIMELINE_POINTS + len(thresholds) + 1
    report = collector.report({})
    kept = [model.version - first + 1 for model in report.models]
    # 9,999 versions: every 16th (624) as the spacing that keeps at most 1,000, the newest,
    # and the first version and the three that changed the threshold
    spaced = list(range(16, 9_999, 16))
    assert kept == sorted({*spaced, 9_999, 1, *(n - first + 1 for n in thresholds)})
    # the device charts draw the same thresholds from these versions as from all of them
    every = [ModelVersion(n, 60.0 * n, threshold_at(n), 0.5, 3, 40) for n in range(first, last + 1)]
    whole = RunReport({}, [], every, [])
    assert _threshold_steps(report) == _threshold_steps(whole)


def test_a_long_run_keeps_a_bounded_number_of_evaluations_evenly_spread():
    collector = ReportCollector(1_000)
    rows = 5 * TIMELINE_POINTS
    for n in range(1, rows + 1):
        collector.add_evaluation({"global_version": n, "window_start": "2024-01-01T00:00:00.000Z", "f1": 0.5})
        assert len(collector.evaluations) <= 2 * TIMELINE_POINTS
    kept = [row["global_version"] for row in collector.report({}).evaluations]
    assert kept == list(range(8, rows + 1, 8))  # 5,000: every eighth keeps 625


@pytest.mark.parametrize("alert_gap", [4, 1])  # 29 alerts, all kept; 698, too many to keep
def test_a_device_with_very_many_anomalies_keeps_a_bounded_number_of_marks_and_the_alerts_that_fit(alert_gap):
    # the z rule at |z| >= 0.5 flags about 60 % of Gaussian noise
    settings = DetectionSettings(
        window=20,
        short_window=5,
        warmup=5,
        round_rows=50,
        round_seconds=0,
        detector="z_rule",
        z_warning=0.5,
        alert_gap=alert_gap,
    )
    shard = ShardState(settings, emit_scores=False, report_points=MIN_POINTS_PER_DEVICE)
    collector = ReportCollector(MIN_POINTS_PER_DEVICE)
    stream = noisy("d", 3_000)
    results = [shard.process(stream[start : start + 100]) for start in range(0, 3_000, 100)]
    detections = [d for result in results for d in result.detections]
    collector.add_points([p for result in results for p in result.report])
    (trace,) = collector.report({}).devices
    assert trace.anomaly_count == sum(d.is_anomaly for d in detections) > 4 * MIN_POINTS_PER_DEVICE
    assert len(trace.anomalies) <= 2 * MIN_POINTS_PER_DEVICE
    alerts = sum(d.alert for d in detections)
    if alerts < MIN_POINTS_PER_DEVICE:
        assert sum(mark.alert for mark in trace.anomalies) == alerts


def test_the_collector_resumes_from_its_snapshot_with_the_same_report():
    collector = collected(300, {"a": noisy("a", 900, spike_at=(700,))})
    restored = pickle.loads(pickle.dumps(collector))
    assert restored.report({}) == collector.report({})


def test_a_device_dropped_when_idle_and_back_later_is_one_trace_counting_both_lives():
    shard = ShardState(
        SETTINGS, emit_scores=False, report_points=10_000, device_limits=DeviceLimits(idle_seconds=3_600, max_devices=0)
    )
    collector = ReportCollector(10_000)
    first, second = noisy("d", 300), [Telemetry("d", 100_000.0 + 60 * i, {"value": 10.0 + i % 3}) for i in range(200)]
    later = [Telemetry("other", 90_000.0, {"value": 1.0})]  # a day later: "d" is dropped
    for readings in (first, later, second):
        result = shard.process(readings)
        collector.add_points(result.report)
        collector.add_readings(result.counters.readings_by_device)
    collector.add_readings(shard.finish().counters.readings_by_device)
    trace = next(trace for trace in collector.report({}).devices if trace.device_id == "d")
    assert trace.readings == 500
    assert len(trace.times) == 500 and trace.times == sorted(trace.times)


def steady(device: str, n: int) -> list[Telemetry]:
    """A stream without anomalies: the same three values over and over."""
    return [Telemetry(device, 1_000.0 + 60 * i, {"value": 10.0 + i % 3}) for i in range(n)]


def test_a_fleet_beyond_the_points_draws_a_bounded_number_of_devices_and_counts_the_rest():
    streams = {f"quiet{i}": steady(f"quiet{i}", 120) for i in range(30)}
    collector = collected(3 * MIN_POINTS_PER_DEVICE, streams)
    report = collector.report({})
    assert [trace.device_id for trace in report.devices] == ["quiet0", "quiet1", "quiet2"]
    assert report.undrawn_devices == 27
    # three devices share 150 points: 50 each, so every 4th of 120 readings
    assert all(trace.readings == 120 and len(trace.times) == 30 for trace in report.devices)


def test_a_device_with_an_anomaly_takes_the_place_of_the_longest_drawn_quiet_device():
    streams = {
        "quiet0": steady("quiet0", 700),
        "quiet1": steady("quiet1", 700),
        "spiky": noisy("spiky", 700, spike_at=(400,), seed=4),
        "quiet2": steady("quiet2", 700),
    }
    sent: list = []
    report = collected(2 * MIN_POINTS_PER_DEVICE, streams, sent).report({})
    assert [trace.device_id for trace in report.devices] == ["spiky", "quiet1"]
    assert report.undrawn_devices == 2
    spiky = report.devices[0]
    flagged = [p for p in sent if p.severity is not None and p.device_id == "spiky"]
    assert spiky.anomaly_count == len(flagged) > 0 and spiky.readings == 700
    assert spiky.anomalies[0].time == flagged[0].timestamp <= spiky.times[0]  # drawn from then on


def test_a_shard_sends_the_readings_of_the_devices_the_report_draws_and_every_anomaly_downstream():
    shard = ShardState(SETTINGS, emit_scores=False, report_points=2 * MIN_POINTS_PER_DEVICE)
    first = shard.process(steady("quiet0", 60) + steady("quiet1", 60) + steady("quiet2", 60))
    assert {p.device_id for p in first.report} == {"quiet0", "quiet1"}
    spiky = shard.process(noisy("spiky", 700, spike_at=(400,), seed=4))
    flagged = [d for d in spiky.detections if d.is_anomaly]
    assert spiky.detections == spiky.anomalies == flagged != []  # the outputs get every anomaly
    assert spiky.counters.undrawn == ["quiet0"]  # the longest-drawn quiet device makes room
    assert spiky.report[0].reading_index == flagged[0].reading_index
    assert shard.drawn.keys() == {"quiet1", "spiky"}


def test_a_step_of_arrays_gives_the_report_the_points_its_detections_would():
    shard = ShardState(SETTINGS, emit_scores=True, report_points=100_000)
    fleet = [reading for i in range(12) for reading in noisy(f"d{i}", 400, spike_at=(150, 300), seed=i)]
    fleet.sort(key=lambda reading: reading.timestamp)  # every step holds one reading of each device
    result = shard.process(fleet)
    by_reading = {(d.reading.device_id, d.reading_index): d for d in result.detections}
    assert len(result.report) == len(fleet) and any(p.severity for p in result.report)
    assert result.report == [report_point(by_reading[(p.device_id, p.reading_index)]) for p in result.report]


def test_a_reading_without_a_field_is_drawn_as_a_gap_in_that_field():
    collector = ReportCollector(10_000)
    readings = [{"a": 1.0}, {"a": 2.0, "b": -0.0}, {"b": 4.5}, {"c": 7.0}]
    collector.add_points(
        [ReportPoint("d", i + 1, 60.0 * i, values, 0.1 * i, None, "", False) for i, values in enumerate(readings)]
    )
    (trace,) = collector.report({}).devices
    assert trace.times == [0.0, 60.0, 120.0, 180.0]
    assert trace.values == {"a": [1.0, 2.0, None, None], "b": [None, -0.0, 4.5, None], "c": [None, None, None, 7.0]}
    assert trace.scores == [0.0, 0.1, 0.2, 0.30000000000000004]


def test_thinning_keeps_each_fields_values_with_their_readings():
    collector = ReportCollector(MIN_POINTS_PER_DEVICE)  # one device, 50 points: thinned past 100
    points = [
        ReportPoint("d", n, float(n), {"even": float(n)} if n % 2 == 0 else {"odd": float(n)}, 0.0, None, "", False)
        for n in range(1, 301)
    ]
    collector.add_points(points)
    (trace,) = collector.report({}).devices
    assert trace.times == [float(n) for n in range(8, 301, 8)]  # 300 readings in at most 50: every 8th
    assert trace.values == {"even": trace.times}  # no odd reading is left, nor its field
