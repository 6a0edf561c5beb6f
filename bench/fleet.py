"""A synthetic fleet: N devices, fields on different scales, labelled anomalies of five kinds.

    python -m bench.fleet --devices 2407 --rows 300000 --out fleet.jsonl --seed 7

Each device reports every ``interval`` seconds with its own phase, so the file is in global
timestamp order from 2025-01-01T00:00:00Z. A device has one to four fields (``--fields 1``
forces one) drawn from temperature (°C), CPU (%), latency (ms, log-normal), pressure (Pa) and
vibration (g): a daily cycle, a faster workload cycle and noise, rounded like a sensor
would. The fields of one device share its workload (the same period and phase, each with
its own amplitude), so they move together as a machine's temperature, CPU and latency do.
Anomalies hit one field of a device and label its rows 1 while they last: ``spike`` (one
reading), ``level_shift``, ``drift``, ``stuck`` (the sensor repeats itself),
``noise_burst`` (a variance change), ``frequency`` (the field's workload cycle runs four
times faster) and ``correlation`` (on a device with several fields, one field's workload
runs against the others', every value still in its usual range). The same seed gives the
same bytes.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson

ANOMALY_KINDS = ("spike", "level_shift", "drift", "stuck", "noise_burst", "frequency", "correlation")
FREQUENCY_FACTOR = 4.0
"""A ``frequency`` anomaly runs the field's workload cycle this many times faster."""
START = np.datetime64("2025-01-01T00:00:00", "ms")
DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class FieldKind:
    """Ranges a device's field draws its parameters from.

    With ``log`` the level, cycles and noise are in natural-log units and the signal is
    exponentiated at the end (latency is multiplicative: a slow service is slow by a factor).
    """

    name: str
    level: tuple[float, float]
    daily: tuple[float, float]
    """Amplitude of the 24-hour cycle."""
    workload: tuple[float, float]
    """Amplitude of a 20-minute-to-3-hour cycle, so that short files see seasonality too."""
    noise: tuple[float, float]
    decimals: int
    bounds: tuple[float, float] = (-math.inf, math.inf)
    log: bool = False


FIELD_KINDS = (
    FieldKind("temperature", (25.0, 75.0), (2.0, 8.0), (0.5, 2.0), (0.2, 0.8), 2),
    FieldKind("cpu", (10.0, 70.0), (5.0, 20.0), (2.0, 8.0), (2.0, 6.0), 1, (0.0, 100.0)),
    FieldKind(
        "latency_ms", (math.log(5.0), math.log(1500.0)), (0.1, 0.4), (0.05, 0.2), (0.05, 0.2), 1, (1.0, 5000.0), True
    ),
    FieldKind("pressure", (99_000.0, 103_000.0), (100.0, 400.0), (20.0, 80.0), (10.0, 50.0), 1),
    FieldKind("vibration", (0.05, 0.5), (0.005, 0.02), (0.005, 0.02), (0.002, 0.01), 4, (0.0, math.inf)),
)
FIELD_COUNT_P = (0.55, 0.25, 0.12, 0.08)
"""How often a device has 1, 2, 3 or 4 fields."""


@dataclass
class FleetStats:
    records: int
    devices: int
    fields: int
    anomalous_records: int
    events: dict[str, int]
    """Anomalies injected, by kind."""
    anomalous_rows: dict[str, int]
    """Rows labelled 1 by kind (a row two anomalies overlap on counts for both)."""
    bytes: int
    seconds: float


def generate_fleet(
    path: Path | str,
    devices: int = 2407,
    rows: int = 300_000,
    seed: int = 7,
    interval: float = 10.0,
    fields: int | None = None,
    anomaly_rate: float = 0.001,
    rows_per_device: int | None = None,
) -> FleetStats:
    """Write ``rows_per_device`` readings of every device to ``path``.

    Without ``rows_per_device``, about ``rows`` records in all (rounded up to whole time
    steps of every device). ``anomaly_rate`` is anomalies started per device per reading;
    at the default about 3 % of the rows are anomalous.
    """
    if devices < 1:
        raise ValueError(f"devices must be at least 1, got {devices}")
    if fields is not None and not 1 <= fields <= len(FIELD_KINDS):
        raise ValueError(f"fields must be between 1 and {len(FIELD_KINDS)}, got {fields}")
    started = time.perf_counter()
    path = Path(path)
    rng = np.random.default_rng(seed)
    steps = rows_per_device if rows_per_device is not None else max(1, math.ceil(rows / devices))
    counts = np.full(devices, fields) if fields else rng.choice([1, 2, 3, 4], size=devices, p=FIELD_COUNT_P)
    kinds = [rng.choice(len(FIELD_KINDS), size=n, replace=False) for n in counts]
    device_columns = np.split(np.arange(int(counts.sum())), np.cumsum(counts)[:-1])
    column_kinds = [FIELD_KINDS[k] for device_kinds in kinds for k in device_kinds]
    column_device = np.repeat(np.arange(devices), counts)

    seconds = np.arange(steps)[:, None] * interval
    values, scale, workload = _signals(rng, column_kinds, seconds, column_device)
    shared = np.flatnonzero(counts[column_device] > 1)  # columns of devices with several fields
    labels = np.zeros((steps, devices), dtype=np.int8)
    events: Counter[str] = Counter()
    rows_by_kind: Counter[str] = Counter()
    for _ in range(rng.poisson(anomaly_rate * steps * devices)):
        kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
        if kind == "correlation" and not len(shared):
            kind = "level_shift"
        column = int(rng.choice(shared)) if kind == "correlation" else int(rng.integers(len(column_kinds)))
        length = 1 if kind == "spike" else int(rng.integers(15, 60))
        start = int(rng.integers(0, max(1, steps - length + 1)))
        end = min(steps, start + length)
        _inject(rng, kind, values[start:end, column], scale[column], workload.span(column, start, end))
        labels[start:end, column_device[column]] = 1
        events[kind] += 1
        rows_by_kind[kind] += end - start
    values = _to_readings(values, column_kinds)

    phase = np.sort(rng.uniform(0, interval, devices))  # ascending, so each step's rows are in time order
    order = rng.permutation(devices)  # which device has which phase
    stamps = START + np.round((seconds + phase) * 1000).astype(np.int64).astype("timedelta64[ms]")
    names = [f"device_{d}" for d in range(devices)]
    field_names = [kind.name for kind in column_kinds]
    with path.open("wb") as out:
        for step in range(steps):
            iso = np.datetime_as_string(stamps[step], unit="ms")
            row = values[step].tolist()
            step_labels = labels[step].tolist()
            lines = []
            for position, device in enumerate(order.tolist()):
                label = step_labels[device]
                columns = device_columns[device]
                data = row[columns[0]] if len(columns) == 1 else {field_names[c]: row[c] for c in columns}
                record = {"device_id": names[device], "timestamp": f"{iso[position]}Z", "data": data, "label": label}
                lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            out.write(b"".join(lines))
    return FleetStats(
        records=steps * devices,
        devices=devices,
        fields=len(column_kinds),
        anomalous_records=int(labels.sum()),
        events={kind: events[kind] for kind in ANOMALY_KINDS},
        anomalous_rows={kind: rows_by_kind[kind] for kind in ANOMALY_KINDS},
        bytes=path.stat().st_size,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Workload:
    """Each column's workload cycle: ``amplitude · sin(2π·t / period + phase)``, with the period
    and phase of its device."""

    seconds: np.ndarray
    amplitude: np.ndarray
    period: np.ndarray
    phase: np.ndarray

    def span(self, column: int, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The column's workload over rows ``start:end``, and the same cycle run faster."""
        t = self.seconds[start:end, 0]
        amplitude, period, phase = self.amplitude[column], self.period[column], self.phase[column]
        usual = amplitude * np.sin(2 * math.pi * t / period + phase)
        faster = amplitude * np.sin(2 * math.pi * t * FREQUENCY_FACTOR / period + phase)
        return usual, faster


def _signals(
    rng: np.random.Generator, kinds: list[FieldKind], seconds: np.ndarray, column_device: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Workload]:
    """Clean signals (steps × columns, log units where the kind says so), each column's anomaly
    scale, and the workload cycles."""

    def draw(ranges: list[tuple[float, float]]) -> np.ndarray:
        low, high = np.array(ranges).T
        return rng.uniform(low, high)

    devices = int(column_device.max()) + 1
    level = draw([k.level for k in kinds])
    daily = draw([k.daily for k in kinds])
    workload = Workload(
        seconds,
        draw([k.workload for k in kinds]),
        rng.uniform(1200.0, 10_800.0, devices)[column_device],
        rng.uniform(0, 2 * math.pi, devices)[column_device],
    )
    noise = draw([k.noise for k in kinds])
    daily_phase = rng.uniform(0, 2 * math.pi, len(kinds))
    values = (
        level
        + daily * np.sin(2 * math.pi * seconds / DAY_SECONDS + daily_phase)
        + workload.amplitude * np.sin(2 * math.pi * seconds / workload.period + workload.phase)
        + noise * rng.standard_normal((len(seconds), len(kinds)))
    )
    # What a reading normally wanders by over a rolling window: the size anomalies are measured in.
    return values, noise + workload.amplitude, workload


def _inject(
    rng: np.random.Generator, kind: str, span: np.ndarray, scale: float, workload: tuple[np.ndarray, np.ndarray]
) -> None:
    """Change ``span`` (a view of one column's rows) in place into an anomaly of ``kind``;
    ``workload`` is the column's usual workload over the span and the same cycle run faster."""
    sign = rng.choice([-1.0, 1.0])
    usual, faster = workload
    if kind == "spike":
        span += sign * scale * rng.uniform(4, 8)
    elif kind == "level_shift":
        span += sign * scale * rng.uniform(1.5, 3)
    elif kind == "drift":
        span += sign * scale * np.linspace(0, rng.uniform(2, 4), len(span))
    elif kind == "stuck":
        span[:] = span[0]
    elif kind == "noise_burst":
        span += rng.normal(0, scale * rng.uniform(2, 4), len(span))
    elif kind == "frequency":
        span += faster - usual
    else:  # correlation: the workload runs against the device's other fields
        span -= 2 * usual


def _to_readings(values: np.ndarray, kinds: list[FieldKind]) -> np.ndarray:
    """Out of log units, into each kind's bounds, rounded to each kind's decimals."""
    log = np.array([k.log for k in kinds])
    values = np.where(log, np.exp(np.minimum(values, 50.0)), values)
    low, high = np.array([k.bounds for k in kinds]).T
    values = np.clip(values, low, high)
    factor = 10.0 ** np.array([k.decimals for k in kinds])
    return np.round(values * factor) / factor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devices", type=int, default=2407)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--rows", type=int, default=300_000, help="records in all, rounded up to whole time steps")
    size.add_argument("--rows-per-device", type=int, help="readings of each device")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between a device's readings")
    parser.add_argument("--fields", type=int, help=f"exactly this many fields per device (1 to {len(FIELD_KINDS)})")
    parser.add_argument("--anomaly-rate", type=float, default=0.001, help="anomalies started per reading")
    args = parser.parse_args(argv)
    try:
        stats = generate_fleet(
            args.out,
            devices=args.devices,
            rows=args.rows,
            seed=args.seed,
            interval=args.interval,
            fields=args.fields,
            anomaly_rate=args.anomaly_rate,
            rows_per_device=args.rows_per_device,
        )
    except ValueError as error:
        parser.error(str(error))
    print(orjson.dumps(asdict(stats)).decode())


if __name__ == "__main__":
    main()
