"""The HTTP API's latency with a million anomalies: p50/p99 of its main reads.

    .venv/bin/python -m bench.api_latency                  # plain PostgreSQL, about 6 minutes on 2 cores
    .venv/bin/python -m bench.api_latency --timescaledb    # the same tables as TimescaleDB hypertables
    .venv/bin/python -m bench.api_latency --timescaledb --compress --targets-only  # every chunk compressed
    .venv/bin/python -m bench.api_latency --rows 100000 --requests 500

Fills a fresh database (FLEAD's schema, ``sinks/database_schema.py``) in SQL with
``generate_series``: ``--rows`` anomalies (1,000,000) of 2,000 devices over 30 days, each with
the values and three-part explanation the dataflow writes; 10,000 global versions with weights,
normal model and an evaluation every 25 versions; 50 local rounds per device. Then ``ANALYZE``,
and the plan of each read (``EXPLAIN (ANALYZE, BUFFERS)``) goes to stderr. The API runs as it
does in production (``python -m api``, a subprocess, with a token); each read is asked
``--warmup`` times, then timed ``--requests`` times over one kept-alive HTTP connection, from
the request to the last byte of the answer. Prints a markdown table: per read, its answer's
size, p50, p99 and the largest, in milliseconds.

The server is a throw-away one started here (``deploy/local/servers.py``; TimescaleDB built by
``deploy/local/timescaledb.py`` if need be), or ``--database-url`` of a role that may create
databases.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg

from deploy.local.servers import PostgresServer, free_port
from sinks.database_schema import connect, ensure_schema

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789abcdef"
DEVICES = 2_000
VERSIONS = 10_000
ROUNDS_PER_DEVICE = 50

FILL = [
    # Anomalies: device i % DEVICES, spread evenly over 30 days (primary key: device and time).
    """
INSERT INTO anomalies
SELECT 'fleet/device-' || lpad((i % {devices})::text, 5, '0'),
       timestamptz '2025-01-01 00:00:00+00' + i * (interval '30 days' / {rows}),
       jsonb_build_object('value', round((20 + 5 * sin(i))::numeric, 4), 'rpm', 1500 + i % 97),
       'value', round((3 + (i % 40) / 10.0)::numeric, 4), CASE WHEN i % 3 = 0 THEN 'critical' ELSE 'warning' END,
       round((0.5 + (i % 500) / 1000.0)::numeric, 6), 1 + i * {versions}::bigint / {rows},
       jsonb_build_array(
         jsonb_build_object('evidence', 'level', 'field', 'value', 'value', 1.0171, 'log10_tail', -4.55),
         jsonb_build_object('evidence', 'forecast', 'field', 'value', 'value', -0.3084, 'log10_tail', -0.28),
         jsonb_build_object('evidence', 'spread', 'field', 'rpm', 'value', -0.157, 'log10_tail', -0.16))
FROM generate_series(0, {rows} - 1) AS i
""",
    """
INSERT INTO federated_models
SELECT v, v, jsonb_build_object('abs_z', -0.3 - v / 1e5, 'abs_z_mean', -0.29, 'flat', 0.0, 'level_shift', -0.05,
                                'spread_ratio', 0.03, 'z_change', -0.48),
       -0.6 - v / 1e5, 0.97, 40, 20, 2000, timestamptz '2025-01-01 00:00:00+00' + v * (interval '30 days' / {versions}),
       0.5, jsonb_build_object('forecast', jsonb_build_array(9841, 0.74, 1.0),
                               'spread', jsonb_build_array(9841, 1.4, 7.2),
                               'level', jsonb_build_array(9841, 0.55, 0.66),
                               'relation', jsonb_build_array(9841, 0, 0))
FROM generate_series(1, {versions}) AS v
""",
    """
INSERT INTO model_evaluations
SELECT v, 1000, 40, 10, 930, 20, 0.97, 0.8, 0.667, 0.727,
       timestamptz '2025-01-01 00:00:00+00' + v * (interval '30 days' / {versions}),
       timestamptz '2025-01-01 00:00:00+00' + (v + 25) * (interval '30 days' / {versions})
FROM generate_series(25, {versions}, 25) AS v
""",
    """
INSERT INTO local_models (device_id, model_version, global_version, weights, intercept, samples_processed, labelled,
                          accuracy, loss, normal_model, created_at)
SELECT 'fleet/device-' || lpad(d::text, 5, '0'), r, r * {versions} / {rounds},
       jsonb_build_object('abs_z', 0.1, 'flat', 0.0, 'z_change', -0.2), -0.05, 50, 0, NULL, NULL,
       jsonb_build_object('forecast', jsonb_build_array(50, 0.8, 0.7)),
       timestamptz '2025-01-01 00:00:00+00' + r * (interval '30 days' / {rounds}) + d * interval '1 second'
FROM generate_series(0, {devices} - 1) AS d, generate_series(1, {rounds}) AS r
""",
]


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextmanager
def database(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """A fresh database with FLEAD's schema: its URL and mode."""
    server = None
    admin_url = args.database_url
    if admin_url is None:
        if args.timescaledb:
            from deploy.local.timescaledb import ensure_timescaledb

            ensure_timescaledb()
        server = PostgresServer(preload="timescaledb" if args.timescaledb else "").start()
        admin_url = server.url
    name = f"api_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        with connect(url) as conn:  # compression set up (the dataflow's default) only when asked for
            mode = ensure_schema(conn, "7 days" if args.compress else None)
        yield url, mode
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        if server is not None:
            server.stop()


def fill(url: str, rows: int, compress: bool = False) -> None:
    sizes = {"rows": rows, "devices": DEVICES, "versions": VERSIONS, "rounds": ROUNDS_PER_DEVICE}
    with connect(url, timeout=30) as conn:
        for statement in FILL:
            started = time.perf_counter()
            table = statement.split()[2]
            conn.execute(statement.format(**sizes))
            progress(f"{table} filled in {time.perf_counter() - started:.1f} s")
        if compress:  # what the compression policy does to chunks older than FLEAD_DB_COMPRESS_AFTER
            started = time.perf_counter()
            for table in ("anomalies", "local_models", "federated_models"):
                conn.execute("SELECT count(compress_chunk(chunk)) FROM show_chunks(%s::regclass) AS chunk", (table,))
            progress(f"every chunk compressed in {time.perf_counter() - started:.1f} s")
        conn.execute("ANALYZE")


def start_api(url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
    env.update({"FLEAD_DATABASE_URL": url, "FLEAD_API_BIND": f"127.0.0.1:{port}", "FLEAD_API_TOKENS": TOKEN})
    proc = subprocess.Popen([sys.executable, "-m", "api"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not start within 60 s")


def measure(port: int, path: str, warmup: int, requests: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seconds = []
    size = 0
    for index in range(warmup + requests):
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        if index >= warmup:
            seconds.append(elapsed)
        size = len(body)
    connection.close()
    seconds.sort()
    return {
        "bytes": size,
        "p50": statistics.median(seconds) * 1000,
        "p99": seconds[min(len(seconds) - 1, round(0.99 * len(seconds)))] * 1000,
        "max": seconds[-1] * 1000,
    }


def middle_cursor(port: int, rows: int) -> str:
    """``next_after`` of a page half-way down the anomalies (a deep page, as a client walking them reaches)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "GET", "/anomalies?limit=1&until=2025-01-16T00:00:00Z", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    cursor = json.loads(connection.getresponse().read())["next_after"]
    connection.close()
    if cursor is None:
        raise RuntimeError(f"no anomaly before 2025-01-16 among {rows:,}")
    return cursor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="anomaly rows")
    parser.add_argument("--requests", type=int, default=2_000, help="timed requests per read")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per read first")
    parser.add_argument("--timescaledb", action="store_true", help="a server with TimescaleDB: hypertables")
    parser.add_argument(
        "--compress", action="store_true", help="with --timescaledb: compress every chunk first (old data)"
    )
    parser.add_argument("--targets-only", action="store_true", help="only the latest model and the anomaly pages")
    parser.add_argument("--no-plans", action="store_true", help="skip the EXPLAIN of each read")
    parser.add_argument("--database-url", help="a server of your own (a role that may create databases)")
    args = parser.parse_args()
    with database(args) as (url, mode):
        progress(f"database mode: {mode}; filling {args.rows:,} anomalies")
        fill(url, args.rows, args.compress)
        proc, port = start_api(url)
        try:
            device = "fleet/device-00042"
            encoded = quote(device, safe="")
            half_way = middle_cursor(port, args.rows)
            reads = {
                "GET /models/global/latest": "/models/global/latest",
                "GET /anomalies?limit=100": "/anomalies?limit=100",
                "GET /anomalies?limit=100&after=(half-way)": f"/anomalies?limit=100&after={half_way}",
                f"GET /anomalies?device_id={device}&limit=100": f"/anomalies?device_id={encoded}&limit=100",
                "GET /anomalies?severity=critical&since=…&limit=100": (
                    "/anomalies?severity=critical&since=2025-01-10T00:00:00Z&limit=100"
                ),
                f"GET /devices/{device}": f"/devices/{encoded}",
                "GET /devices?limit=100": "/devices?limit=100",
                "GET /models/global?limit=100": "/models/global?limit=100",
            }
            if args.targets_only:
                reads = dict(list(reads.items())[:4])
            results = {}
            for name, path in reads.items():
                results[name] = measure(port, path, args.warmup, args.requests)
                progress(f"{name}: p50 {results[name]['p50']:.2f} ms, p99 {results[name]['p99']:.2f} ms")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.no_plans:
            show_plans(url)
    state = ", every chunk compressed" if args.compress else ""
    print(
        f"\n{args.rows:,} anomalies, {mode}{state}; {args.requests:,} requests per read after {args.warmup} "
        "(one kept-alive connection):\n"
    )
    print("| read | answer bytes | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, result in results.items():
        print(f"| `{name}` | {result['bytes']:,} | {result['p50']:.2f} | {result['p99']:.2f} | {result['max']:.2f} |")


def show_plans(url: str) -> None:
    """The plan of the SQL behind the two target reads, as ``api/queries.py`` sends it."""
    from api import queries

    plans = []

    class Explain(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):  # type: ignore[override]
            with psycopg.Cursor(self.connection) as plain:  # tuple rows, not this cursor's factory's
                plain.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {query}", params, **kwargs)
                plans.append("\n".join(line for (line,) in plain.fetchall()))
            return self

        def fetchall(self):  # type: ignore[override]
            return []

    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC", cursor_factory=Explain) as conn:
        for name, call in (
            ("latest global model", lambda: queries.global_model(conn)),
            ("anomalies, first page", lambda: queries.anomalies(conn, 101)),
            ("anomalies of one device", lambda: queries.anomalies(conn, 101, device_id="fleet/device-00042")),
        ):
            plans.clear()
            call()
            print(f"-- plan: {name}\n{plans[-1]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
