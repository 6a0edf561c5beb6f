"""FLEAD's per-device logic as a PyFlink job with keyed state, the Flink way to write it.

    bash bench/references/setup_pyflink.sh
    bench/.venv-flink/bin/python -m bench.references.pyflink_job fleet.jsonl 1

A ``FileSource`` of lines, ``key_by(device_id)``, a ``KeyedProcessFunction`` whose
``ValueState`` holds the device (its windows and River model, the same logic as
``river_loop.Device``) and emits a local update each round, and a second keyed function on
one key that averages every 20 updates. The global model does not flow back to the devices:
a DataStream job has no cycle without an external topic, so this reference does slightly
less work than FLEAD. Prints one JSON line: records/s over the job's run time with the
job's start-up (measured on a one-line file) taken off.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSource, StreamFormat
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor


class DeviceFunction(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext) -> None:
        self.device = runtime_context.get_state(ValueStateDescriptor("device", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, value, ctx):
        import math
        from datetime import datetime

        import orjson

        from bench.references.river_loop import ROUND_ROWS, ROUND_SECONDS, Z_WARNING, Device, Field

        message = orjson.loads(value)
        device = self.device.value() or Device()
        timestamp = datetime.fromisoformat(message["timestamp"]).timestamp()
        if device.rows == 0:
            device.round_start = timestamp
        data = message["data"]
        zs = []
        features = {"z_change": 0.0, "level_shift": 0.0, "spread_ratio": 0.0, "flat": 0.0}
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
        device.model.predict_proba_one(features)
        label = message.get("label")
        device.model.learn_one(features, bool(label if label is not None else features["abs_z"] >= Z_WARNING))
        device.rows += 1
        if device.rows >= ROUND_ROWS or timestamp - device.round_start >= ROUND_SECONDS:
            yield json.dumps([message["device_id"], device.model.weights, device.model.intercept, device.rows])
            device.rows = 0
        self.device.update(device)


class FedAvgFunction(KeyedProcessFunction):
    def open(self, runtime_context: RuntimeContext) -> None:
        self.latest = runtime_context.get_state(ValueStateDescriptor("latest", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, value, ctx):
        from bench.references.river_loop import FEDAVG_EVERY

        device_id, weights, intercept, n = json.loads(value)
        latest, pending, version = self.latest.value() or ({}, 0, 0)
        latest[device_id] = (weights, intercept, n)
        pending += 1
        if pending >= FEDAVG_EVERY:
            total = sum(k for _, _, k in latest.values())
            names = {name for w, _, _ in latest.values() for name in w}
            averaged = {name: sum(w.get(name, 0.0) * k for w, _, k in latest.values()) / total for name in names}
            version += 1
            yield json.dumps({"version": version, "weights": averaged})
            latest, pending = {}, 0
        self.latest.update((latest, pending, version))


def run_job(path: Path, parallelism: int) -> float:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.set_parallelism(parallelism)
    env.set_python_executable(sys.executable)  # the UDF workers use this venv, not the first python on PATH
    env.add_python_file(str(Path(__file__).resolve().parents[2] / "bench"))
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path)).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "fleet")
    keyed = lines.key_by(lambda line: json.loads(line)["device_id"], key_type=Types.STRING())
    updates = keyed.process(DeviceFunction(), output_type=Types.STRING())
    models = updates.key_by(lambda _: "federation", key_type=Types.STRING()).process(
        FedAvgFunction(), output_type=Types.STRING()
    )
    models.filter(lambda _: False).print()
    started = time.perf_counter()
    env.execute("flead-reference")
    return time.perf_counter() - started


def main() -> None:
    path, parallelism = Path(sys.argv[1]).resolve(), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    records = sum(1 for _ in path.open("rb"))
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as tiny:
        with path.open("rb") as source:
            tiny.write(source.readline())
        tiny.flush()
        start_up = run_job(Path(tiny.name), parallelism)
    seconds = run_job(path, parallelism)
    work = max(seconds - start_up, 1e-9)
    print(
        json.dumps(
            {
                "records": records,
                "parallelism": parallelism,
                "seconds": seconds,
                "start_up_seconds": start_up,
                "records_per_second": records / work,
                "records_per_second_with_start_up": records / seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
