"""A warning when a run has more workers than shards: the extra workers score no devices.

Bytewax tells a dataflow how many workers a run has in one place only: a dynamic sink's
``build``, on each worker as the run starts. So the check is a sink that receives nothing.
More workers than shards is not an error (the extra workers still read Kafka partitions and
write outputs), but it is rarely what was meant, and nothing else would show it.
"""

from __future__ import annotations

import logging
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

log = logging.getLogger("flead.shards")


class _NoOutput(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class ShardsPerWorker(DynamicSink[Any]):
    """On worker 0, a warning at start when the run's workers outnumber ``shards``."""

    def __init__(self, shards: int) -> None:
        self.shards = shards

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _NoOutput:
        if worker_index == 0 and worker_count > self.shards:
            log.warning(idle_workers_warning(self.shards, worker_count))
        return _NoOutput()


def idle_workers_warning(shards: int, workers: int) -> str:
    idle = workers - shards
    return (
        f"FLEAD_SHARDS={shards} is fewer than the {workers} workers of this run: {idle} of them "
        f"score{'s' if idle == 1 else ''} no devices. Set FLEAD_SHARDS to {workers} or more (a recovery store "
        "keeps the count it was written with: start a new one)."
    )
