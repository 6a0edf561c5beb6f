"""A replay's batches and its global models in a fixed order, so that timing changes no result.

In a replay the global models come back to the shards through the loopback file
(``dataflows/loopback.py``). If the replay source read ahead as fast as it could, which model
scores which reading would depend on how fast FedAvg's worker ran beside the source's: with
two processes the shards scored with versions up to two event minutes older than with one,
and flagged 2 % to 54 % more anomalies on the benchmark fleet, a different count in each run.
So the two sides keep step:

- The source numbers its batches and sends each to every shard, empty where a shard has no
  readings, so that every shard reports every batch (:class:`ShardUpdates`).
- FedAvg takes a batch's updates when every shard has reported it, batch after batch in
  their numbers' order and each batch's in shard order (:class:`BatchOrder`), and after the
  models they make it writes :class:`BatchDone` to the loopback.
- The source emits batch ``n`` only when batch ``n - IN_FLIGHT`` is done, and with it the
  newest model that the batches up to ``n - IN_FLIGHT`` made (:class:`ReturnedModels`).

Which model a shard adopts before which readings is then fixed by the input and the settings:
one process, several workers or several processes give the same anomalies, local updates and
global models. Kafka input has no such order; its models arrive when they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from operators.fedavg import GlobalModel, LocalUpdate

IN_FLIGHT = 2
"""Batches a replay source may have ahead of FedAvg: with 2 the shards can work on one batch
while FedAvg finishes the one before. A model made by batch ``n`` reaches the shards with batch
``n + 2``, which is also when one process without the lockstep handed it over: its results
stay as they were."""


@dataclass(frozen=True, slots=True)
class BatchDone:
    """FedAvg has taken every update of replay batch ``batch``; the models it made came before."""

    batch: int


class ShardUpdates(NamedTuple):
    """One shard's local updates from one numbered replay batch (often none)."""

    batch: int
    shard: str
    updates: list[LocalUpdate]


@dataclass
class BatchOrder:
    """FedAvg's side: the shards' reports of numbered batches, released in a fixed order."""

    shards: list[str]
    next_batch: int = 0
    """The number of the next batch to release; the ones before it are done."""
    reported: dict[int, dict[str, list[LocalUpdate]]] = field(default_factory=dict)

    def offer(self, report: ShardUpdates) -> list[tuple[int, list[LocalUpdate]]]:
        """The batches this report completes, with their updates: each batch once every shard
        has reported it and every batch before it is released; its updates in shard order."""
        self.reported.setdefault(report.batch, {}).setdefault(report.shard, []).extend(report.updates)
        released = []
        while len(reports := self.reported.get(self.next_batch, {})) == len(self.shards):
            del self.reported[self.next_batch]
            released.append((self.next_batch, [update for shard in self.shards for update in reports[shard]]))
            self.next_batch += 1
        return released


@dataclass
class ReturnedModels:
    """The source's side: the models read back from the loopback, and which batches are done.

    A model is read before the :class:`BatchDone` of the batch that made it, so it waits
    unmarked until that mark comes; a model of no batch (an initial model) goes with the next.
    """

    done: int = -1
    """The newest batch known to be done."""
    marked: list[tuple[int, GlobalModel]] = field(default_factory=list)
    """Models with the batch that made them, in the order they were made."""
    unmarked: list[GlobalModel] = field(default_factory=list)

    def read(self, items: list[GlobalModel | BatchDone]) -> None:
        for item in items:
            if type(item) is BatchDone:
                self.marked.extend((item.batch, model) for model in self.unmarked)
                self.unmarked = []
                self.done = max(self.done, item.batch)
            else:
                self.unmarked.append(item)

    def may_emit(self, batch: int) -> bool:
        return self.done >= batch - IN_FLIGHT

    def for_batch(self, batch: int) -> GlobalModel | None:
        """The newest of the models not yet handed over that batches up to ``batch - IN_FLIGHT``
        made: the one the shards adopt before ``batch``'s readings."""
        last = batch - IN_FLIGHT
        due = [model for made_by, model in self.marked if made_by <= last]
        if not due:
            return None
        self.marked = [(made_by, model) for made_by, model in self.marked if made_by > last]
        return max(due, key=lambda model: model.version)

    def rest(self) -> GlobalModel | None:
        """The newest of every model not yet handed over, marked or not (at the end of a replay)."""
        left = [model for _, model in self.marked] + self.unmarked
        self.marked, self.unmarked = [], []
        return max(left, key=lambda model: model.version) if left else None
