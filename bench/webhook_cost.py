"""What alerts to a webhook cost a replay: none configured, a live receiver, a receiver that is down.

    .venv/bin/python -m bench.webhook_cost                  # 500 devices, 150,000 records, 3 runs (about 3 minutes)
    .venv/bin/python -m bench.webhook_cost --records 300000 --runs 5

The same synthetic fleet (``bench/fleet.py``) is replayed (``python -m bytewax.run
dataflows.flead``, one process) in each of these ways, one run of each in turn, ``--runs``
times:

- no ``FLEAD_ALERT_WEBHOOK_URL``: the dataflow has no alert steps;
- a live receiver (a ``ThreadingHTTPServer`` on 127.0.0.1 in this process that answers 200),
  with the default rate limit (60 a minute) and with none (every alert the cooldown lets
  through is posted);
- a closed port on 127.0.0.1 (a receiver down for the whole run: every attempt refused,
  retried with backoff, dropped), with the default rate limit and with none.

For each: the medians of the wall time of the whole process and of records per second over
the time rows were flowing (``seconds_since_first_rows`` in ``summary.json``), the ratio of
the latter to the run without a webhook, and the alerts the receiver got. Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from bench.fleet import generate_fleet
from bench.run import flead_env, free_port, progress, run_measured


class _Receiver(BaseHTTPRequestHandler):
    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with _Receiver.lock:
            _Receiver.received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def replay(fleet: Path, **settings: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "bytewax.run", "dataflows.flead"]
        wall, _ = run_measured(command, flead_env(fleet, Path(out), FLEAD_REPORT_POINTS="0", **settings))
        summary = orjson.loads((Path(out) / "summary.json").read_bytes())
    return {
        "wall_seconds": wall,
        "records_per_second": summary["rows_processed"] / summary["seconds_since_first_rows"],
        "critical": summary["anomalies"].get("critical", 0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--records", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    live = f"http://127.0.0.1:{server.server_port}/services/bench-token"
    down = f"http://127.0.0.1:{free_port()}/services/bench-token"
    ways = {
        "no webhook": {},
        "live receiver, 60 a minute (default)": {"FLEAD_ALERT_WEBHOOK_URL": live},
        "live receiver, no rate limit": {"FLEAD_ALERT_WEBHOOK_URL": live, "FLEAD_ALERT_MAX_PER_MINUTE": "0"},
        "receiver down, 60 a minute (default)": {"FLEAD_ALERT_WEBHOOK_URL": down},
        "receiver down, no rate limit": {"FLEAD_ALERT_WEBHOOK_URL": down, "FLEAD_ALERT_MAX_PER_MINUTE": "0"},
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="flead-bench-") as work:
        fleet = Path(work) / "fleet.jsonl"
        progress(f"generating {args.devices:,} devices, {args.records:,} records")
        stats = generate_fleet(fleet, devices=args.devices, rows=args.records)
        for i in range(args.runs):
            for name, settings in ways.items():
                progress(f"run {i + 1}/{args.runs}: {name}")
                before = _Receiver.received
                result = replay(fleet, **settings)
                result["received"] = _Receiver.received - before
                results[name].append(result)
    server.shutdown()

    baseline = [r["records_per_second"] for r in results["no webhook"]]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Fleet: {stats.devices:,} devices, {stats.records:,} records, "
        f"{statistics.median(r['critical'] for r in results['no webhook']):,.0f} critical anomalies; "
        f"medians of {args.runs} runs, each way in turn.",
        "",
        "| webhook | wall s | records/s | ratio to no webhook | alerts received |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        ratios = [r["records_per_second"] / b for r, b in zip(runs, baseline, strict=True)]
        lines.append(
            f"| {name} | {statistics.median(r['wall_seconds'] for r in runs):.2f} "
            f"| {statistics.median(r['records_per_second'] for r in runs):,.0f} "
            f"| {statistics.median(ratios):.3f} | {statistics.median(r['received'] for r in runs):,.0f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
