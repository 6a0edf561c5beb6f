"""A shard: the devices that hash to one key, the global model they share, and its live evaluation.

The device stage keys its stream by shard rather than by device so that a global model can
be fanned out to a fixed set of keys (see ``design.md``). Everything here is plain Python;
the Bytewax step in ``dataflows/steps.py`` only feeds it batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from operators.device import MODEL_THRESHOLD, Detection, DetectionSettings
from operators.device_arrays import SEVERITIES, DeviceArrays, Step
from operators.evaluation import FINISHED, ConfusionCounts
from operators.fedavg import GlobalModel, LocalUpdate
from operators.messages import MessageLimits, RawMessage, Rejection, Telemetry, decode_raw, excerpt, iso_timestamp
from operators.report_sampling import (
    MIN_POINTS_PER_DEVICE,
    ReportPoint,
    ReportPoints,
    capacity_per_device,
    is_kept,
    kept_many,
    report_point,
)
from operators.update_validation import edge_update_message

ARRAY_STEP_DEVICES = 8
"""A step runs as arrays when at least this many devices have a reading in it; the readings
left when fewer have (one busy device, say) go through each device's ``DeviceState`` one by
one, which costs less than a step of arrays for so few."""

DECIDERS = ("z_rule", "local_model", "global_model", "is_anomaly")
"""The decisions whose quality against labels the run reports, side by side."""


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    """How much device state a shard keeps, whatever arrives.

    ``idle_seconds``: a device silent this long in event time (the newest reading the shard
    has seen) has its partial round closed and its state dropped; if it comes back it starts
    afresh, calibrated by the fleet's normal model (0: never dropped).
    ``max_devices``: live devices per shard; a reading of a new device beyond it is rejected
    (``device_limit``) until idle devices make room (0: no limit).
    """

    idle_seconds: float = 30 * 86_400.0
    max_devices: int = 320_000


@dataclass(slots=True)
class ShardCounters:
    """What one shard, or the shards of one worker, did in one batch, for the run's totals,
    metrics and live evaluation."""

    processed: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    local_updates: int = 0
    update_bytes: int = 0
    """The local updates' bytes as edge clients' messages: what the devices would send if they
    trained where they are, against the readings they send now."""
    detection: dict[str, ConfusionCounts] = field(default_factory=dict)
    closed_evaluations: dict[int, ConfusionCounts] = field(default_factory=dict)
    """The final live-evaluation counts of each global version the shards held and moved past
    in this batch."""
    moves: dict[tuple[int, int], int] = field(default_factory=dict)
    """How many shards moved from one global version to another (0: none yet; ``FINISHED``:
    the input ended). A move past several versions at once is one entry, so a shard that
    skips versions costs nothing per version skipped."""
    readings_by_device: dict[str, int] = field(default_factory=dict)
    """For the run report: the readings of each device whose state ended (dropped when idle,
    or at the end of a bounded input)."""
    undrawn: list[str] = field(default_factory=list)
    """For the run report: devices it no longer draws, each replaced by a device with an anomaly."""

    def move(self, old_version: int, new_version: int, counts: ConfusionCounts | None) -> None:
        """One shard moved on, with its final counts for the version it held, if any."""
        self.moves[(old_version, new_version)] = self.moves.get((old_version, new_version), 0) + 1
        if counts is not None:
            self.closed_evaluations[old_version] = counts

    def merge(self, other: ShardCounters) -> None:
        self.processed += other.processed
        self.local_updates += other.local_updates
        self.update_bytes += other.update_bytes
        for severity, n in other.anomalies.items():
            self.anomalies[severity] = self.anomalies.get(severity, 0) + n
        for name, counts in other.detection.items():
            self.detection.setdefault(name, ConfusionCounts()).merge(counts)
        for version, counts in other.closed_evaluations.items():
            self.closed_evaluations.setdefault(version, ConfusionCounts()).merge(counts)
        for move, n in other.moves.items():
            self.moves[move] = self.moves.get(move, 0) + n
        for device_id, n in other.readings_by_device.items():
            self.readings_by_device[device_id] = self.readings_by_device.get(device_id, 0) + n
        self.undrawn.extend(other.undrawn)


def _beyond_the_device_limit(reading: Telemetry, raw: RawMessage | None, max_devices: int) -> Rejection:
    """A dead letter for a reading of a new device whose shard is full. Readings the source
    decoded (CSV rows) no longer know their line: their source is the device stage."""
    detail = f"a new device, and its shard is full: {max_devices:,} live devices (FLEAD_MAX_DEVICES_PER_SHARD)"
    if raw is not None:
        return Rejection("device_limit", excerpt(raw.raw), f"{raw.source}:{raw.position}", time.time(), detail)
    message = {"device_id": reading.device_id, "timestamp": iso_timestamp(reading.timestamp), "data": reading.values}
    return Rejection("device_limit", excerpt(orjson.dumps(message)), "device-stage", time.time(), detail)


def combined_counters(counters: Iterable[ShardCounters]) -> ShardCounters:
    """The counters of many shards as one: the shards of a worker send one item per batch
    to the single-key steps (totals, evaluation), not one per shard."""
    combined = ShardCounters()
    for item in counters:
        combined.merge(item)
    return combined


@dataclass(slots=True)
class _Collected:
    """What a batch's readings produced so far, each with its place in the batch."""

    detections: list[tuple[int, Detection]] = field(default_factory=list)
    report: list[tuple[int, ReportPoint]] = field(default_factory=list)
    updates: list[tuple[int, LocalUpdate]] = field(default_factory=list)

    @staticmethod
    def in_order(placed: list[tuple[int, Any]]) -> list[Any]:
        """The items in the batch's order (steps collect them device by device)."""
        placed.sort(key=lambda pair: pair[0])
        return [item for _, item in placed]


@dataclass(slots=True)
class ShardResult:
    """Everything one shard produced from one batch: one item downstream instead of many."""

    detections: list[Detection] = field(default_factory=list)
    """The flagged readings; every reading when scores are asked for."""
    report: ReportPoints = field(default_factory=ReportPoints)
    """The readings the run report may keep (``operators/report_sampling.py``) and the
    anomalies, of the devices it draws."""
    updates: list[LocalUpdate] = field(default_factory=list)
    update_rows: list[dict[str, Any]] = field(default_factory=list)
    """The updates as rows of the local-models table (:meth:`count_updates`)."""
    counters: ShardCounters = field(default_factory=ShardCounters)
    rejections: list[Rejection] = field(default_factory=list)
    """Undecoded messages that turned out not to be valid."""
    batch: int | None = None
    """The numbered replay batch whose updates these are (``operators/replay_lockstep.py``)."""

    def count_updates(self) -> ShardResult:
        """Make the updates' rows and count the updates, and their bytes as edge clients'
        messages, which are those rows and a little more."""
        self.update_rows = [update.as_row() for update in self.updates]
        self.counters.local_updates = len(self.updates)
        self.counters.update_bytes = sum(
            len(edge_update_message(update, row)) for update, row in zip(self.updates, self.update_rows, strict=True)
        )
        return self

    @property
    def anomalies(self) -> list[Detection]:
        return [detection for detection in self.detections if detection.is_anomaly]


class ShardState:
    """The devices of one shard, the newest global model it has, and live-evaluation counts.

    The devices' state is one :class:`DeviceArrays`; a batch's readings go through it in
    steps, each step the next reading of every device that has one, so a device's readings
    keep their order and a step's arithmetic is done for all its devices at once. A global
    model in the batch ends the steps before it: the readings after it are scored with it.
    """

    def __init__(
        self,
        settings: DetectionSettings,
        emit_scores: bool,
        limits: MessageLimits | None = None,
        report_points: int = 0,
        device_limits: DeviceLimits | None = None,
    ) -> None:
        """``report_points``: this shard's share of the readings the run report draws (0: no report).

        The report draws at most ``report_points // MIN_POINTS_PER_DEVICE`` of the shard's
        devices: the first to arrive, except that a device with an anomaly takes the place of
        the longest-drawn one without any. Only their readings go to the report, so its
        traffic and memory stay bounded however large the fleet."""
        self.settings = settings
        self.emit_scores = emit_scores
        self.limits = limits if limits is not None else MessageLimits()
        self.report_points = report_points
        self.report_devices = max(1, report_points // MIN_POINTS_PER_DEVICE)
        self.drawn: dict[str, None] = {}
        """The devices the report draws, the longest drawn first (dropped idle devices stay)."""
        self.quiet: dict[str, None] = {}
        """The drawn devices without an anomaly yet."""
        self.device_limits = device_limits if device_limits is not None else DeviceLimits()
        self.clock = 0.0
        """The newest event time among the shard's readings."""
        self.next_idle_sweep = 0.0
        self.arrays = DeviceArrays(settings)
        self.devices: dict[str, int] = {}
        """Each live device's row in :attr:`arrays`, in the order they came."""
        self.global_model: GlobalModel | None = None
        self.evaluation = ConfusionCounts()

    @property
    def global_version(self) -> int:
        return self.global_model.version if self.global_model is not None else 0

    def readings_of(self, device_id: str) -> int:
        """How many readings of a live device the shard has scored."""
        return int(self.arrays.readings[self.devices[device_id]])

    def process(self, batch: list[Telemetry | RawMessage | GlobalModel], now: float = 0.0) -> ShardResult:
        """Readings (decoded or not) and global models in arrival order; ``now`` (wall time)
        marks the devices seen."""
        counters = ShardCounters(detection={name: ConfusionCounts() for name in DECIDERS})
        result = ShardResult(counters=counters)
        limits = self.limits
        max_devices = self.device_limits.max_devices
        report_capacity = capacity_per_device(self.report_points, len(self.drawn)) if self.report_points else 0
        clock = self.clock
        devices = self.devices
        collected = _Collected()
        segment: list[tuple[int, int, Telemetry]] = []
        """The readings since the last global model: (place in the batch, device row, reading)."""
        for place, item in enumerate(batch):
            raw = None
            if type(item) is RawMessage:
                raw, item = item, decode_raw(item, limits)
                if type(item) is Rejection:
                    result.rejections.append(item)
                    continue
            elif isinstance(item, GlobalModel):
                self._observe(segment, now, report_capacity, counters, collected)
                segment = []
                self.receive_global(item, counters)
                continue
            row = devices.get(item.device_id)
            if row is None:
                if max_devices and len(devices) >= max_devices:
                    result.rejections.append(_beyond_the_device_limit(item, raw, max_devices))
                    continue
                row = devices[item.device_id] = self.arrays.add(item.device_id)
            if item.timestamp > clock:
                clock = item.timestamp
            segment.append((place, row, item))
        self._observe(segment, now, report_capacity, counters, collected)
        result.detections = collected.in_order(collected.detections)
        result.report = ReportPoints(collected.in_order(collected.report))
        result.updates = collected.in_order(collected.updates)
        self.clock = clock
        idle_seconds = self.device_limits.idle_seconds
        if idle_seconds and clock >= self.next_idle_sweep:
            result.updates.extend(self._drop_idle_devices(clock - idle_seconds, counters))
            self.next_idle_sweep = clock + idle_seconds / 2
        return result.count_updates()

    def _observe(
        self,
        segment: list[tuple[int, int, Telemetry]],
        now: float,
        report_capacity: int,
        counters: ShardCounters,
        collected: _Collected,
    ) -> None:
        """Score a segment's readings in steps, into ``collected``."""
        if not segment:
            return
        queues: dict[int, list[tuple[int, int, Telemetry]]] = {}
        for entry in segment:
            queue = queues.get(entry[1])
            if queue is None:
                queues[entry[1]] = [entry]
            else:
                queue.append(entry)
        ordered = sorted(queues.values(), key=len, reverse=True)
        self.arrays.last_seen[list(queues)] = now
        depth = 0
        while depth < len(ordered[0]) and sum(len(queue) > depth for queue in ordered) >= ARRAY_STEP_DEVICES:
            taken = [queue[depth] for queue in ordered if len(queue) > depth]
            step = self.arrays.observe(
                [reading for _, _, reading in taken],
                np.fromiter((row for _, row, _ in taken), np.int64, len(taken)),
                self.global_model,
            )
            self._collect_step(step, [place for place, _, _ in taken], report_capacity, counters, collected)
            depth += 1
        for queue in ordered:
            if len(queue) <= depth:
                break
            row = queue[0][1]
            device = self.arrays.device(row)
            for place, _, reading in queue[depth:]:
                detection, update = device.observe(reading, self.settings, self.global_model)
                self._collect_one(place, detection, report_capacity, counters, collected)
                if update is not None:
                    collected.updates.append((place, update))
            self.arrays.store(row, device)

    def _collect_step(
        self,
        step: Step,
        places: list[int],
        report_capacity: int,
        counters: ShardCounters,
        collected: _Collected,
    ) -> None:
        counters.processed += len(places)
        flagged = step.is_anomaly
        if report_capacity:
            candidates = np.flatnonzero(flagged | kept_many(step.reading_index, report_capacity)).tolist()
            chosen = self._drawn(step.readings, candidates, flagged.tolist(), counters)
            collected.report.extend(zip([places[i] for i in chosen], step.report_points(chosen), strict=True))
        emitted = list(range(len(places))) if self.emit_scores else np.flatnonzero(flagged).tolist()
        collected.detections.extend(zip([places[i] for i in emitted], step.detections(emitted), strict=True))
        if flagged.any():
            for severity, n in zip(*np.unique(step.severity[flagged], return_counts=True), strict=True):
                name = SEVERITIES[severity]
                counters.anomalies[name] = counters.anomalies.get(name, 0) + int(n)
        collected.updates.extend((places[i], update) for i, update in step.updates if update is not None)
        self._count_decisions(step, counters)

    def _collect_one(
        self, place: int, detection: Detection, report_capacity: int, counters: ShardCounters, collected: _Collected
    ) -> None:
        """What :meth:`_collect_step` does for a step, for one reading scored by its ``DeviceState``."""
        counters.processed += 1
        flagged = detection.is_anomaly
        if flagged:
            counters.anomalies[detection.severity] = counters.anomalies.get(detection.severity, 0) + 1
        if flagged or self.emit_scores:
            collected.detections.append((place, detection))
        if (
            report_capacity
            and (flagged or is_kept(detection.reading_index, report_capacity))
            and self._drawn([detection.reading], [0], [flagged], counters)
        ):
            collected.report.append((place, report_point(detection)))
        label = detection.reading.label
        if label is not None:
            detection_counts = counters.detection
            detection_counts["z_rule"].add(abs(detection.z_score) >= self.settings.z_warning, label)
            detection_counts["local_model"].add(detection.model_score > MODEL_THRESHOLD, label)
            detection_counts["is_anomaly"].add(detection.is_anomaly, label)
            if detection.global_score is not None:
                global_positive = detection.global_score > MODEL_THRESHOLD
                detection_counts["global_model"].add(global_positive, label)
                self.evaluation.add(global_positive, label, detection.reading.timestamp)

    def _drawn(
        self, readings: list[Telemetry], candidates: list[int], flagged: list[bool], counters: ShardCounters
    ) -> list[int]:
        """Of ``candidates`` (indexes into ``readings``, which the report may keep), those of
        devices it draws, admitting devices as :meth:`__init__` says; a device replaced goes
        into ``counters.undrawn``."""
        drawn, quiet = self.drawn, self.quiet
        chosen = []
        for i in candidates:
            device_id = readings[i].device_id
            if device_id not in drawn:
                if len(drawn) >= self.report_devices:
                    if not (flagged[i] and quiet):
                        continue
                    replaced = next(iter(quiet))
                    del quiet[replaced], drawn[replaced]
                    counters.undrawn.append(replaced)
                drawn[device_id] = None
                if not flagged[i]:
                    quiet[device_id] = None
            elif flagged[i] and quiet:
                quiet.pop(device_id, None)
            chosen.append(i)
        return chosen

    def _count_decisions(self, step: Step, counters: ShardCounters) -> None:
        """Each decider's decisions on the labelled readings, and the live evaluation of the global model."""
        labels = step.labels
        labelled = labels >= 0
        if not labelled.any():
            return
        actual = labels[labelled]
        detection = counters.detection
        detection["z_rule"].add_many(np.abs(step.top_z[labelled]) >= self.settings.z_warning, actual)
        detection["local_model"].add_many(step.model_score[labelled] > MODEL_THRESHOLD, actual)
        detection["is_anomaly"].add_many(step.is_anomaly[labelled], actual)
        scored = labelled & ~np.isnan(step.global_score)
        if scored.any():
            positive = step.global_score[scored] > MODEL_THRESHOLD
            detection["global_model"].add_many(positive, labels[scored])
            self.evaluation.add_many(positive, labels[scored], step.timestamps[scored])

    def _close(self, rows: list[int]) -> list[LocalUpdate]:
        index = np.array(rows, dtype=np.int64)
        return self.arrays.close_rounds(index[self.arrays.round_rows[index] > 0])

    def _drop_idle_devices(self, silent_since: float, counters: ShardCounters) -> list[LocalUpdate]:
        """Drop the devices whose newest reading is older than ``silent_since`` (event time),
        closing their partial rounds; returns those rounds' updates."""
        round_last = self.arrays.round_last
        idle = [(key, row) for key, row in self.devices.items() if round_last[row] < silent_since]
        if not idle:
            return []
        rows = [row for _, row in idle]
        if self.report_points:
            for key, row in idle:
                counters.readings_by_device[key] = int(self.arrays.readings[row])
        updates = self._close(rows)
        for key, _ in idle:
            del self.devices[key]
        self.arrays.remove(rows)
        return updates

    def receive_global(self, model: GlobalModel, counters: ShardCounters) -> None:
        """Adopt a newer global model; a duplicate or late copy changes nothing.

        Moving on closes this shard's live evaluation of the version it held (into
        ``counters``); the move also tells the evaluation stage that this shard is past the
        versions in between, which it never scored with.
        """
        old_version = self.global_version
        if model.version <= old_version:
            return
        counters.move(old_version, model.version, self._close_evaluation() if old_version else None)
        self.global_model = model

    def _close_evaluation(self) -> ConfusionCounts:
        counts, self.evaluation = self.evaluation, ConfusionCounts()
        return counts

    def close_idle_rounds(self, now: float, idle_seconds: float) -> ShardResult:
        """Close the partial rounds of devices silent for ``idle_seconds`` of wall time."""
        arrays = self.arrays
        rows = [
            row
            for row in self.devices.values()
            if arrays.round_rows[row] and now - arrays.last_seen[row] >= idle_seconds
        ]
        return ShardResult(updates=self._close(rows)).count_updates()

    def close_rounds(self, part: int = 0, parts: int = 1) -> ShardResult:
        """Close the partial rounds of slice ``part`` of ``parts`` of the devices (by default all):
        the input has ended for them.

        Slices follow the devices' order, so closing every slice in turn gives the updates that
        closing all at once would, while only one slice's updates are held at a time.
        """
        rows = list(self.devices.values())
        return ShardResult(
            updates=self._close(rows[len(rows) * part // parts : len(rows) * (part + 1) // parts])
        ).count_updates()

    def finish(self) -> ShardResult:
        """At the end of a bounded input: close the partial rounds still open and the evaluation."""
        result = self.close_rounds()
        if self.report_points:
            readings = self.arrays.readings
            result.counters.readings_by_device = {key: int(readings[row]) for key, row in self.devices.items()}
        if self.global_version:
            result.counters.move(self.global_version, FINISHED, self._close_evaluation())
        return result
