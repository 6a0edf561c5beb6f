"""The PyFlink job's functions, in a module of their own so that the workers import them by name.

Only the PyFlink venv can import this. Each function writes what it counted and when it saw
its first and last element to ``stats_dir`` when it closes, which is how the job's
processing time is told apart from its start-up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from pyflink.common import Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from bench.references.device_logic import Device, FedAvg, Model


def device_id(line: str) -> str:
    return orjson.loads(line)["device_id"]


class DeviceFunction(KeyedProcessFunction):
    """One device per key: its ``Device`` lives in keyed ``ValueState``; emits ``(device_id, update)`` per round."""

    def __init__(self, stats_dir: str) -> None:
        self.stats_dir = stats_dir

    def open(self, runtime_context: RuntimeContext) -> None:
        self.device = runtime_context.get_state(ValueStateDescriptor("device", Types.PICKLED_BYTE_ARRAY()))
        self.subtask = runtime_context.get_index_of_this_subtask()
        self.records = self.flagged = self.updates = 0
        self.first = self.last = 0.0

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context) -> Iterator[tuple[str, Model]]:
        if not self.records:
            self.first = time.time()
        message = orjson.loads(value)
        device = self.device.value() or Device()
        outcome = device.observe(message, None)
        self.device.update(device)
        self.records += 1
        self.flagged += outcome.flagged
        if outcome.update is not None:
            self.updates += 1
            yield message["device_id"], outcome.update
        self.last = time.time()

    def close(self) -> None:
        stats = {"records": self.records, "flagged": self.flagged, "updates": self.updates}
        _write_stats(self.stats_dir, "device", self.subtask, first=self.first, last=self.last, **stats)


class FedAvgFunction(KeyedProcessFunction):
    """FedAvg on one constant key, its state in keyed ``ValueState``; sends nothing on (see the job's docstring)."""

    def __init__(self, stats_dir: str) -> None:
        self.stats_dir = stats_dir

    def open(self, runtime_context: RuntimeContext) -> None:
        self.fedavg = runtime_context.get_state(ValueStateDescriptor("fedavg", Types.PICKLED_BYTE_ARRAY()))
        self.subtask = runtime_context.get_index_of_this_subtask()
        self.versions = 0

    def process_element(self, value: tuple[str, Model], ctx: KeyedProcessFunction.Context) -> Iterator[Model]:
        fedavg = self.fedavg.value() or FedAvg()
        if fedavg.add(*value) is not None:
            self.versions += 1
        self.fedavg.update(fedavg)
        yield from ()

    def close(self) -> None:
        _write_stats(self.stats_dir, "fedavg", self.subtask, versions=self.versions)


def _write_stats(stats_dir: str, function: str, subtask: int, **stats: float) -> None:
    record = {"function": function, "subtask": subtask, **stats}
    (Path(stats_dir) / f"{function}-{subtask}.json").write_text(json.dumps(record))
