"""Stable shard keys: the same device lands on the same shard in every process and run."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any
from zlib import crc32

from operators.fedavg import GlobalModel
from operators.messages import RawMessage, Telemetry
from operators.worker_routing import key_hash

SPREAD = 120
"""Shard ``i``'s key hashes to ``i`` modulo this. With a number of workers that divides it
(1 to 6, 8, 10, 12, 15, 20, 24, 30, 40, 60, 120), shard ``i`` is on worker ``i % workers``,
so each worker holds as many shards as any other, give or take one."""


def shard_keys(shards: int) -> list[str]:
    """Every shard key, so that a global model can be fanned out to all of them: ``shard-i.n``,
    with the first ``n`` that puts shard ``i`` on worker ``i % workers`` (see :data:`SPREAD`)."""
    return list(_spread_keys(shards))


@cache
def _spread_keys(shards: int) -> tuple[str, ...]:
    width = len(str(shards - 1))
    keys = []
    for i in range(shards):
        n = 0
        while key_hash(key := f"shard-{i:0{width}d}.{n}") % SPREAD != i % SPREAD:
            n += 1
        keys.append(key)
    return tuple(keys)


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
    readings: list[Telemetry | RawMessage]
    batch: int | None = None
    """The replay batch's number (``operators/replay_lockstep.py``): the shard reports its
    updates from it, even none. ``None`` for live input."""
    model: GlobalModel | None = None
    """A replay's newest global model, adopted before the readings."""
    close_rounds: tuple[int, int] | None = None
    """``(slice, slices)``: the input has ended, so after these readings close the partial
    rounds of that slice of the shard's devices (:meth:`ShardState.close_rounds`)."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Undecoded readings cross between processes as plain tuples: pickle calls back into
        Python for every named tuple, which costs about five times as much."""
        readings = [tuple(r) if type(r) is RawMessage else r for r in self.readings]
        return _shard_batch, (self.key, readings, self.batch, self.model, self.close_rounds)


def _shard_batch(
    key: str,
    readings: list[Any],
    batch: int | None,
    model: GlobalModel | None,
    close_rounds: tuple[int, int] | None,
) -> ShardBatch:
    new = tuple.__new__
    readings = [new(RawMessage, r) if type(r) is tuple else r for r in readings]
    return ShardBatch(key, readings, batch, model, close_rounds)


def group_by_shard(items: list[Any], keys: list[str]) -> tuple[list[Any], dict[str, list[Telemetry | RawMessage]]]:
    """Every item that is not a reading, and the readings (decoded or not) of each shard that
    has some, in arrival order."""
    by_shard: dict[str, list[Telemetry | RawMessage]] = {}
    others = []
    for item in items:
        if type(item) is Telemetry or type(item) is RawMessage:
            key = shard_of(item.device_id, keys)
            batch = by_shard.get(key)
            if batch is None:
                by_shard[key] = [item]
            else:
                batch.append(item)
        else:
            others.append(item)
    return others, by_shard


def route_by_shard(items: list[Any], keys: list[str]) -> list[Any]:
    """Readings (decoded or not) grouped into one :class:`ShardBatch` per shard; every other
    item passes as it is."""
    others, by_shard = group_by_shard(items, keys)
    return [*others, *(ShardBatch(key, readings) for key, readings in by_shard.items())]


def numbered_batches(items: list[Any], keys: list[str], batch: int, model: GlobalModel | None) -> list[Any]:
    """A replay batch: its readings grouped by shard, numbered ``batch``, with ``model``, and one
    :class:`ShardBatch` for every shard, empty or not; every other item first, as it is."""
    others, by_shard = group_by_shard(items, keys)
    return [*others, *(ShardBatch(key, by_shard.get(key, []), batch, model) for key in keys)]


def newest_to_every_shard(models: list[GlobalModel], keys: list[str]) -> list[tuple[str, GlobalModel]]:
    """The newest global model of a batch, once for every shard key.

    A shard that adopts a version closes the evaluations of the versions it skipped, with
    the counts it would have closed them with had they come one by one before it (none), so
    the older models of the same batch would change nothing but cost an item per shard each.
    """
    newest = max(models, key=lambda model: model.version)
    return [(key, newest) for key in keys]
