"""Stable shard keys: the same device lands on the same shard in every process and run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zlib import crc32

from operators.messages import Telemetry


def shard_keys(shards: int) -> list[str]:
    """Every shard key, so that a global model can be fanned out to all of them."""
    width = len(str(shards - 1))
    return [f"shard-{i:0{width}d}" for i in range(shards)]


def shard_of(device_id: str, keys: list[str]) -> str:
    """``crc32(device_id) % shards``; never Python's ``hash()``, which differs per process."""
    return keys[crc32(device_id.encode()) % len(keys)]


@dataclass(slots=True)
class ShardBatch:
    """Readings of one shard, in arrival order: the unit the device stage is fed with.

    Grouping a source batch by shard before it enters the keyed stream makes the
    framework's per-item cost a per-batch cost.
    """

    key: str
    readings: list[Telemetry]


def route_by_shard(items: list[Any], keys: list[str]) -> list[Any]:
    """Readings grouped into one :class:`ShardBatch` per shard; every other item passes as it is."""
    by_shard: dict[str, list[Telemetry]] = {}
    others = []
    for item in items:
        if type(item) is Telemetry:
            key = shard_of(item.device_id, keys)
            batch = by_shard.get(key)
            if batch is None:
                by_shard[key] = [item]
            else:
                batch.append(item)
        else:
            others.append(item)
    return [*others, *(ShardBatch(key, readings) for key, readings in by_shard.items())]
