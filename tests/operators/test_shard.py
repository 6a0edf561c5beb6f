import pickle

import orjson

from operators.device import DetectionSettings
from operators.evaluation import FINISHED, EvaluationAggregator
from operators.fedavg import GlobalModel
from operators.local_model import ModelParameters
from operators.messages import RawMessage, Telemetry
from operators.shard import DeviceLimits, ShardState, combined_counters
from operators.sharding import ShardBatch, newest_to_every_shard, route_by_shard, shard_keys, shard_of
from operators.update_validation import edge_update_message

SETTINGS = DetectionSettings(window=20, short_window=5, warmup=5, round_rows=5, round_seconds=0)


def model(version: int, intercept: float) -> GlobalModel:
    return GlobalModel(version, ModelParameters({}, intercept), 0.5, 1, 1, 1, 0.0)


def readings(n: int, label: int | None = 1, device: str = "d1", start: float = 0.0) -> list[Telemetry]:
    return [Telemetry(device, start + i, {"value": float(i % 3)}, label) for i in range(n)]


def closed(result) -> dict[int, int]:
    return {version: counts.n for version, counts in result.counters.closed_evaluations.items()}


def test_a_batch_reports_its_counts():
    shard = ShardState(SETTINGS, emit_scores=False)
    result = shard.process(readings(12, device="a") + readings(3, device="b"))
    assert result.counters.processed == 15
    assert result.counters.local_updates == len(result.updates) == 2
    assert result.counters.detection["z_rule"].n == 15


def test_a_batch_counts_its_updates_bytes_as_edge_clients_messages():
    shard = ShardState(SETTINGS, emit_scores=False)
    result = shard.process(readings(12, device="a") + readings(7, device="b"))
    assert len(result.updates) == 3
    assert result.counters.update_bytes == sum(len(edge_update_message(u)) for u in result.updates) > 0
    closing = shard.finish()
    assert closing.counters.update_bytes == sum(len(edge_update_message(u)) for u in closing.updates) > 0


def test_scores_are_kept_for_every_reading_only_when_asked():
    assert len(ShardState(SETTINGS, emit_scores=True).process(readings(10)).detections) == 10
    quiet = ShardState(SETTINGS, emit_scores=False).process(readings(10))
    assert quiet.detections == quiet.anomalies


def test_labelled_readings_are_scored_by_the_global_model_before_learning():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(1, intercept=5.0)])  # says "anomalous" to everything
    result = shard.process(readings(4, label=1) + readings(2, label=0, start=10))
    assert (shard.evaluation.tp, shard.evaluation.fp) == (4, 2)
    assert result.counters.detection["global_model"].tp == 4


def test_no_global_model_no_live_evaluation():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process(readings(5))
    assert shard.evaluation.n == 0


def test_a_newer_global_model_closes_the_evaluation_of_the_older_one():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(1, 5.0), *readings(3)])
    # v1 with its 3 scored readings; past v2, which this shard never had, in the same move
    result = shard.process([model(3, 5.0)])
    assert closed(result) == {1: 3}
    assert result.counters.moves == {(1, 3): 1}
    assert shard.global_version == 3


def test_duplicates_and_late_copies_of_global_models_are_harmless():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(2, 1.0)])
    result = shard.process([model(2, 9.0), model(1, 9.0)])
    assert (closed(result), result.counters.moves) == ({}, {})
    assert shard.global_model.parameters.intercept == 1.0


def test_finish_closes_partial_rounds_and_the_open_evaluation():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process([model(1, 5.0), *readings(7, device="a"), *readings(2, device="b")])
    result = shard.finish()
    assert sorted((u.device_id, u.samples) for u in result.updates) == [("a", 2), ("b", 2)]
    assert closed(result) == {1: 9}
    assert result.counters.moves == {(1, FINISHED): 1}


def test_closing_the_rounds_slice_by_slice_gives_the_updates_of_closing_them_at_once():
    shard = ShardState(SETTINGS, emit_scores=False)
    for i in range(11):  # partial rounds of 1 to 4 readings; d0, d5 and d10 have none open
        shard.process([model(1, 5.0), *readings(5 + i % 5, device=f"d{i}", start=10.0 * i)])
    at_once = pickle.loads(pickle.dumps(shard)).close_rounds()
    slices = [shard.close_rounds(part, 4) for part in range(4)]
    assert [len(result.updates) for result in slices] == [1, 3, 2, 2]  # d0-d1, d2-d4, d5-d7, d8-d10
    sliced = [update for result in slices for update in result.updates]
    assert [update.as_row() for update in sliced] == [update.as_row() for update in at_once.updates]
    assert sum(result.counters.local_updates for result in slices) == at_once.counters.local_updates == 8
    assert shard.close_rounds().updates == []


def test_silent_devices_have_their_rounds_closed_after_idle_seconds():
    shard = ShardState(SETTINGS, emit_scores=False)
    shard.process(readings(3, device="quiet"), now=100.0)
    shard.process(readings(3, device="busy"), now=160.0)
    result = shard.close_idle_rounds(now=170.0, idle_seconds=60.0)
    assert [(u.device_id, u.samples) for u in result.updates] == [("quiet", 3)]
    assert shard.close_idle_rounds(now=171.0, idle_seconds=60.0).updates == []


def test_readings_are_grouped_by_their_shard_in_arrival_order():
    keys = shard_keys(4)
    items = [*readings(3, device="a"), "other", *readings(2, device="b")]
    routed = route_by_shard(items, keys)
    assert routed[0] == "other"
    batches = {batch.key: batch.readings for batch in routed if isinstance(batch, ShardBatch)}
    assert batches[shard_of("a", keys)][:3] == items[:3]
    assert sum(len(r) for r in batches.values()) == 5


def undecoded(reading: Telemetry, line: int) -> RawMessage:
    message = {"device_id": reading.device_id, "timestamp": reading.timestamp, "data": reading.values["value"]}
    if reading.label is not None:
        message["label"] = reading.label
    return RawMessage(reading.device_id, orjson.dumps(message), "file:f.jsonl", line, 0.0)


def test_undecoded_readings_give_the_results_of_decoded_ones_and_bad_lines_are_rejections():
    decoded = readings(12, device="a", start=1_700_000_000.0)
    raw = [undecoded(r, line) for line, r in enumerate(decoded, start=1)]
    bad = RawMessage("a", b'{"device_id":"a","timestamp":1700000000,"data":"hot"}', "file:f.jsonl", 13, 0.0)
    expected = ShardState(SETTINGS, emit_scores=True).process(decoded)
    result = ShardState(SETTINGS, emit_scores=True).process([*raw[:6], bad, *raw[6:]])
    assert [d.score_row() for d in result.detections] == [d.score_row() for d in expected.detections]
    assert [u.as_row() for u in result.updates] == [u.as_row() for u in expected.updates]
    assert result.counters.processed == 12
    assert [(r.reason, r.source) for r in result.rejections] == [("invalid_value", "file:f.jsonl:13")]


def test_a_shard_batch_pickles_to_an_equal_batch():
    batch = ShardBatch("shard-1", [undecoded(readings(1)[0], 1), *readings(2)], 7, model(3, 0.5), close_rounds=(3, 16))
    copy = pickle.loads(pickle.dumps(batch))
    assert copy == batch
    assert [type(r) for r in copy.readings] == [RawMessage, Telemetry, Telemetry]


def test_only_the_newest_model_of_a_batch_goes_out_and_a_shard_closes_the_same_versions():
    keys = shard_keys(3)
    models = [model(5, 0.0), model(7, 0.0), model(6, 0.0)]
    assert newest_to_every_shard(models, keys) == [(key, models[1]) for key in keys]

    def evaluation_rows(batches: list[list]) -> tuple[list[tuple[int, int]], dict[int, int]]:
        shard, evaluation = ShardState(SETTINGS, emit_scores=False), EvaluationAggregator(shards=1)
        rows = []
        for batch in batches:
            counters = shard.process(batch).counters
            rows += evaluation.add(counters.closed_evaluations, counters.moves)
        return [(row["global_version"], row["n"]) for row in rows], evaluation.shards_at

    start = [model(2, 0.0), *readings(4)]
    one_by_one = evaluation_rows([start, *([m] for m in sorted(models, key=lambda m: m.version))])
    newest_only = evaluation_rows([start, [models[1]]])
    assert newest_only == one_by_one == ([(2, 4)], {7: 1})


def test_the_counters_of_many_shards_add_up_to_those_of_one_and_count_the_moves():
    a, b = ShardState(SETTINGS, emit_scores=False), ShardState(SETTINGS, emit_scores=False)
    batches = [
        a.process([model(1, 0.0), *readings(6, device="x")]).counters,
        b.process([model(2, 0.0), *readings(4, device="y")]).counters,
        a.process([model(2, 0.0), *readings(3, device="x", start=6)]).counters,
    ]
    combined = combined_counters(batches)
    assert combined.processed == 13
    assert combined.detection["z_rule"].n == 13
    assert combined.moves == {(0, 1): 1, (0, 2): 1, (1, 2): 1}
    assert combined.closed_evaluations[1].n == 6  # a scored 6 readings with v1; b never had v1


def test_a_device_silent_past_the_idle_time_is_dropped_with_its_partial_round_closed():
    shard = ShardState(SETTINGS, emit_scores=False, device_limits=DeviceLimits(idle_seconds=100, max_devices=0))
    shard.process(readings(7, device="quiet"))  # t = 0..6: a round of 5 closed, 2 readings left open
    result = shard.process(readings(3, device="busy", start=200))  # the shard's clock reaches 202
    assert set(shard.devices) == {"busy"}
    assert [(u.device_id, u.samples) for u in result.updates] == [("quiet", 2)]
    assert result.counters.local_updates == 1
    assert "quiet" not in pickle.loads(pickle.dumps(shard)).devices
    shard.process(readings(1, device="quiet", start=300))
    assert shard.readings_of("quiet") == 1  # back, it starts afresh


def test_a_device_that_reads_within_the_idle_time_is_kept():
    shard = ShardState(SETTINGS, emit_scores=False, device_limits=DeviceLimits(idle_seconds=100, max_devices=0))
    shard.process(readings(3, device="a") + readings(3, device="b", start=99))
    shard.process(readings(1, device="b", start=101))
    assert set(shard.devices) == {"a", "b"}  # a's newest reading (t = 2) is 99 s older than the clock


def test_beyond_the_device_limit_a_new_device_is_a_dead_letter_until_an_idle_one_makes_room():
    shard = ShardState(SETTINGS, emit_scores=False, device_limits=DeviceLimits(idle_seconds=100, max_devices=2))
    raw = RawMessage("c", b'{"device_id":"c","timestamp":3,"data":1}', "file:x.jsonl", 7, 0.0)
    result = shard.process(readings(2, device="a") + readings(2, device="b") + [raw] + readings(1, device="a", start=3))
    assert result.counters.processed == 5
    (rejection,) = result.rejections
    assert (rejection.reason, rejection.source) == ("device_limit", "file:x.jsonl:7")
    assert "its shard is full: 2 live devices" in rejection.detail
    shard.process(readings(1, device="b", start=150))  # a is idle from t = 103: dropped
    assert shard.process(readings(1, device="c", start=151)).rejections == []
    assert set(shard.devices) == {"b", "c"}


def test_an_old_reading_arriving_late_does_not_make_its_device_look_idle():
    shard = ShardState(SETTINGS, emit_scores=False, device_limits=DeviceLimits(idle_seconds=100, max_devices=0))
    shard.process(readings(3, device="a", start=1_000))
    shard.process(readings(1, device="a", start=10))  # a reading from long before, delivered late
    shard.process(readings(1, device="b", start=1_060))  # a sweep: a's newest reading (t = 1,002) is 58 s old
    assert set(shard.devices) == {"a", "b"}
