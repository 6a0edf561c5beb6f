"""Edge clients' local updates as an input of the federation (``FLEAD_EDGE_UPDATES=true``).

    FLEAD_TOPIC_LOCAL_UPDATES ─► decode + check ──rejected──► dead letters
                                     ▲        └─► valid edge updates ─► FedAvg, beside the shards' own
    global models (their topic) ─────┘ (the newest version the federation has made)

The dataflow's own devices' updates are on the same topic; they carry no ``"origin": "edge"``
and are ignored here, so FedAvg counts each of them once, from the shards.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import StatefulBatchLogic

from dataflows.config import ConfigError, Settings
from dataflows.kafka_sources import EdgeUpdateSource, TopicMessage
from dataflows.snapshots import Snapshot, StoredSnapshot, thaw
from instrumentation import metrics
from operators.fedavg import GlobalModel, LocalUpdate
from operators.messages import Rejection
from operators.update_validation import BaseVersionCheck, UpdateLimits, decode_update

BASE_VERSION_WAIT_SECONDS = 30.0
"""How long an update whose base version is not known yet waits for it (wall time)."""


class EdgeUpdateLogic(StatefulBatchLogic[TopicMessage | GlobalModel, LocalUpdate | Rejection, Snapshot]):
    """Decodes and checks edge updates on one key, where the newest global version is known."""

    def __init__(self, check: BaseVersionCheck, limits: UpdateLimits) -> None:
        self.check = check
        self.limits = limits

    @classmethod
    def builder(cls, limits: UpdateLimits, newest_version: int):
        def build(resume: StoredSnapshot | None) -> EdgeUpdateLogic:
            if resume is not None:
                return cls(thaw(resume, "edge_updates"), limits)
            return cls(BaseVersionCheck(newest_version, BASE_VERSION_WAIT_SECONDS), limits)

        return build

    def on_batch(self, values: list[TopicMessage | GlobalModel]) -> tuple[list[LocalUpdate | Rejection], bool]:
        now = time.time()
        out: list[LocalUpdate | Rejection] = []
        for value in values:
            if isinstance(value, GlobalModel):
                out.extend(self.check.adopt(value.version))
                continue
            decoded = decode_update(value.value, value.source, self.limits)
            if type(decoded) is LocalUpdate:
                out.extend(self.check.offer(decoded, value.value, value.source, now))
            elif decoded is not None:
                out.append(decoded)
        out.extend(self.check.expire(now))
        metrics.count_edge_updates(sum(type(item) is LocalUpdate for item in out))
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self.check.waiting:
            return None
        return datetime.now(UTC) + timedelta(seconds=1)

    def on_notify(self) -> tuple[list[LocalUpdate | Rejection], bool]:
        return list(self.check.expire(time.time())), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[LocalUpdate | Rejection], bool]:
        return list(self.check.finish(time.time())), StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot:
        return Snapshot(self.check)


class EdgeUpdates(NamedTuple):
    updates: Stream[list[LocalUpdate]]
    """Valid edge updates, a list per batch, as the shards' updates go to FedAvg."""
    rejected: Stream[Rejection]


def edge_updates(
    flow: Dataflow, settings: Settings, returned_models: Stream[GlobalModel], continue_from: GlobalModel | None
) -> EdgeUpdates:
    """Edge clients' updates from their topic, checked against ``settings.update_limits`` and
    the newest global version (``continue_from``'s, then every model on the global-model topic)."""
    if not settings.reads_kafka:
        raise ConfigError("FLEAD_EDGE_UPDATES=true needs FLEAD_INPUT=kafka (edge clients send their updates to Kafka)")
    messages = op.input("edge_updates_in", flow, EdgeUpdateSource(settings.kafka))
    newest = continue_from.version if continue_from is not None else 0
    checked = op.key_rm(
        "edge_updates_checked",
        op.stateful_batch(
            "edge_updates",
            op.key_on("edge_key", op.merge("edge_input", messages, returned_models), lambda _: "edge"),
            EdgeUpdateLogic.builder(settings.update_limits, newest),
        ),
    )
    updates = op.flat_map_batch(
        "edge_update_batches", checked, lambda batch: [u] if (u := [i for i in batch if type(i) is LocalUpdate]) else []
    )
    rejected = op.filter("edge_rejections", checked, lambda item: type(item) is Rejection)
    return EdgeUpdates(updates, rejected)
