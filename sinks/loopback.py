"""The sink side of the replay loopback: global models, and the marks of replay batches done,
appended for the replay source to read."""

from __future__ import annotations

import os
from pathlib import Path

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.loopback import loopback_line
from operators.fedavg import GlobalModel
from operators.replay_lockstep import BatchDone


class LoopbackWriter:
    """Appends global models and marks; each line is written whole with one ``write`` on an O_APPEND file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def publish(self, item: GlobalModel | BatchDone) -> None:
        os.write(self._fd, loopback_line(item))

    def close(self) -> None:
        os.close(self._fd)


class _LoopbackPartition(StatelessSinkPartition[GlobalModel | BatchDone]):
    def __init__(self, path: Path) -> None:
        self._writer = LoopbackWriter(path)

    def write_batch(self, items: list[GlobalModel | BatchDone]) -> None:
        for item in items:
            self._writer.publish(item)

    def close(self) -> None:
        self._writer.close()


class LoopbackSink(DynamicSink[GlobalModel | BatchDone]):
    def __init__(self, path: Path) -> None:
        self._path = path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LoopbackPartition:
        return _LoopbackPartition(self._path)
