"""The floor loop: the least work that could be called detection, in plain Python.

Reads each line, parses it with orjson, and updates a rolling z-score per device and field
(a deque and running sums). No features, no model, no outputs: the machine's own speed
for this data, which every other result is divided by.

    python -m bench.references.floor_loop fleet.jsonl
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from pathlib import Path

import orjson

WINDOW = 100
Z_WARNING = 2.5


def run(path: Path) -> dict[str, float]:
    started = time.perf_counter()
    windows: dict[tuple[str, str], list] = {}
    records = anomalies = 0
    with path.open("rb") as lines:
        for line in lines:
            message = orjson.loads(line)
            records += 1
            data = message["data"]
            device = message["device_id"]
            for field, x in data.items() if isinstance(data, dict) else (("value", data),):
                state = windows.get((device, field))
                if state is None:
                    state = windows[(device, field)] = [deque(maxlen=WINDOW), 0.0, 0.0]
                window, total, total_sq = state
                n = len(window)
                if n > 1:
                    mean = total / n
                    variance = total_sq / n - mean * mean
                    if variance > 0 and abs(x - mean) >= Z_WARNING * math.sqrt(variance):
                        anomalies += 1
                if n == WINDOW:
                    oldest = window[0]
                    total -= oldest
                    total_sq -= oldest * oldest
                window.append(x)
                state[1] = total + x
                state[2] = total_sq + x * x
    seconds = time.perf_counter() - started
    return {"records": records, "seconds": seconds, "records_per_second": records / seconds, "anomalies": anomalies}


if __name__ == "__main__":
    print(orjson.dumps(run(Path(sys.argv[1]))).decode())
