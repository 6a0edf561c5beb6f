"""The replay source: numbered batches to every shard, in step with FedAvg through the loopback
file, then the closing of one slice of a shard's rounds per batch, then the end."""

from __future__ import annotations

import orjson
import pytest

from dataflows.loopback import loopback_path
from dataflows.snapshots import IncompatibleSnapshot
from dataflows.sources import CLOSING_SLICES, ReplaySource
from operators.fedavg import GlobalModel
from operators.local_model import ModelParameters
from operators.messages import MessageLimits, RawMessage
from operators.replay_lockstep import IN_FLIGHT, BatchDone
from operators.run_totals import SourceProgress
from operators.sharding import ShardBatch, shard_of
from sinks.loopback import LoopbackWriter

KEYS = ["shard-0", "shard-1"]


def model(version: int) -> GlobalModel:
    return GlobalModel(version, ModelParameters({}, 0.0), 0.5, 1, 1, 1, 0.0)


class FedAvgStandIn:
    """Writes to the real loopback file what FedAvg does: a batch's models, then its mark."""

    def __init__(self, out_dir) -> None:
        self.writer = LoopbackWriter(loopback_path(out_dir))

    def done(self, batch: int, *models: GlobalModel) -> None:
        for made in models:
            self.writer.publish(made)
        self.writer.publish(BatchDone(batch))


def drain(partition, fedavg: FedAvgStandIn) -> list[list]:
    """Every batch to the end, each marked done as soon as it is out (none of them makes a model)."""
    batches = []
    while True:
        try:
            batch = partition.next_batch()
        except StopIteration:
            return batches
        assert batch, "the source waited for a batch that is done"
        batches.append(batch)
        numbers = {item.batch for item in batch if type(item) is ShardBatch}
        if numbers != {None}:
            fedavg.done(*numbers)


@pytest.fixture
def replay(tmp_path):
    lines = [{"device_id": f"d{i % 3}", "timestamp": 1_700_000_000 + i, "data": float(i)} for i in range(5)]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    fresh_starts = []
    source = ReplaySource(
        tmp_path / "in.jsonl",
        MessageLimits(),
        batch_size=3,
        loopback=loopback_path(tmp_path),
        on_fresh_start=lambda: fresh_starts.append(1),
        shard_keys=KEYS,
    )
    return source, fresh_starts


def shard_batches(batch: list) -> list[tuple[str, int | None, list[str], tuple[int, int] | None]]:
    return [(b.key, b.batch, [r.device_id for r in b.readings], b.close_rounds) for b in batch if type(b) is ShardBatch]


def test_rows_go_to_every_shard_in_numbered_batches_then_each_slice_closes_in_a_batch_of_its_own(replay, tmp_path):
    source, fresh_starts = replay
    partition = source.build_part("telemetry", "replay", None)
    batches = drain(partition, FedAvgStandIn(tmp_path))
    assert fresh_starts == [1]
    assert [type(item) for item in batches[0]] == [SourceProgress, ShardBatch, ShardBatch]
    assert all(type(r) is RawMessage for b in batches[0][1:] for r in b.readings)
    for number, devices in enumerate([["d0", "d1", "d2"], ["d0", "d1"]]):
        by_shard = {key: [d for d in devices if shard_of(d, KEYS) == key] for key in KEYS}
        assert shard_batches(batches[number]) == [(key, number, by_shard[key], None) for key in KEYS]
    closing = [
        [(key, 2 + i * CLOSING_SLICES + part, [], (part, CLOSING_SLICES) if key == closed else None) for key in KEYS]
        for i, closed in enumerate(KEYS)
        for part in range(CLOSING_SLICES)
    ]
    assert [shard_batches(batch) for batch in batches[2:]] == closing
    assert partition.snapshot()[::2] == (5, 2 * CLOSING_SLICES)
    assert partition.snapshot()[3] == 2 + 2 * CLOSING_SLICES


def test_the_source_waits_for_fedavg_and_hands_a_model_to_the_batch_in_flight_after_its_maker(replay, tmp_path):
    source, _ = replay
    fedavg = FedAvgStandIn(tmp_path)
    partition = source.build_part("telemetry", "replay", None)
    first = [partition.next_batch() for _ in range(IN_FLIGHT)]
    assert [shard_batches(batch)[0][1] for batch in first] == list(range(IN_FLIGHT))
    assert partition.next_batch() == [], f"batch {IN_FLIGHT} went out before batch 0 was done"
    assert partition.next_batch() == []
    fedavg.done(0, model(1), model(2))
    fedavg.done(1, model(3))  # done already, but batch 2 gets only what batch 0 made
    for number, version in ((IN_FLIGHT, 2), (IN_FLIGHT + 1, 3)):
        following = [b for b in partition.next_batch() if type(b) is ShardBatch]
        assert [(b.batch, b.model) for b in following] == [(number, model(version))] * len(KEYS)
    assert all(b.model is None for batch in first for b in batch if type(b) is ShardBatch)


def test_a_resume_goes_on_with_the_numbers_and_the_slices_not_yet_closed(replay, tmp_path):
    source, fresh_starts = replay
    partition = source.build_part("telemetry", "replay", (5, None, CLOSING_SLICES + 3, 40))
    batches = drain(partition, FedAvgStandIn(tmp_path))
    assert [shard_batches(batch)[0][1] for batch in batches] == list(range(40, 40 + CLOSING_SLICES - 3))
    assert [shard_batches(batch)[1][3] for batch in batches] == [(p, CLOSING_SLICES) for p in range(3, CLOSING_SLICES)]
    assert fresh_starts == []


def test_a_position_of_an_earlier_build_stops_the_resume_saying_so(replay):
    source, _ = replay
    with pytest.raises(IncompatibleSnapshot, match="earlier FLEAD build"):
        source.build_part("telemetry", "replay", (5, None, CLOSING_SLICES + 3))


def test_rows_read_while_waiting_go_out_in_their_place_and_count_once_emitted(tmp_path):
    lines = [{"device_id": "d0", "timestamp": 1_700_000_000 + i, "data": float(i)} for i in range(5)]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    source = ReplaySource(tmp_path / "in.jsonl", MessageLimits(), 2, loopback_path(tmp_path), lambda: None, KEYS)
    fedavg = FedAvgStandIn(tmp_path)
    partition = source.build_part("telemetry", "replay", None)
    emitted = [partition.next_batch() for _ in range(IN_FLIGHT)]
    assert partition.next_batch() == []
    assert partition.snapshot()[0] == 2 * IN_FLIGHT, "a row read ahead counted before it went out"
    fedavg.done(0)
    emitted.append(partition.next_batch())
    positions = [r.position for batch in emitted for b in batch if type(b) is ShardBatch for r in b.readings]
    assert sorted(positions) == list(range(1, 6))
    assert [item.rows_read for batch in emitted for item in batch if type(item) is SourceProgress] == [2, 2, 1]
