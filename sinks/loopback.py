"""The sink side of the replay loopback: global models appended for the replay source to read."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.fedavg import GlobalModel


class LoopbackWriter:
    """Appends global models; each line is written whole with one ``write`` on an O_APPEND file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def publish(self, model: GlobalModel) -> None:
        os.write(self._fd, orjson.dumps(model.as_row()) + b"\n")

    def close(self) -> None:
        os.close(self._fd)


class _LoopbackPartition(StatelessSinkPartition[GlobalModel]):
    def __init__(self, path: Path) -> None:
        self._writer = LoopbackWriter(path)

    def write_batch(self, items: list[GlobalModel]) -> None:
        for model in items:
            self._writer.publish(model)

    def close(self) -> None:
        self._writer.close()


class LoopbackSink(DynamicSink[GlobalModel]):
    def __init__(self, path: Path) -> None:
        self._path = path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LoopbackPartition:
        return _LoopbackPartition(self._path)
