"""The run's totals: what was read, processed, rejected and learned, for progress and summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from operators.evaluation import ConfusionCounts
from operators.fedavg import GlobalModel
from operators.shard import DECIDERS, ShardCounters


@dataclass(slots=True)
class SourceProgress:
    """Rows an input has read since its last report (valid or not), and their bytes."""

    rows_read: int
    bytes_read: int = 0
    """The messages' bytes: Kafka message values, JSON lines with their line ends, CSV rows as
    their characters and separators."""


@dataclass
class RunTotals:
    """Counts that add up across shards and batches; ``summary()`` is what ``summary.json`` holds."""

    rows_read: int = 0
    bytes_read: int = 0
    rows_processed: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    local_updates: int = 0
    update_bytes: int = 0
    """The local updates as an edge client sends them (:func:`operators.update_validation.edge_update_message`)."""
    global_versions: int = 0
    last_global_accuracy: float | None = None
    updates_capped: int = 0
    """Devices' contributions to a version whose weight was cut to the cap, over all versions."""
    updates_clipped: int = 0
    """Devices' changes scaled down to the clipping bound, over all versions."""
    dp_epsilon: float | None = None
    """With differential privacy: the ε spent by the newest version."""
    live_evaluation: ConfusionCounts = field(default_factory=ConfusionCounts)
    detection: dict[str, ConfusionCounts] = field(
        default_factory=lambda: {name: ConfusionCounts() for name in DECIDERS}
    )

    def add_read(self, progress: SourceProgress) -> None:
        self.rows_read += progress.rows_read
        self.bytes_read += progress.bytes_read

    def add_rejection(self, reason: str) -> None:
        self.rows_rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

    def add_counters(self, counters: ShardCounters) -> None:
        self.rows_processed += counters.processed
        self.local_updates += counters.local_updates
        self.update_bytes += counters.update_bytes
        for severity, n in counters.anomalies.items():
            self.anomalies[severity] = self.anomalies.get(severity, 0) + n
        for name, counts in counters.detection.items():
            self.detection[name].merge(counts)
        for counts in counters.closed_evaluations.values():
            self.live_evaluation.merge(counts)

    def add_global(self, model: GlobalModel) -> None:
        self.global_versions = max(self.global_versions, model.version)
        self.last_global_accuracy = model.accuracy
        self.updates_capped += model.capped_devices
        self.updates_clipped += model.clipped_devices
        if model.dp_epsilon is not None:
            self.dp_epsilon = model.dp_epsilon

    def progress_line(self) -> str:
        anomalies = sum(self.anomalies.values())
        return (
            f"read {self.rows_read:,} · processed {self.rows_processed:,} · rejected {self.rows_rejected:,}"
            f" · anomalies {anomalies:,} · local updates {self.local_updates:,}"
            f" · global v{self.global_versions}"
        )

    def summary(self) -> dict[str, Any]:
        live = self.live_evaluation
        return {
            "rows_read": self.rows_read,
            "rows_processed": self.rows_processed,
            "rows_rejected": self.rows_rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "rows_unaccounted": self.rows_read - self.rows_processed - self.rows_rejected,
            "anomalies": dict(sorted(self.anomalies.items())),
            "local_updates": self.local_updates,
            "bandwidth": {
                "reading_bytes": self.bytes_read,
                "update_bytes": self.update_bytes,
                "update_share": round(self.update_bytes / self.bytes_read, 4) if self.bytes_read else None,
            },
            "global_versions": self.global_versions,
            "last_global_accuracy": self.last_global_accuracy,
            "updates_capped": self.updates_capped,
            "updates_clipped": self.updates_clipped,
            "dp_epsilon": self.dp_epsilon,
            "live_evaluation": {
                "n": live.n,
                "precision": live.precision,
                "recall": live.recall,
                "f1": live.f1,
            },
            "detection_quality": {
                name: {key: counts.metrics()[key] for key in ("n", "tp", "fp", "fn", "precision", "recall", "f1")}
                for name, counts in self.detection.items()
            },
        }
