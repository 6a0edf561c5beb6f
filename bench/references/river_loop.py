"""FLEAD's per-device logic as a user might write it without a framework: one loop with River.

Every line is parsed and handed to its device (``device_logic.Device``: rolling z-scores,
features, River ``LogisticRegression`` predict-then-learn, rounds); a closed round goes to
FedAvg, and each new global model reaches a device when its next round starts. One process,
no sharding, no outputs beyond counts: the work FLEAD does, and nothing else.

    python -m bench.references.river_loop fleet.jsonl
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.references.device_logic import Device, FedAvg, Model


def run(path: Path | str) -> dict[str, Any]:
    started = time.perf_counter()
    devices: dict[str, Device] = {}
    fedavg = FedAvg()
    global_model: Model | None = None
    records = flagged = global_flagged = updates = 0
    with open(path, "rb") as lines:
        for line in lines:
            message = orjson.loads(line)
            device_id = message["device_id"]
            device = devices.get(device_id)
            if device is None:
                device = devices[device_id] = Device()
            outcome = device.observe(message, global_model)
            records += 1
            flagged += outcome.flagged
            global_flagged += outcome.global_flagged
            if outcome.update is not None:
                updates += 1
                global_model = fedavg.add(device_id, outcome.update) or global_model
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "seconds": seconds,
        "records_per_second": records / seconds,
        "devices": len(devices),
        "anomalies": flagged,
        "global_anomalies": global_flagged,
        "local_updates": updates,
        "global_versions": fedavg.version,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m bench.references.river_loop FLEET.jsonl\n{__doc__}")
    print(orjson.dumps(run(sys.argv[1])).decode())
