"""FLEAD's benchmark suite: throughput, latency, memory and scaling, beside the alternatives.

    .venv/bin/python -m bench.run                 # everything, about 15 minutes on 2 cores
    .venv/bin/python -m bench.run --quick         # smaller inputs, one run each

On the same synthetic fleet (``bench/fleet.py``) in the same run it measures:

- the floor loop (``bench/references/floor_loop.py``) that every result is divided by;
- the plain Python + River loop (``bench/references/river_loop.py``);
- FLEAD's own operators in a plain loop, without the dataflow and its outputs
  (``bench/references/flead_logic_loop.py``): what of FLEAD's cost is its per-reading work;
- FLEAD replaying the fleet, full pipeline with outputs, in 1 process and in 2 processes;
- PyFlink with the same logic (``bench/references/pyflink_job.py``), if its venv exists
  (``bash bench/references/setup_pyflink.sh``);
- FLEAD through a real Kafka broker: back-fill throughput, and p50/p99 latency from a
  reading's produce time to its anomaly on the ``anomalies`` topic at a fixed offered rate;
- peak RSS of FLEAD at 2,407, 10,000 and 100,000 one-field devices (each past its first
  full window; no run report), as bytes per device above a one-device run.

Machines here are noisy: each throughput is the median of ``--runs`` runs, and each ratio
is taken within one run, then the median of those ratios is reported. Prints a markdown
table and writes everything to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

from bench.fleet import generate_fleet
from bench.references import flead_logic_loop, floor_loop, river_loop

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FLINK_PYTHON = REPO / "bench" / ".venv-flink" / "bin" / "python"


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def flead_env(
    input_path: Path | str, out_dir: Path, base: dict[str, str] | None = None, **extra: str
) -> dict[str, str]:
    """A replay's environment: none of the caller's ``FLEAD_*``, then ``base`` (``--set``),
    the input and output, and ``extra``, each over the ones before."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
    env.update(base or {})
    env.update({"FLEAD_INPUT": str(input_path), "FLEAD_OUT_DIR": str(out_dir), "FLEAD_PROGRESS_SECONDS": "0"})
    env.update(extra)
    return env


_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(child.stderr.read().decode()[-2000:])
print(usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))
"""


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process.

    A small launcher process starts the child: a child forked straight from this (large)
    process would report this process's peak as its own, since the peak survives ``exec``.
    """
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    rss, code = result.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return seconds, int(rss)


def flead_replay(path: Path, processes: int, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """The full pipeline on a replayed file, with ``settings`` over the defaults; records/s
    over the time the rows were flowing."""
    with tempfile.TemporaryDirectory() as out:
        env = flead_env(path, Path(out), settings)
        command = [sys.executable, "-m", "bytewax.run", "dataflows.flead"]
        started = time.perf_counter()
        if processes == 1:
            run_measured(command, env)
        else:
            ports = [free_port() for _ in range(processes)]
            addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
            children = [
                subprocess.Popen(
                    [*command, "-i", str(i), "-a", addresses],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for i in range(processes)
            ]
            if any(child.wait() for child in children):
                raise RuntimeError("a FLEAD process failed")
        wall = time.perf_counter() - started
        summary = orjson.loads((Path(out) / "summary.json").read_bytes())
    seconds = summary["seconds_since_first_rows"]
    return {
        "records": summary["rows_processed"],
        "seconds": seconds,
        "wall_seconds": wall,
        "records_per_second": summary["rows_processed"] / seconds,
    }


def pyflink(path: Path, parallelism: int) -> dict[str, Any] | None:
    """PyFlink on the same fleet, tuned as a user would tune it (see ``pyflink_job.TUNING``)."""
    if not FLINK_PYTHON.exists():
        return None
    result = subprocess.run(
        [str(FLINK_PYTHON), "-m", "bench.references.pyflink_job", str(path), str(parallelism)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        return {"error": result.stderr[-1500:]}
    return orjson.loads(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    from deploy.local.servers import free_port as pick

    return pick()


def median_of(runs: list[dict[str, Any]], key: str = "records_per_second") -> float:
    return statistics.median(run[key] for run in runs)


def throughput(fleet: Path, runs: int) -> dict[str, Any]:
    measures: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("floor_loop", "river_loop", "flead_logic_loop", "flead_1_process", "flead_2_processes")
    }
    ratios: dict[str, list[float]] = {name: [] for name in measures if name != "floor_loop"}
    for i in range(runs):
        progress(f"throughput run {i + 1}/{runs}: floor loop")
        floor = floor_loop.run(fleet)
        measures["floor_loop"].append(floor)
        for name, measure in (
            ("river_loop", lambda: river_loop.run(fleet)),
            ("flead_logic_loop", lambda: flead_logic_loop.run(fleet)),
            ("flead_1_process", lambda: flead_replay(fleet, 1)),
            ("flead_2_processes", lambda: flead_replay(fleet, 2)),
        ):
            progress(f"throughput run {i + 1}/{runs}: {name}")
            result = measure()
            measures[name].append(result)
            ratios[name].append(result["records_per_second"] / floor["records_per_second"])
    table = {
        name: {"records_per_second": median_of(results), "runs": [r["records_per_second"] for r in results]}
        for name, results in measures.items()
    }
    for name, values in ratios.items():
        table[name]["ratio_to_floor"] = statistics.median(values)
    two_over_one = [
        b["records_per_second"] / a["records_per_second"]
        for a, b in zip(measures["flead_1_process"], measures["flead_2_processes"], strict=True)
    ]
    table["flead_2_processes"]["ratio_to_1_process"] = statistics.median(two_over_one)
    for name in ("flead_logic_loop", "flead_1_process"):
        river_ratio = [
            f["records_per_second"] / r["records_per_second"]
            for f, r in zip(measures[name], measures["river_loop"], strict=True)
        ]
        table[name]["ratio_to_river_loop"] = statistics.median(river_ratio)
    for parallelism in (1, 2):
        progress(f"PyFlink, parallelism {parallelism}")
        result = pyflink(fleet, parallelism)
        if result is not None:
            table[f"pyflink_parallelism_{parallelism}"] = result
    return table


def memory(sizes: list[int], work: Path) -> dict[str, Any]:
    """Peak RSS per device: one field each, 110 readings each (past a full window of 100), with
    the default settings but no run report, as a deployment reading Kafka runs. The report's
    memory is bounded by ``FLEAD_REPORT_POINTS`` whatever the fleet, and drawing it at the end
    of a replay makes the peak of a small fleet's run, which would hide part of what each
    device costs."""

    def replay_without_report(path: Path) -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as out:
            return run_measured(
                [sys.executable, "-m", "bytewax.run", "dataflows.flead"],
                flead_env(path, Path(out), FLEAD_REPORT_POINTS="0"),
            )

    tiny = work / "fleet-1.jsonl"
    generate_fleet(tiny, devices=1, rows=110, fields=1)
    _, baseline = replay_without_report(tiny)
    result: dict[str, Any] = {"baseline_rss_bytes": baseline}
    for devices in sizes:
        path = work / f"fleet-{devices}-1field.jsonl"
        progress(f"memory: generating {devices:,} one-field devices")
        generate_fleet(path, devices=devices, rows=devices * 110, fields=1)
        progress(f"memory: replaying {devices:,} devices")
        seconds, rss = replay_without_report(path)
        path.unlink()
        result[str(devices)] = {
            "peak_rss_bytes": rss,
            "bytes_per_device": (rss - baseline) / devices,
            "seconds": seconds,
        }
    # What one more device costs, between consecutive sizes: the part of a run's peak that
    # grows with the fleet, without what any run of this length holds (batches, outputs).
    for smaller, larger in pairwise(sizes):
        grown = result[str(larger)]["peak_rss_bytes"] - result[str(smaller)]["peak_rss_bytes"]
        result[str(larger)]["marginal_bytes_per_device"] = grown / (larger - smaller)
    return result


def kafka(fleet: Path, records: int) -> dict[str, Any]:
    from bench.kafka_latency import measure_kafka

    return measure_kafka(fleet, records, progress)


def markdown(results: dict[str, Any]) -> str:
    t = results["throughput"]
    floor = t["floor_loop"]["records_per_second"]
    lines = [
        f"Machine: {results['machine']}. Fleet: {results['fleet']['devices']:,} devices, "
        f"{results['fleet']['records']:,} records; medians of {results['runs']} runs.",
        "",
        "| what | records/s | × floor loop | notes |",
        "| --- | ---: | ---: | --- |",
        f"| floor loop (orjson + rolling z) | {floor:,.0f} | 1.00 | |",
    ]

    def row(name: str, label: str, note: str = "") -> None:
        if name in t and "records_per_second" in t[name]:
            rps = t[name]["records_per_second"]
            ratio = t[name].get("ratio_to_floor", rps / floor)
            lines.append(f"| {label} | {rps:,.0f} | {ratio:.3f} | {note} |")
        elif name in t:
            lines.append(f"| {label} | — | — | failed: see JSON |")

    row("river_loop", "plain Python + River loop")
    row(
        "flead_logic_loop",
        "FLEAD's operators in a plain loop (no dataflow, no outputs)",
        f"{t['flead_logic_loop']['ratio_to_river_loop']:.2f}× the River loop",
    )
    row(
        "flead_1_process",
        "FLEAD replay, full pipeline, 1 process",
        f"{t['flead_1_process']['ratio_to_river_loop']:.2f}× the River loop",
    )
    row(
        "flead_2_processes",
        "FLEAD replay, 2 processes",
        f"{t['flead_2_processes']['ratio_to_1_process']:.2f}× 1 process",
    )
    row("pyflink_parallelism_1", "PyFlink, parallelism 1", "excluding JVM/job start-up")
    row("pyflink_parallelism_2", "PyFlink, parallelism 2", "excluding JVM/job start-up")
    if "kafka" in results:
        k = results["kafka"]
        lines.append(
            f"| FLEAD through Kafka, 1 process (back-fill) | {k['backfill_records_per_second']:,.0f} | "
            f"{k['backfill_records_per_second'] / floor:.3f} | reading a full topic as fast as it can |"
        )
        sustained = k.get("sustained_records_per_second")
        if sustained:
            lines.append(
                f"| FLEAD through Kafka, 1 process (sustained) | {sustained:,.0f} | {sustained / floor:.3f} | "
                "highest produced rate it kept up with (producer on the same machine) |"
            )
        else:
            lines.append("| FLEAD through Kafka, 1 process (sustained) | — | — | kept up with no offered rate tried |")
        lines.append("")
        probes = ", ".join(
            f"{p['offered_rate']:,.0f}/s offered, {p['achieved_rate']:,.0f}/s produced: "
            f"{p['lag_at_end_of_production']:,} behind"
            for p in k.get("sustain_probes", [])
        )
        lines.append(f"Kafka lag at the end of production, by offered rate: {probes}.")
        lines.append(
            f"Kafka latency at {k['offered_rate']:,.0f} msg/s offered ({k['anomalies_measured']:,} anomalies): "
            f"p50 {k['p50_ms']:.0f} ms, p99 {k['p99_ms']:.0f} ms; largest lag while producing "
            f"{k.get('max_lag_at_latency_rate', 0):,}, at the end {k['final_lag']:,}."
        )
    if "memory" in results:
        lines += ["", memory_markdown(results["memory"])]
    return "\n".join(lines)


def memory_markdown(memory: dict[str, Any]) -> str:
    lines = [
        "| one-field devices (no run report) | peak RSS | bytes per device above a one-device run "
        "| bytes per added device |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for devices, m in memory.items():
        if devices.isdigit():
            marginal = m.get("marginal_bytes_per_device")
            lines.append(
                f"| {int(devices):,} | {m['peak_rss_bytes'] / 2**20:,.0f} MiB | {m['bytes_per_device']:,.0f} | "
                f"{'—' if marginal is None else f'{marginal:,.0f}'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FLEAD benchmarks")
    parser.add_argument("--devices", type=int, default=2407)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100k records, one run, memory up to 10,000 devices")
    parser.add_argument("--skip", action="append", default=[], choices=["kafka", "memory", "throughput"])
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.runs = 100_000, 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "runs": args.runs,
    }
    with tempfile.TemporaryDirectory(prefix="flead-bench-") as work_dir:
        work = Path(work_dir)
        fleet = work / "fleet.jsonl"
        progress(f"generating {args.devices:,} devices, {args.records:,} records")
        stats = generate_fleet(fleet, devices=args.devices, rows=args.records)
        results["fleet"] = stats.__dict__
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("throughput", lambda: throughput(fleet, args.runs)),
            ("kafka", lambda: kafka(fleet, stats.records)),
            ("memory", lambda: memory([2407, 10_000] if args.quick else [2407, 10_000, 100_000], work)),
        ]
        for name, step in steps:
            if name not in args.skip:
                results[name] = step()
    if "throughput" in results:
        table = markdown(results)
        print(table)
        results["markdown"] = table
    elif "memory" in results:  # the other tables are ratios to the throughput's floor loop
        print(memory_markdown(results["memory"]))
    (RESULTS / "latest.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    progress(f"results in {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
