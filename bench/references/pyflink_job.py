"""FLEAD's per-device logic as a PyFlink DataStream job with keyed state, the Flink way to write it.

    bash bench/references/setup_pyflink.sh                         # once: bench/.venv-flink
    python -m bench.references.pyflink_job fleet.jsonl 2            # parallelism 2

Run from FLEAD's venv it starts the job in the PyFlink venv as a child process; run from the
PyFlink venv it runs the job itself. Either way it prints one JSON line.

The job: a ``FileSource`` of text lines, ``key_by(device_id)``, a ``KeyedProcessFunction``
whose ``ValueState`` holds the device (``device_logic.Device``, the same code as the River
loop: windows, features, River model, rounds) and emits a local update at the end of each
round, then ``key_by`` one constant key into a second ``KeyedProcessFunction`` whose
``ValueState`` holds FedAvg. The global model does not flow back to the devices: that needs
a cycle, which the DataStream API no longer has (iterations were removed in Flink 2.0) short
of an external topic, so this job does a little less than FLEAD and the River loop (no
global model loaded at a round's start, no global score per reading).

Times reported:

- ``wall_seconds``: the child process from start to exit, JVM and mini-cluster start included
  (only when started from FLEAD's venv);
- ``job_seconds``: ``env.execute()``, from job submission to its end;
- ``seconds``: from the first reading a device function saw to the last one it finished,
  over all subtasks, from timestamps taken inside the job: start-up and tear-down excluded.
  ``records_per_second`` is over these.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FLINK_PYTHON = REPO / "bench" / ".venv-flink" / "bin" / "python"
TUNING = {
    # Elements per bundle (default 1,000). At a bundle's end the Python worker hands its keyed
    # state back to Java, and the first read of a key in the next bundle is a blocking round
    # trip (about 1 ms here). Readings come round-robin from thousands of devices, so with
    # 1,000-element bundles nearly every reading pays it: 700 records/s against 9-10k (2,407 devices).
    "python.fn-execution.bundle.size": "100000",
    # Keyed states the worker keeps between keys (default 1,000): room for every device.
    "python.state.cache-size": "10000",
}
"""What a user tuning this job for throughput would set; ``--flink-defaults`` leaves them out."""


def run(path: Path | str, parallelism: int = 1, tuned: bool = True) -> dict[str, Any]:
    """Run the job in the PyFlink venv; its result plus ``wall_seconds`` of the whole child process."""
    if not FLINK_PYTHON.exists():
        raise FileNotFoundError(f"{FLINK_PYTHON} is missing: run bash bench/references/setup_pyflink.sh")
    command = [str(FLINK_PYTHON), "-m", "bench.references.pyflink_job", str(path), str(parallelism)]
    if not tuned:
        command.append("--flink-defaults")
    started = time.perf_counter()
    child = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"the PyFlink job failed ({child.returncode}):\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall
    result["records_per_second_with_start_up"] = result["records"] / wall
    return result


def run_job(path: Path, parallelism: int, tuned: bool = True) -> dict[str, Any]:
    """Run the job in this process (the PyFlink venv) and gather what its functions measured."""
    from pyflink.common import Configuration, Types, WatermarkStrategy
    from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    from bench.references.pyflink_functions import DeviceFunction, FedAvgFunction, device_id

    config = Configuration()
    for key, value in TUNING.items() if tuned else ():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.set_parallelism(parallelism)
    env.set_python_executable(sys.executable)  # the workers run in this venv, not the first python on PATH
    with tempfile.TemporaryDirectory(prefix="flead-pyflink-") as work:
        env.add_python_file(str(_ship_bench_package(Path(work))))
        stats_dir = Path(work) / "stats"
        stats_dir.mkdir()
        source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path)).build()
        lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "fleet")
        updates = lines.key_by(device_id, key_type=Types.STRING()).process(
            DeviceFunction(str(stats_dir)), output_type=Types.PICKLED_BYTE_ARRAY()
        )
        federation = updates.key_by(lambda _: "fleet", key_type=Types.STRING()).process(
            FedAvgFunction(str(stats_dir)), output_type=Types.PICKLED_BYTE_ARRAY()
        )
        federation.print()  # a job needs a sink; FedAvg sends nothing to it
        started = time.perf_counter()
        env.execute(f"flead-reference-p{parallelism}")
        job_seconds = time.perf_counter() - started
        stats = [json.loads(f.read_text()) for f in sorted(stats_dir.glob("*.json"))]
    devices = [s for s in stats if s["function"] == "device" and s["records"]]
    fedavg = [s for s in stats if s["function"] == "fedavg"]
    records = sum(s["records"] for s in devices)
    seconds = max(s["last"] for s in devices) - min(s["first"] for s in devices)
    return {
        "records": records,
        "parallelism": parallelism,
        "tuned": tuned,
        "seconds": seconds,
        "records_per_second": records / seconds,
        "job_seconds": job_seconds,
        "records_per_second_of_job": records / job_seconds,
        "anomalies": sum(s["flagged"] for s in devices),
        "local_updates": sum(s["updates"] for s in devices),
        "global_versions": sum(s["versions"] for s in fedavg),
        "subtasks": stats,
    }


def _ship_bench_package(work: Path) -> Path:
    """A copy of just the modules the workers import (the real ``bench/`` holds the PyFlink venv)."""
    package = work / "bench"
    (package / "references").mkdir(parents=True)
    for name in ("__init__.py", "references/__init__.py", "references/device_logic.py"):
        shutil.copy(REPO / "bench" / name, package / name)
    shutil.copy(Path(__file__).with_name("pyflink_functions.py"), package / "references" / "pyflink_functions.py")
    return package


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("fleet", type=Path, help="a JSON Lines fleet from bench.fleet")
    parser.add_argument("parallelism", nargs="?", type=int, default=1)
    parser.add_argument("--flink-defaults", action="store_true", help="leave out TUNING (bundle size, state cache)")
    args = parser.parse_args(argv)
    path = args.fleet.resolve()
    if importlib.util.find_spec("pyflink") is None:
        result = run(path, args.parallelism, tuned=not args.flink_defaults)
    else:
        result = run_job(path, args.parallelism, tuned=not args.flink_defaults)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
