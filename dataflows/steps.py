"""Thin Bytewax adapters: each stateful step feeds batches to one piece of plain logic."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from dataflows import stopping
from dataflows.snapshots import ChangedShards, Snapshot, StoredSnapshot, thaw
from dataflows.thread_state import hold_thread_state
from instrumentation import metrics
from operators.alerts import Alert, AlertGate, AlertRules, Row
from operators.device import Detection, DetectionSettings
from operators.evaluation import EvaluationAggregator
from operators.fedavg import FedAvgAggregator, FederationRules, GlobalModel, LocalUpdate
from operators.messages import MessageLimits, RawMessage, Rejection, Telemetry
from operators.replay_lockstep import BatchDone, BatchOrder, ShardUpdates
from operators.run_totals import RunTotals, SourceProgress
from operators.shard import DeviceLimits, ShardCounters, ShardResult, ShardState
from operators.sharding import ShardBatch
from report.collect import ReportCollector


class ShardLogic(StatefulBatchLogic[ShardBatch | GlobalModel, ShardResult, Snapshot]):
    """The device stage for one shard key.

    With ``idle_seconds`` (live input), the partial round of a device that has been silent
    that long in wall time is closed, so slow devices still reach FedAvg. ``first_model``
    (``FLEAD_INITIAL_MODEL``, a fresh start only) is adopted before the shard's first
    readings, so its devices' first rounds start from it.
    """

    def __init__(self, state: ShardState, idle_seconds: float | None, first_model: GlobalModel | None = None) -> None:
        self.state = state
        self.idle_seconds = idle_seconds
        self.next_idle_check = time.time() + idle_seconds if idle_seconds else None
        self.first_model = first_model

    @classmethod
    def builder(
        cls,
        settings: DetectionSettings,
        emit_scores: bool,
        limits: MessageLimits,
        idle_seconds: float | None,
        report_points: int = 0,
        device_limits: DeviceLimits | None = None,
        initial_model: GlobalModel | None = None,
    ):
        """``report_points``: the shard's share of the readings the run report draws (0: no report)."""

        def build(resume: StoredSnapshot | None) -> ShardLogic:
            hold_thread_state()
            if resume is not None:
                return cls(thaw(resume, "shard"), idle_seconds)
            state = ShardState(settings, emit_scores, limits, report_points, device_limits)
            return cls(state, idle_seconds, initial_model)

        return build

    def on_batch(self, values: list[ShardBatch | GlobalModel]) -> tuple[list[ShardResult], bool]:
        """Live input's batches and models in one go; each numbered replay batch on its own,
        as its result reports that batch's updates."""
        now = time.time()
        items: list[Telemetry | RawMessage | GlobalModel] = []
        if self.first_model is not None:
            items.append(self.first_model)
            self.first_model = None
        results = []
        for value in values:
            if type(value) is not ShardBatch:
                items.append(value)
                continue
            metrics.LATENCY.observe_many([now - reading.ingested_at for reading in value.readings])
            if value.model is not None:
                items.append(value.model)
            items.extend(value.readings)
            if value.batch is not None:
                results.append(self._replay_batch(items, value, now))
                items = []
        if items or not results:
            results.append(self.state.process(items, now))
        return results, StatefulBatchLogic.RETAIN

    def _replay_batch(
        self, items: list[Telemetry | RawMessage | GlobalModel], batch: ShardBatch, now: float
    ) -> ShardResult:
        result = self.state.process(items, now)
        if batch.close_rounds is not None:
            closed = self.state.close_rounds(*batch.close_rounds)
            result.updates.extend(closed.updates)
            result.update_rows.extend(closed.update_rows)
            result.counters.merge(closed.counters)
        result.batch = batch.batch
        return result

    def notify_at(self) -> datetime | None:
        if self.next_idle_check is None:
            return None
        return datetime.fromtimestamp(self.next_idle_check, UTC)

    def on_notify(self) -> tuple[list[ShardResult], bool]:
        now = time.time()
        self.next_idle_check = now + self.idle_seconds / 2
        result = self.state.close_idle_rounds(now, self.idle_seconds)
        return ([result] if result.updates else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[ShardResult], bool]:
        if stopping.requested():  # not the end of the input: rounds stay open for a resume
            return [], StatefulBatchLogic.RETAIN
        return [self.state.finish()], StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot:
        return Snapshot(self.state)


class FedAvgLogic(StatefulBatchLogic[list[LocalUpdate] | ShardUpdates, GlobalModel | BatchDone, Snapshot]):
    """FedAvg on one key. A replay's updates come as each shard's report of each numbered batch,
    and are taken batch by batch in a fixed order (``operators/replay_lockstep.py``), each
    batch's models followed by its :class:`BatchDone`; live input's as they come."""

    def __init__(self, aggregator: FedAvgAggregator, order: BatchOrder) -> None:
        self.aggregator = aggregator
        self.order = order

    @classmethod
    def builder(
        cls,
        every_updates: int,
        every_seconds: float,
        detection: DetectionSettings,
        shards: list[str],
        continue_from: GlobalModel | None = None,
        rules: FederationRules | None = None,
    ):
        """``shards``: every shard key, which reports each replay batch; ``continue_from``: the
        newest global model made before this run, for a start without recovery state."""

        def build(resume: StoredSnapshot | None) -> FedAvgLogic:
            if resume is not None:
                aggregator, order = thaw(resume, "fedavg")
                if order.shards != shards:
                    raise ChangedShards(len(order.shards), len(shards))
                return cls(aggregator, order)
            aggregator = FedAvgAggregator(
                every_updates,
                every_seconds,
                detection.score_threshold,
                detection.target_false_alarm_rate,
                rules=rules or FederationRules(),
            )
            if continue_from is not None:
                aggregator.adopt(continue_from)
            return cls(aggregator, BatchOrder(shards))

        return build

    def on_batch(self, values: list[list[LocalUpdate] | ShardUpdates]) -> tuple[list[GlobalModel | BatchDone], bool]:
        out: list[GlobalModel | BatchDone] = []
        for value in values:
            if type(value) is not ShardUpdates:
                out.extend(self._add(value))
                continue
            for batch, updates in self.order.offer(value):
                out.extend(self._add(updates))
                out.append(BatchDone(batch))
        return out, StatefulBatchLogic.RETAIN

    def _add(self, updates: list[LocalUpdate]) -> list[GlobalModel]:
        add = self.aggregator.add
        return [model for update in updates if (model := add(update)) is not None]

    def snapshot(self) -> Snapshot:
        return Snapshot((self.aggregator, self.order))


class EvaluationLogic(StatefulBatchLogic[ShardCounters, dict[str, Any], Snapshot]):
    def __init__(self, aggregator: EvaluationAggregator) -> None:
        self.aggregator = aggregator

    @classmethod
    def builder(cls, shards: int):
        def build(resume: StoredSnapshot | None) -> EvaluationLogic:
            return cls(thaw(resume, "evaluation") if resume is not None else EvaluationAggregator(shards))

        return build

    def on_batch(self, values: list[ShardCounters]) -> tuple[list[dict[str, Any]], bool]:
        add = self.aggregator.add
        rows = [row for counters in values for row in add(counters.closed_evaluations, counters.moves)]
        return rows, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[dict[str, Any]], bool]:
        if stopping.requested():  # the versions in force are still being evaluated
            return [], StatefulBatchLogic.RETAIN
        return self.aggregator.finish(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot:
        return Snapshot(self.aggregator)


SummaryInput = SourceProgress | Rejection | ShardCounters | GlobalModel | list[Detection] | dict[str, Any]
"""Read counts, rejections, shard counters, global models; and for the run report, the readings
it may draw (lists of detections) and live evaluations (rows)."""


class AlertLogic(StatefulBatchLogic[list[Row], Alert, Snapshot]):
    """Which alert-worthy anomaly rows become alerts: the per-device cooldown and the fleet's
    rate limit (``operators/alerts.py``), on one key so that they hold fleet-wide."""

    def __init__(self, gate: AlertGate) -> None:
        self.gate = gate

    @classmethod
    def builder(cls, rules: AlertRules):
        def build(resume: StoredSnapshot | None) -> AlertLogic:
            if resume is None:
                return cls(AlertGate(rules))
            gate = thaw(resume, "alerts")
            gate.rules = rules  # the cooldown and the score of this start's settings
            return cls(gate)

        return build

    def on_batch(self, values: list[list[Row]]) -> tuple[list[Alert], bool]:
        alerts: list[Alert] = []
        for rows in values:
            gated = self.gate.offer(rows)
            metrics.count_alerts_held_back(gated.held_back)
            alerts.extend(gated.alerts)
        return alerts, StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot:
        return Snapshot(self.gate)


class SummaryLogic(StatefulBatchLogic[SummaryInput, tuple[str, Any], Snapshot]):
    """Adds up the run's totals; a progress line every few seconds, the summary at the end, and
    with a report collector, the run report after it."""

    def __init__(self, totals: RunTotals, collector: ReportCollector | None, progress_seconds: float) -> None:
        self.totals = totals
        self.collector = collector
        self.progress_seconds = progress_seconds
        self.started = time.monotonic()
        self.next_progress = self._later()

    @classmethod
    def builder(cls, progress_seconds: float, report_points: int = 0):
        """``report_points``: readings the run report draws over the fleet (0: no report)."""

        def build(resume: StoredSnapshot | None) -> SummaryLogic:
            if resume is not None:
                totals, collector = thaw(resume, "summary")
            else:
                totals, collector = RunTotals(), ReportCollector(report_points) if report_points else None
            return cls(totals, collector, progress_seconds)

        return build

    def _later(self) -> datetime | None:
        if not self.progress_seconds:
            return None
        return datetime.now(UTC) + timedelta(seconds=self.progress_seconds)

    def on_batch(self, values: list[SummaryInput]) -> tuple[list[tuple[str, Any]], bool]:
        totals, collector = self.totals, self.collector
        if collector is not None:  # before the readings: a device replaced makes room for another
            for item in values:
                if isinstance(item, ShardCounters):
                    collector.undraw(item.undrawn)
        for item in values:
            if isinstance(item, ShardCounters):
                totals.add_counters(item)
                metrics.count_shard(item)
                if collector is not None:
                    collector.add_readings(item.readings_by_device)
            elif isinstance(item, list):
                if collector is not None:
                    collector.add_points(item)
            elif isinstance(item, dict):
                if collector is not None:
                    collector.add_evaluation(item)
            elif isinstance(item, SourceProgress):
                totals.add_read(item)
                metrics.count_read(item)
            elif isinstance(item, Rejection):
                totals.add_rejection(item.reason)
                metrics.count_rejected(item.reason)
            else:
                totals.add_global(item)
                metrics.record_global(item)
                if collector is not None:
                    collector.add_model(item)
        metrics.record_live_evaluation(totals.live_evaluation)
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.next_progress

    def on_notify(self) -> tuple[list[tuple[str, Any]], bool]:
        self.next_progress = self._later()
        elapsed = time.monotonic() - self.started
        return [("progress", f"{self.totals.progress_line()} · {elapsed:,.0f} s")], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[tuple[str, Any]], bool]:
        elapsed = time.monotonic() - self.started
        summary = {**self.totals.summary(), "seconds_since_first_rows": round(elapsed, 3)}
        if stopping.stopped_by() is not None:
            summary["stopped_by"] = stopping.stopped_by()
        if self.collector is None:
            return [("summary", summary)], StatefulBatchLogic.RETAIN
        return [("summary", summary), ("report", self.collector.report(summary))], StatefulBatchLogic.RETAIN

    def snapshot(self) -> Snapshot:
        return Snapshot((self.totals, self.collector))
