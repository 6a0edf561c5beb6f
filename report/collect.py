"""What the run report shows, gathered while the run goes on, in a bounded amount of memory."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from math import nan
from typing import Any

from operators.fedavg import GlobalModel
from operators.report_sampling import MIN_POINTS_PER_DEVICE, ReportPoint, capacity_per_device, is_kept, stride
from report.data import AnomalyMark, DeviceTrace, ModelVersion, RunReport

TIMELINE_POINTS = 1_000
"""The federation's charts draw at most this many global versions and as many evaluations,
evenly spaced (every one of a shorter run, at least half as many of a longer one): a long run
makes a version every 20 local updates (80,000 for a 100,000-device replay), more than a chart
can show and, kept whole, memory that grows with the run."""


@dataclass(slots=True)
class _DeviceTrail:
    """A drawn device's kept readings, as columns: a reading as a tuple with its values' dict
    took about 300 bytes, and the report keeps up to 100 readings of each of 2,000 devices."""

    indexes: array = field(default_factory=lambda: array("q"))
    """Each kept reading's place in the device's whole stream."""
    times: array = field(default_factory=lambda: array("d"))
    scores: array = field(default_factory=lambda: array("d"))
    values: dict[str, array] = field(default_factory=dict)
    """Per field, aligned with :attr:`times`: NaN where a reading did not carry the field (the
    values of a valid reading are finite)."""
    marks: list[AnomalyMark] = field(default_factory=list)
    anomalies_by_severity: dict[str, int] = field(default_factory=dict)
    last_index: int = 0
    """The newest reading's place in the device's whole stream."""
    life_index: int = 0
    """Its place since the device's state was last created: a device dropped when idle starts
    counting again when it comes back."""
    earlier_lives: int = 0
    readings: int = 0
    """The readings of the device's states that have ended, as the shards counted them."""

    def append(self, index: int, timestamp: float, values: dict[str, float], score: float) -> None:
        columns = self.values
        if columns.keys() == values.keys():  # the usual case: the fields of the readings before
            for name, value in values.items():
                columns[name].append(value)
        else:
            kept = len(self.indexes)
            for name, value in values.items():
                column = columns.get(name)
                if column is None:
                    column = columns[name] = array("d", [nan]) * kept
                column.append(value)
            for column in columns.values():
                if len(column) == kept:
                    column.append(nan)
        self.indexes.append(index)
        self.times.append(timestamp)
        self.scores.append(score)

    def kept(self, spacing: int) -> list[int]:
        """The positions of the readings that ``spacing`` keeps."""
        return [position for position, index in enumerate(self.indexes) if index % spacing == 0]

    def thin(self, spacing: int) -> None:
        positions = self.kept(spacing)
        self.indexes, self.times, self.scores = (
            array(column.typecode, [column[i] for i in positions]) for column in (self.indexes, self.times, self.scores)
        )
        self.values = {name: array("d", [column[i] for i in positions]) for name, column in self.values.items()}


class ReportCollector:
    """Readings, anomalies, global versions and evaluations for ``report.html``.

    ``points`` bounds the readings kept over the whole fleet (``FLEAD_REPORT_POINTS``). Each
    device drawn keeps at least ``MIN_POINTS_PER_DEVICE`` of them, and as many anomaly marks
    as readings (the alerts among them always), so at most ``points // MIN_POINTS_PER_DEVICE``
    devices are drawn. The shards choose them (``ShardState``: the first to arrive, a device
    with an anomaly taking the place of the longest-drawn one without any), send their
    readings that the report may keep (``operators/report_sampling.py``), and say which ones
    they stopped drawing; the other devices are only counted, so memory stays bounded however
    large the fleet. This thins the readings as devices arrive and streams grow.

    The global versions are thinned the same way, by version number (:data:`TIMELINE_POINTS`),
    keeping the newest and every version whose threshold differs from the one before it, so
    that the device charts draw each threshold from the version that brought it in (the
    fleet's threshold settles as its score counts grow, so such versions are few; FedAvg makes
    the versions in order). The evaluations are thinned by the order they came in.
    """

    def __init__(self, points: int) -> None:
        if points <= 0:
            raise ValueError(f"points must be above 0, got {points}")
        self.points = points
        self.most_drawn = max(1, points // MIN_POINTS_PER_DEVICE)
        self.devices: dict[str, _DeviceTrail] = {}
        """The devices drawn."""
        self.undrawn: set[str] = set()
        self.models: list[ModelVersion] = []
        """The global versions kept (see above)."""
        self.newest: ModelVersion | None = None
        self.versions_before = 0
        """The versions made before the run's first (a run that went on from earlier versions
        counts its own from 1, for spacing)."""
        self.evaluations: list[tuple[int, dict[str, Any]]] = []
        """The evaluations kept, each with its place among all of them, from 1."""
        self.evaluations_seen = 0

    @property
    def capacity(self) -> int:
        """Readings each device keeps now."""
        return capacity_per_device(self.points, len(self.devices))

    def _trail(self, device_id: str) -> _DeviceTrail | None:
        """The trail of a device the shards started drawing; ``None`` beyond :attr:`most_drawn`,
        which their choices stay within unless their messages cross (a device replaced on one
        worker while the next one's readings are on their way)."""
        if len(self.devices) >= self.most_drawn:
            self.undrawn.add(device_id)
            return None
        self.undrawn.discard(device_id)
        trail = self.devices[device_id] = _DeviceTrail()
        return trail

    def undraw(self, device_ids: list[str]) -> None:
        """Devices the shards no longer draw: each was replaced by a device with an anomaly."""
        for device_id in device_ids:
            if self.devices.pop(device_id, None) is not None:
                self.undrawn.add(device_id)

    def add_points(self, points: list[ReportPoint]) -> None:
        devices = self.devices
        capacity = self.capacity
        for device_id, reading_index, timestamp, values, score, severity, field_name, alert in points:
            trail = devices.get(device_id)
            if trail is None:
                trail = self._trail(device_id)
                if trail is None:
                    continue
                capacity = self.capacity
            if reading_index <= trail.life_index:
                trail.earlier_lives = trail.last_index
            trail.life_index = reading_index
            trail.last_index = index = trail.earlier_lives + reading_index
            trail.append(index, timestamp, values, score)
            if severity is not None:
                trail.anomalies_by_severity[severity] = trail.anomalies_by_severity.get(severity, 0) + 1
                value = values.get(field_name, next(iter(values.values())))
                trail.marks.append(AnomalyMark(timestamp, field_name, value, severity, score, alert))
            if len(trail.indexes) > 2 * capacity:
                trail.thin(stride(trail.last_index, capacity))
            if len(trail.marks) > 2 * capacity:
                trail.marks = _fewer_marks(trail.marks)

    def add_readings(self, readings_by_device: dict[str, int]) -> None:
        """The readings of device states that ended (dropped when idle, or at the end of the
        input), of every device: those not drawn are counted."""
        for device_id, readings in readings_by_device.items():
            trail = self.devices.get(device_id)
            if trail is None:
                self.undrawn.add(device_id)
            else:
                trail.readings += readings

    def add_model(self, model: GlobalModel) -> None:
        version = ModelVersion(
            model.version, model.timestamp, model.threshold, model.accuracy, model.num_devices, model.samples
        )
        previous = self.newest
        if previous is None:
            self.versions_before = version.version - 1
        if previous is None or version.version > previous.version:
            self.newest = version
        changed = previous is None or version.threshold != previous.threshold
        if changed or is_kept(version.version - self.versions_before, TIMELINE_POINTS):
            self.models.append(version)
            if len(self.models) > 2 * TIMELINE_POINTS:
                spacing = stride(self.newest.version - self.versions_before, TIMELINE_POINTS)
                self.models = _fewer_versions(self.models, spacing, self.versions_before)

    def add_evaluation(self, row: dict[str, Any]) -> None:
        self.evaluations_seen = seen = self.evaluations_seen + 1
        if is_kept(seen, TIMELINE_POINTS):
            self.evaluations.append((seen, row))
            if len(self.evaluations) > 2 * TIMELINE_POINTS:
                self.evaluations = self._spaced_evaluations()

    def _spaced_evaluations(self) -> list[tuple[int, dict[str, Any]]]:
        spacing = stride(self.evaluations_seen, TIMELINE_POINTS)
        return [(n, row) for n, row in self.evaluations if n % spacing == 0]

    def report(self, summary: dict[str, Any]) -> RunReport:
        capacity = self.capacity
        traces = [_trace(device_id, trail, capacity) for device_id, trail in self.devices.items()]
        traces.sort(key=lambda trace: (-trace.anomaly_count, trace.device_id))
        models = self.models
        if self.newest is not None:
            spacing = stride(self.newest.version - self.versions_before, TIMELINE_POINTS)
            models = _fewer_versions(models, spacing, self.versions_before)
            if models[-1] != self.newest:
                models.append(self.newest)
        return RunReport(
            summary=summary,
            devices=traces,
            models=models,
            evaluations=sorted(
                (row for _, row in self._spaced_evaluations()),
                key=lambda row: (row["global_version"], row["window_start"]),
            ),
            undrawn_devices=len(self.undrawn),
        )


def _fewer_versions(models: list[ModelVersion], spacing: int, versions_before: int) -> list[ModelVersion]:
    """The versions on ``spacing`` (counted after ``versions_before``), and each whose threshold
    differs from the version before it in ``models`` (which hold every such version)."""
    kept = []
    threshold: object = object()  # no threshold yet: every first version is kept
    for model in sorted(models, key=lambda model: model.version):
        if (model.version - versions_before) % spacing == 0 or model.threshold != threshold:
            kept.append(model)
        threshold = model.threshold
    return kept


def _fewer_marks(marks: list[AnomalyMark]) -> list[AnomalyMark]:
    """Every other mark, the alerts kept while they fit in half of them."""
    fewer = [mark for i, mark in enumerate(marks) if mark.alert or i % 2 == 0]
    return fewer if len(fewer) <= 3 * len(marks) // 4 else marks[::2]


def _trace(device_id: str, trail: _DeviceTrail, capacity: int) -> DeviceTrace:
    readings = max(trail.readings, trail.last_index)
    positions = trail.kept(stride(readings, capacity))
    drawn = []  # (the first reading drawn with the field, its name, its values)
    for name, column in trail.values.items():
        values = [None if (value := column[i]) != value else value for i in positions]
        first = next((n for n, value in enumerate(values) if value is not None), None)
        if first is not None:
            drawn.append((first, name, values))
    drawn.sort(key=lambda entry: entry[0])
    return DeviceTrace(
        device_id=device_id,
        readings=readings,
        anomalies_by_severity=dict(sorted(trail.anomalies_by_severity.items())),
        times=[trail.times[i] for i in positions],
        values={name: values for _, name, values in drawn},
        scores=[trail.scores[i] for i in positions],
        anomalies=trail.marks,
    )
