"""The floor loop: the least work that could be called detection, in plain Python.

Reads each line, parses it with orjson, and updates a rolling z-score per device and field
(a deque of the last 100 readings and running sums), counting readings with |z| ≥ 2.5
against the window before them. No features, no model, no outputs: this machine's own speed
for this data, which the other results are divided by.

    python -m bench.references.floor_loop fleet.jsonl
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

WINDOW = 100
Z_WARNING = 2.5


class Window:
    __slots__ = ("readings", "sq", "sum")

    def __init__(self) -> None:
        self.readings: deque[float] = deque(maxlen=WINDOW)
        self.sum = self.sq = 0.0


def run(path: Path | str) -> dict[str, Any]:
    started = time.perf_counter()
    windows: dict[tuple[str, str], Window] = {}
    records = anomalies = 0
    with open(path, "rb") as lines:
        for line in lines:
            message = orjson.loads(line)
            records += 1
            device_id = message["device_id"]
            data = message["data"]
            for field, x in data.items() if isinstance(data, dict) else (("value", data),):
                window = windows.get((device_id, field))
                if window is None:
                    window = windows[(device_id, field)] = Window()
                readings = window.readings
                n = len(readings)
                if n > 1:
                    mean = window.sum / n
                    variance = window.sq / n - mean * mean
                    if variance > 0.0 and abs(x - mean) >= Z_WARNING * math.sqrt(variance):
                        anomalies += 1
                if n == WINDOW:
                    leaving = readings[0]
                    window.sum -= leaving
                    window.sq -= leaving * leaving
                readings.append(x)
                window.sum += x
                window.sq += x * x
    seconds = time.perf_counter() - started
    return {"records": records, "seconds": seconds, "records_per_second": records / seconds, "anomalies": anomalies}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m bench.references.floor_loop FLEET.jsonl\n{__doc__}")
    print(orjson.dumps(run(sys.argv[1])).decode())
