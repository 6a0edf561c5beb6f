"""A synthetic fleet: N devices, fields on different scales, labelled anomalies of five kinds.

    python -m bench.fleet --devices 2407 --rows 300000 --out fleet.jsonl --seed 7

Each device reports every ``interval`` seconds with its own phase, so the file is in global
timestamp order. A device has one to four fields (``--fields 1`` forces one) drawn from
temperature (°C), CPU (%), latency (ms), pressure (Pa) and vibration (g), each a daily-like
cycle plus noise. Anomalies are injected on one field of a device and labelled 1 while they
last: ``spike`` (one reading), ``level_shift``, ``drift``, ``stuck`` (the sensor repeats
itself) and ``noise_burst``. The same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

ANOMALY_KINDS = ("spike", "level_shift", "drift", "stuck", "noise_burst")

# name, level, cycle amplitude, noise std — a field's scale
FIELD_KINDS = (
    ("temperature", 55.0, 8.0, 0.6),
    ("cpu", 40.0, 15.0, 3.0),
    ("latency_ms", 120.0, 40.0, 12.0),
    ("pressure", 101_325.0, 300.0, 40.0),
    ("vibration", 0.2, 0.05, 0.01),
)

START = np.datetime64("2025-01-01T00:00:00", "ms")


@dataclass
class FleetStats:
    records: int
    devices: int
    fields: int
    anomalous_records: int
    events: dict[str, int]
    seconds: float


def generate_fleet(
    path: Path,
    devices: int = 2407,
    rows: int = 300_000,
    seed: int = 7,
    interval: float = 10.0,
    fields: int | None = None,
    anomaly_rate: float = 0.001,
) -> FleetStats:
    """Write about ``rows`` records (whole time steps of every device) to ``path``."""
    if fields is not None and not 1 <= fields <= len(FIELD_KINDS):
        raise ValueError(f"fields must be between 1 and {len(FIELD_KINDS)}, got {fields}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    steps = max(1, math.ceil(rows / devices))
    field_counts = (
        np.full(devices, fields) if fields else rng.choice([1, 2, 3, 4], size=devices, p=[0.55, 0.25, 0.12, 0.08])
    )
    phase = rng.uniform(0, interval, devices)
    order = np.argsort(phase)
    names = [f"device_{i:06d}" for i in range(devices)]
    kinds = [rng.choice(len(FIELD_KINDS), size=n, replace=False) for n in field_counts]
    columns = [(d, k) for d in range(devices) for k in kinds[d]]  # one column per (device, field)
    level = np.array([FIELD_KINDS[k][1] for _, k in columns]) * rng.uniform(0.8, 1.2, len(columns))
    amplitude = np.array([FIELD_KINDS[k][2] for _, k in columns])
    noise = np.array([FIELD_KINDS[k][3] for _, k in columns])
    period = rng.uniform(300, 1500, len(columns))  # steps per cycle
    cycle_phase = rng.uniform(0, 2 * math.pi, len(columns))
    t = np.arange(steps)[:, None]
    values = (
        level
        + amplitude * np.sin(2 * math.pi * t / period + cycle_phase)
        + rng.normal(0, 1, (steps, len(columns))) * noise
    )
    labels = np.zeros((steps, devices), dtype=np.int8)
    events = Counter()
    column_of_device = _columns_by_device(columns, devices)
    expected_events = anomaly_rate * steps * devices
    for _ in range(rng.poisson(expected_events)):
        device = int(rng.integers(devices))
        column = int(rng.choice(column_of_device[device]))
        kind = ANOMALY_KINDS[int(rng.integers(len(ANOMALY_KINDS)))]
        length = 1 if kind == "spike" else int(rng.integers(15, 60))
        start = int(rng.integers(0, max(1, steps - length)))
        end = min(steps, start + length)
        span = values[start:end, column]
        scale = noise[column] + amplitude[column]
        if kind == "spike":
            span += rng.choice([-1, 1]) * scale * rng.uniform(4, 8)
        elif kind == "level_shift":
            span += rng.choice([-1, 1]) * scale * rng.uniform(1.5, 3)
        elif kind == "drift":
            span += rng.choice([-1, 1]) * scale * np.linspace(0, rng.uniform(2, 4), end - start)
        elif kind == "stuck":
            span[:] = span[0]
        else:
            span += rng.normal(0, noise[column] * 8, end - start)
        labels[start:end, device] = 1
        events[kind] += 1

    offsets_ms = np.round((np.arange(steps)[:, None] * interval + phase[order][None, :]) * 1000).astype(np.int64)
    stamps = START + offsets_ms.astype("timedelta64[ms]")
    field_names = [FIELD_KINDS[k][0] for _, k in columns]
    with path.open("wb") as out:
        for step in range(steps):
            iso = np.datetime_as_string(stamps[step], unit="ms")
            row = values[step].tolist()
            lines = []
            for position, device in enumerate(order):
                device_columns = column_of_device[device]
                if len(device_columns) == 1:
                    data: float | dict[str, float] = row[device_columns[0]]
                else:
                    data = {field_names[c]: row[c] for c in device_columns}
                lines.append(
                    orjson.dumps(
                        {
                            "device_id": names[device],
                            "timestamp": f"{iso[position]}Z",
                            "data": data,
                            "label": int(labels[step, device]),
                        },
                        option=orjson.OPT_APPEND_NEWLINE,
                    )
                )
            out.write(b"".join(lines))
    return FleetStats(
        records=steps * devices,
        devices=devices,
        fields=len(columns),
        anomalous_records=int(labels.sum()),
        events=dict(sorted(events.items())),
        seconds=time.perf_counter() - started,
    )


def _columns_by_device(columns: list[tuple[int, int]], devices: int) -> list[list[int]]:
    by_device: list[list[int]] = [[] for _ in range(devices)]
    for column, (device, _) in enumerate(columns):
        by_device[device].append(column)
    return by_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2407)
    parser.add_argument("--rows", type=int, default=300_000, help="records, rounded up to whole time steps")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between a device's readings")
    parser.add_argument("--fields", type=int, default=None, help="exactly this many fields per device")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 1_000_000:
        parser.error("--devices must be between 1 and 1,000,000")
    stats = generate_fleet(args.out, args.devices, args.rows, args.seed, args.interval, args.fields)
    print(orjson.dumps(stats.__dict__).decode(), file=sys.stdout)


if __name__ == "__main__":
    main()
