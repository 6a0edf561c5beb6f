"""FLEAD's per-device logic as a user might write it without a framework: a loop with River.

Per device and field a rolling window (deque + running sums) gives the z-score of each
reading against the window before it; scale-free features (largest and mean |z|, change of
z, short/long level shift and spread ratio, a stuck-sensor flag) feed a River
``LogisticRegression`` per device, predict then learn (on the label when present, else on the
z-rule); a round closes every 50 readings or 60 s of event time, and FedAvg of the latest
weights per device every 20 rounds is loaded by each device at its next round. No sharding,
no outputs, one process: the work FLEAD does, and nothing else.

    python -m bench.references.river_loop fleet.jsonl
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from datetime import datetime
from pathlib import Path

import orjson
from river import linear_model, optim, utils

WINDOW, SHORT, WARMUP = 100, 10, 10
Z_WARNING = 2.5
ROUND_ROWS, ROUND_SECONDS, FEDAVG_EVERY = 50, 60.0, 20


class Field:
    __slots__ = ("last_z", "sq", "sum", "window")

    def __init__(self) -> None:
        self.window: deque[float] = deque(maxlen=WINDOW)
        self.sum = self.sq = self.last_z = 0.0

    def push(self, x: float) -> tuple[float, float, float, float, float]:
        """z of x against the window before it; then (short mean gap, short std, long std) after."""
        window = self.window
        n = len(window)
        z = 0.0
        if n >= WARMUP:
            mean = self.sum / n
            variance = self.sq / n - mean * mean
            if variance > 0:
                z = (x - mean) / math.sqrt(variance)
        if n == WINDOW:
            oldest = window[0]
            self.sum -= oldest
            self.sq -= oldest * oldest
        window.append(x)
        self.sum += x
        self.sq += x * x
        short = list(window)[-SHORT:]
        short_mean = sum(short) / len(short)
        short_var = sum(v * v for v in short) / len(short) - short_mean * short_mean
        n = len(window)
        mean = self.sum / n
        variance = self.sq / n - mean * mean
        dz = z - self.last_z
        self.last_z = z
        return z, dz, abs(short_mean - mean), math.sqrt(max(short_var, 0.0)), math.sqrt(max(variance, 0.0))


class Device:
    def __init__(self) -> None:
        self.fields: dict[str, Field] = {}
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05), intercept_lr=0.05)
        self.rows = 0
        self.round_start = 0.0
        self.global_version = 0


def run(path: Path) -> dict[str, float]:
    started = time.perf_counter()
    devices: dict[str, Device] = {}
    latest: dict[str, tuple[dict[str, float], float, int]] = {}
    global_model: tuple[int, dict[str, float], float] | None = None
    pending = records = anomalies = updates = versions = 0
    with path.open("rb") as lines:
        for line in lines:
            message = orjson.loads(line)
            records += 1
            timestamp = datetime.fromisoformat(message["timestamp"]).timestamp()
            device = devices.get(message["device_id"])
            if device is None:
                device = devices[message["device_id"]] = Device()
            if device.rows == 0:
                device.round_start = timestamp
                if global_model is not None and global_model[0] > device.global_version:
                    device.global_version, weights, intercept = global_model
                    device.model._weights = utils.VectorDict(dict(weights))
                    device.model.intercept = intercept
            data = message["data"]
            zs, features = [], {"abs_z": 0.0, "z_change": 0.0, "level_shift": 0.0, "spread_ratio": 0.0, "flat": 0.0}
            for name, x in data.items() if isinstance(data, dict) else (("value", data),):
                state = device.fields.get(name)
                if state is None:
                    state = device.fields[name] = Field()
                z, dz, gap, short_std, long_std = state.push(x)
                zs.append(abs(z))
                features["z_change"] = max(features["z_change"], abs(dz))
                if long_std > 0:
                    features["level_shift"] = max(features["level_shift"], gap / long_std)
                    if short_std > 0:
                        features["spread_ratio"] = max(features["spread_ratio"], math.log(short_std / long_std))
                if short_std == 0:
                    features["flat"] = 1.0
            features["abs_z"] = min(max(zs), 10.0)
            features["abs_z_mean"] = min(sum(zs) / len(zs), 10.0)
            flagged = features["abs_z"] >= Z_WARNING
            anomalies += flagged
            device.model.predict_proba_one(features)
            if global_model is not None:
                dot = global_model[2] + sum(global_model[1].get(k, 0.0) * v for k, v in features.items())
                1.0 / (1.0 + math.exp(-max(-35.0, min(35.0, dot))))
            label = message.get("label")
            device.model.learn_one(features, bool(label if label is not None else flagged))
            device.rows += 1
            if device.rows >= ROUND_ROWS or timestamp - device.round_start >= ROUND_SECONDS:
                latest[message["device_id"]] = (device.model.weights, device.model.intercept, device.rows)
                device.rows = 0
                updates += 1
                pending += 1
                if pending >= FEDAVG_EVERY:
                    total = sum(n for _, _, n in latest.values())
                    names = {name for weights, _, _ in latest.values() for name in weights}
                    weights = {k: sum(w.get(k, 0.0) * n for w, _, n in latest.values()) / total for k in names}
                    intercept = sum(b * n for _, b, n in latest.values()) / total
                    versions += 1
                    global_model = (versions, weights, intercept)
                    latest.clear()
                    pending = 0
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "seconds": seconds,
        "records_per_second": records / seconds,
        "anomalies": anomalies,
        "local_updates": updates,
        "global_versions": versions,
    }


if __name__ == "__main__":
    print(orjson.dumps(run(Path(sys.argv[1]))).decode())
