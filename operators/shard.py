"""A shard: the devices that hash to one key, the global model they share, and its live evaluation.

The device stage keys its stream by shard rather than by device so that a global model can
be fanned out to a fixed set of keys (see ``design.md``). Everything here is plain Python;
the Bytewax step in ``dataflows/steps.py`` only feeds it batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.device import Z_RULE_SEVERITIES, Detection, DetectionSettings, DeviceState
from operators.evaluation import ConfusionCounts
from operators.fedavg import GlobalModel, LocalUpdate
from operators.messages import Telemetry

DECIDERS = ("z_rule", "local_model", "global_model", "is_anomaly")
"""The decisions whose quality against labels the run reports, side by side."""


@dataclass(slots=True)
class EvaluationPartial:
    """One shard's final confusion counts for a global version it has moved past."""

    global_version: int
    counts: ConfusionCounts


@dataclass(slots=True)
class ShardCounters:
    """What one shard did in one batch, for the run's totals and metrics."""

    processed: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    local_updates: int = 0
    detection: dict[str, ConfusionCounts] = field(default_factory=dict)


ShardOutput = Detection | LocalUpdate | EvaluationPartial | ShardCounters


class ShardState:
    """The devices of one shard, the newest global model it has, and live-evaluation counts."""

    def __init__(self, settings: DetectionSettings, emit_scores: bool) -> None:
        self.settings = settings
        self.emit_scores = emit_scores
        self.devices: dict[str, DeviceState] = {}
        self.global_model: GlobalModel | None = None
        self.evaluation = ConfusionCounts()

    @property
    def global_version(self) -> int:
        return self.global_model.version if self.global_model is not None else 0

    def process(self, batch: list[Telemetry | GlobalModel], now: float = 0.0) -> list[ShardOutput]:
        """Readings and global models in arrival order; ``now`` (wall time) marks the devices seen."""
        outputs: list[ShardOutput] = []
        counters = ShardCounters(detection={name: ConfusionCounts() for name in DECIDERS})
        settings = self.settings
        threshold = settings.score_threshold
        for item in batch:
            if isinstance(item, GlobalModel):
                outputs.extend(self.receive_global(item))
                continue
            device = self.devices.get(item.device_id)
            if device is None:
                device = self.devices[item.device_id] = DeviceState(item.device_id, settings)
            device.last_seen = now
            detection, update = device.observe(item, settings, self.global_model)
            counters.processed += 1
            if detection.is_anomaly:
                counters.anomalies[detection.severity] = counters.anomalies.get(detection.severity, 0) + 1
                outputs.append(detection)
            elif self.emit_scores:
                outputs.append(detection)
            if update is not None:
                counters.local_updates += 1
                outputs.append(update)
            label = item.label
            if label is not None:
                timestamp = item.timestamp
                detection_counts = counters.detection
                detection_counts["z_rule"].add(detection.severity in Z_RULE_SEVERITIES, label, timestamp)
                detection_counts["local_model"].add(detection.score > threshold, label, timestamp)
                detection_counts["is_anomaly"].add(detection.is_anomaly, label, timestamp)
                if detection.global_score is not None:
                    global_positive = detection.global_score > threshold
                    detection_counts["global_model"].add(global_positive, label, timestamp)
                    self.evaluation.add(global_positive, label, timestamp)
        outputs.append(counters)
        return outputs

    def receive_global(self, model: GlobalModel) -> list[EvaluationPartial]:
        """Adopt a newer global model; a duplicate or late copy changes nothing.

        Moving past versions closes their evaluation on this shard, including versions
        this shard never saw, so that the evaluation stage knows when a version is complete.
        """
        current = self.global_version
        if model.version <= current:
            return []
        closed = [self._close_evaluation(current)] if current else []
        closed.extend(EvaluationPartial(version, ConfusionCounts()) for version in range(current + 1, model.version))
        self.global_model = model
        return closed

    def _close_evaluation(self, version: int) -> EvaluationPartial:
        partial = EvaluationPartial(version, self.evaluation)
        self.evaluation = ConfusionCounts()
        return partial

    def close_idle_rounds(self, now: float, idle_seconds: float) -> list[ShardOutput]:
        """Close the partial rounds of devices silent for ``idle_seconds`` of wall time."""
        updates = [
            update
            for device in self.devices.values()
            if device.round_rows
            and now - device.last_seen >= idle_seconds
            and (update := device.close_round()) is not None
        ]
        if not updates:
            return []
        return [*updates, ShardCounters(local_updates=len(updates))]

    def finish(self) -> list[ShardOutput]:
        """At the end of a bounded input: close every partial round and the open evaluation."""
        outputs: list[ShardOutput] = []
        counters = ShardCounters()
        for device in self.devices.values():
            update = device.close_round()
            if update is not None:
                counters.local_updates += 1
                outputs.append(update)
        if self.global_version:
            outputs.append(self._close_evaluation(self.global_version))
        outputs.append(counters)
        return outputs
