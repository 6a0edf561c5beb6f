"""Stable shard keys: the same device lands on the same shard in every process and run."""

from __future__ import annotations

from zlib import crc32


def shard_keys(shards: int) -> list[str]:
    """Every shard key, so that a global model can be fanned out to all of them."""
    width = len(str(shards - 1))
    return [f"shard-{i:0{width}d}" for i in range(shards)]


def shard_of(device_id: str, keys: list[str]) -> str:
    """``crc32(device_id) % shards``; never Python's ``hash()``, which differs per process."""
    return keys[crc32(device_id.encode()) % len(keys)]
