"""The replay source: rows in batches, then the closing of one slice of a shard's rounds per batch, then the end."""

from __future__ import annotations

import orjson
import pytest

from dataflows.sources import CLOSING_SLICES, ReplaySource
from operators.messages import MessageLimits, RawMessage
from operators.run_totals import SourceProgress
from operators.sharding import ShardBatch


def drain(partition) -> list[list]:
    batches = []
    while True:
        try:
            batches.append(partition.next_batch())
        except StopIteration:
            return batches


@pytest.fixture
def source(tmp_path):
    lines = [{"device_id": f"d{i % 3}", "timestamp": 1_700_000_000 + i, "data": float(i)} for i in range(5)]
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    fresh_starts = []
    source = ReplaySource(
        tmp_path / "in.jsonl",
        MessageLimits(),
        batch_size=3,
        loopback=tmp_path / "loopback.jsonl",
        on_fresh_start=lambda: fresh_starts.append(1),
        shard_keys=["shard-0", "shard-1"],
    )
    return source, fresh_starts


def closing(key: str, parts: range) -> list[list[ShardBatch]]:
    return [[ShardBatch(key, [], close_rounds=(part, CLOSING_SLICES))] for part in parts]


def test_after_the_rows_each_slice_of_a_shard_closes_its_rounds_in_a_batch_of_its_own(source):
    replay, fresh_starts = source
    partition = replay.build_part("telemetry", "replay", None)
    batches = drain(partition)
    assert fresh_starts == [1]
    assert [[type(item) for item in batch] for batch in batches[:2]] == [
        [RawMessage, RawMessage, RawMessage, SourceProgress],
        [RawMessage, RawMessage, SourceProgress],
    ]
    every_slice = range(CLOSING_SLICES)
    assert batches[2:] == closing("shard-0", every_slice) + closing("shard-1", every_slice)
    rows_done, _loopback_offset, slices_closed = partition.snapshot()
    assert (rows_done, slices_closed) == (5, 2 * CLOSING_SLICES)


def test_a_resume_goes_on_with_the_slices_not_yet_closed(source):
    replay, fresh_starts = source
    partition = replay.build_part("telemetry", "replay", (5, None, CLOSING_SLICES + 3))
    assert drain(partition) == closing("shard-1", range(3, CLOSING_SLICES))
    assert fresh_starts == []
