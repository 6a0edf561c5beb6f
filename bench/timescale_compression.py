"""How FLEAD's tables compress on TimescaleDB: rows, chunks, bytes before and after, ratio.

    .venv/bin/python -m bench.timescale_compression            # about 5.5 minutes on 2 cores
    .venv/bin/python -m bench.timescale_compression --quick    # 300 devices, the levers skipped

Two workloads, each replayed by FLEAD itself (``python -m bytewax.run dataflows.flead`` with
``FLEAD_DATABASE_URL``) into a fresh database of a TimescaleDB server, with this build's
settings, compression after 7 days and no retention:

- the benchmark fleet (``bench/fleet.py``: 2,407 devices, 300,875 records, a reading every
  10 s, so 21 minutes of event time): a dense fleet, every table in one chunk;
- the bundled replay (``data/nab``: 13 devices over 19 months): a sparse one, many chunks.

Then each table's compression policy runs in the foreground (``CALL run_job``), and each
table's size (``hypertable_detailed_size``: heap, indexes and TOAST of every chunk) is taken
before and after. The same rows (the run's JSON Lines) are then written into fresh databases
with other settings, the earlier build's and one lever changed at a time, and measured the
same way. Last, the rows are written again into the compressed chunks, as a replay after
recovery would: nothing may be inserted twice.

The server is a throw-away one started here (``deploy/local/servers.py``; TimescaleDB built by
``deploy/local/timescaledb.py`` if need be), or ``--database-url`` of a role that may create
databases.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import psycopg

from bench.fleet import generate_fleet
from sinks import database_schema
from sinks.database_rows import write_rows
from sinks.database_schema import TABLES, Table, connect, ensure_schema

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data" / "nab"
HYPERTABLES = [name for name, table in TABLES.items() if table.chunk_interval is not None]
BATCH_ROWS = 5_000
"""Rows per write, as the sink's writer thread flushes them."""


@dataclass(frozen=True)
class Variant:
    name: str
    tables: dict[str, Table]
    """Each hypertable's settings."""
    alter: tuple[str, ...] = ()
    """Statements run on the tables before compression is enabled (column types)."""


def _with(**changes: dict[str, str]) -> dict[str, Table]:
    """This build's tables with some tables' settings changed: ``local_models={"segmentby": ...}``."""
    return {name: replace(TABLES[name], **changes.get(name, {})) for name in HYPERTABLES}


EARLIER = Variant(
    "earlier build: 7-day chunks, segmentby device_id",
    {
        "local_models": Table("local_models", "created_at", "7 days", "device_id", "created_at DESC, model_version"),
        "federated_models": Table("federated_models", "created_at", "7 days", "", "created_at DESC, global_version"),
        "model_evaluations": Table(
            "model_evaluations", "window_start", "7 days", "", "window_start DESC, global_version"
        ),
        "anomalies": Table("anomalies", "timestamp", "7 days", "device_id", '"timestamp" DESC'),
    },
)
LEVERS = (
    Variant(
        "this build but segmentby device_id",
        _with(
            local_models={"segmentby": "device_id", "orderby": "created_at DESC, model_version"},
            anomalies={"segmentby": "device_id", "orderby": '"timestamp" DESC'},
        ),
    ),
    Variant(
        "this build but the other column first in orderby",
        _with(
            local_models={"orderby": "device_id, created_at DESC, model_version"},
            anomalies={"orderby": '"timestamp" DESC, device_id'},
        ),
    ),
    Variant("this build but 1-day chunks", _with(**{name: {"chunk_interval": "1 day"} for name in HYPERTABLES})),
    Variant("this build but 7-day chunks", _with(**{name: {"chunk_interval": "7 days"} for name in HYPERTABLES})),
    Variant("this build but 28-day chunks", _with(**{name: {"chunk_interval": "28 days"} for name in HYPERTABLES})),
    Variant("this build but 91-day chunks", _with(**{name: {"chunk_interval": "91 days"} for name in HYPERTABLES})),
    Variant(
        "this build but json instead of jsonb",
        _with(),
        (
            "ALTER TABLE local_models ALTER COLUMN weights TYPE json, ALTER COLUMN normal_model TYPE json",
            "ALTER TABLE federated_models ALTER COLUMN weights TYPE json, ALTER COLUMN normal_model TYPE json",
            'ALTER TABLE anomalies ALTER COLUMN "values" TYPE json, ALTER COLUMN explanation TYPE json',
        ),
    ),
)


@dataclass(frozen=True)
class TableSize:
    rows: int
    chunks: int
    compressed_chunks: int
    bytes: int
    grown_chunks: int = 0
    """Compressed chunks that did not get smaller (TimescaleDB warns "poor compression ratio")."""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def table_sizes(conn: psycopg.Connection) -> dict[str, TableSize]:
    sizes = {}
    for name in HYPERTABLES:
        rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        chunks, compressed = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_compressed) FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = current_schema() AND hypertable_name = %s",
            (name,),
        ).fetchone()
        total = conn.execute("SELECT total_bytes FROM hypertable_detailed_size(%s::regclass)", (name,)).fetchone()[0]
        grown = conn.execute(
            "SELECT count(*) FROM chunk_compression_stats(%s::regclass) "
            "WHERE after_compression_total_bytes >= before_compression_total_bytes",
            (name,),
        ).fetchone()[0]
        sizes[name] = TableSize(rows, chunks, compressed, total or 0, grown)
    return sizes


def policy_jobs(conn: psycopg.Connection, proc: str) -> dict[str, int]:
    """``{table: job id}`` of this database's policies of one kind (``policy_compression``, …)."""
    return dict(
        conn.execute(
            "SELECT hypertable_name, job_id FROM timescaledb_information.jobs "
            "WHERE proc_name = %s AND hypertable_schema = current_schema()",
            (proc,),
        ).fetchall()
    )


def run_job(conn: psycopg.Connection, job: int, timeout: float = 60.0) -> None:
    """Run a policy's job now, in the foreground, as its schedule would.

    Its schedule is paused first, and a run the background scheduler has under way is waited
    for: the scheduler runs a new policy at once, and two runs at a time trip over each other
    (a chunk compressed by one fails the other)."""
    conn.execute("SELECT alter_job(%s, scheduled => false)", (job,))
    deadline = time.monotonic() + timeout
    while True:
        running = conn.execute(
            "SELECT job_status = 'Running' FROM timescaledb_information.job_stats WHERE job_id = %s", (job,)
        ).fetchone()
        if not (running and running[0]):
            try:
                conn.execute("CALL run_job(%s)", (job,))
                return
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DataException):
                if time.monotonic() > deadline:
                    raise
        elif time.monotonic() > deadline:
            raise TimeoutError(f"job {job} was still running after {timeout} s")
        time.sleep(0.2)


def run_compression_jobs(conn: psycopg.Connection) -> None:
    """Run every table's compression policy now."""
    for job in policy_jobs(conn, "policy_compression").values():
        run_job(conn, job)


def fresh_database(admin_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@contextmanager
def settings(variant: Variant) -> Iterator[None]:
    """``ensure_schema`` with a variant's table settings in place of this build's."""
    saved = dict(TABLES)
    database_schema.TABLES.update(variant.tables)
    try:
        yield
    finally:
        database_schema.TABLES.update(saved)


def replay_flead(input_path: Path, url: str, out_dir: Path) -> float:
    """FLEAD's own replay into ``url``; wall seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
    env.update(
        {
            "FLEAD_INPUT": str(input_path),
            "FLEAD_OUT_DIR": str(out_dir),
            "FLEAD_PROGRESS_SECONDS": "0",
            "FLEAD_REPORT_POINTS": "0",
            "FLEAD_DATABASE_URL": url,
            "FLEAD_DB_COMPRESS_AFTER": "",  # the policy comes after the measurement (compress_and_measure)
            "FLEAD_DB_RETAIN_FOR": "",
        }
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.flead"], cwd=REPO, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"FLEAD failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def read_rows(out_dir: Path) -> dict[str, list[dict]]:
    return {name: [orjson.loads(line) for line in (out_dir / f"{name}.jsonl").open("rb")] for name in HYPERTABLES}


def write_all(conn: psycopg.Connection, rows: dict[str, list[dict]]) -> None:
    for name, table_rows in rows.items():
        for start in range(0, len(table_rows), BATCH_ROWS):
            write_rows(conn, [(name, row) for row in table_rows[start : start + BATCH_ROWS]])


def event_days(conn: psycopg.Connection) -> dict[str, float]:
    """Each table's span of event time, in days."""
    return {
        name: conn.execute(
            f'SELECT extract(epoch FROM max("{table.time_column}") - min("{table.time_column}")) / 86400 FROM {name}'
        ).fetchone()[0]
        or 0.0
        for name, table in TABLES.items()
        if name in HYPERTABLES
    }


def compress_and_measure(conn: psycopg.Connection) -> tuple[dict[str, TableSize], dict[str, TableSize]]:
    """Sizes before; then the compression policies (``FLEAD_DB_COMPRESS_AFTER=7 days``) are added
    and run; sizes after. The policies come only now because the background scheduler runs a
    new policy at once: it would compress the chunks of old event time while they are written."""
    before = table_sizes(conn)
    already = {name: size.compressed_chunks for name, size in before.items() if size.compressed_chunks}
    if already:
        raise RuntimeError(f"chunks were compressed before the measurement: {already}")
    ensure_schema(conn, "7 days", None)
    run_compression_jobs(conn)
    return before, table_sizes(conn)


def measure_variant(admin_url: str, variant: Variant, rows: dict[str, list[dict]]) -> dict:
    url = fresh_database(admin_url)
    try:
        with settings(variant), connect(url) as conn:
            ensure_schema(conn, None, None)
            for statement in variant.alter:
                conn.execute(statement)
            write_all(conn, rows)
            before, after = compress_and_measure(conn)
        return {"settings": variant.name, "before": before, "after": after}
    finally:
        drop_database(admin_url, url)


def measure_workload(admin_url: str, name: str, input_path: Path, work: Path, levers: bool) -> list[dict]:
    out_dir = work / f"out-{name}"
    url = fresh_database(admin_url)
    try:
        progress(f"{name}: FLEAD replays {input_path} into TimescaleDB")
        seconds = replay_flead(input_path, url, out_dir)
        with connect(url) as conn:
            days = event_days(conn)
            before, after = compress_and_measure(conn)
            rows = read_rows(out_dir)
            started = time.perf_counter()
            write_all(conn, rows)  # a replay after recovery, into compressed chunks
            replay_seconds = time.perf_counter() - started
            replayed = table_sizes(conn)
        results = [
            {
                "settings": "this build (FLEAD's own replay)",
                "before": before,
                "after": after,
                "replay": {
                    "seconds": replay_seconds,
                    "inserted": {t: replayed[t].rows - after[t].rows for t in HYPERTABLES},
                    "bytes": {t: replayed[t].bytes for t in HYPERTABLES},
                },
                "event_days": days,
                "flead_seconds": seconds,
            }
        ]
    finally:
        drop_database(admin_url, url)
    for variant in (EARLIER, *(LEVERS if levers else ())):
        progress(f"{name}: {variant.name}")
        results.append(measure_variant(admin_url, variant, rows))
    return results


def markdown(workloads: dict[str, list[dict]]) -> str:
    lines = [
        "| workload | settings | table | rows | chunks | bytes before | bytes after | ratio | chunks not smaller |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workload, results in workloads.items():
        for result in results:
            for name in HYPERTABLES:
                before, after = result["before"][name], result["after"][name]
                ratio = before.bytes / after.bytes if after.bytes else float("nan")
                lines.append(
                    f"| {workload} | {result['settings']} | {name} | {before.rows:,} | {before.chunks} "
                    f"| {before.bytes:,} | {after.bytes:,} | {ratio:.2f} | {after.grown_chunks} |"
                )
    lines.append("")
    for workload, results in workloads.items():
        own = results[0]
        replay = own["replay"]
        inserted = sum(replay["inserted"].values())
        lines.append(
            f"{workload}: FLEAD's replay took {own['flead_seconds']:.0f} s; writing its rows again into the "
            f"compressed chunks took {replay['seconds']:.1f} s and inserted {inserted} rows; bytes after it: "
            + ", ".join(f"{name} {replay['bytes'][name]:,}" for name in HYPERTABLES)
            + "."
        )
        lines.append(
            f"{workload}: bytes before compression per day of event time: "
            + ", ".join(
                f"{name} {own['before'][name].bytes / own['event_days'][name]:,.0f}"
                for name in HYPERTABLES
                if own["event_days"][name]
            )
            + "."
        )
    return "\n".join(lines)


@contextmanager
def timescaledb_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from deploy.local.servers import PostgresServer
    from deploy.local.timescaledb import ensure_timescaledb

    ensure_timescaledb()
    with PostgresServer(preload="timescaledb") as server:
        yield server.url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2407)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--quick", action="store_true", help="300 devices, 37,500 records; no levers")
    parser.add_argument("--database-url", help="a TimescaleDB server's URL whose role may create databases")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.records = 300, 37_500
    with tempfile.TemporaryDirectory(prefix="flead-bench-") as work_dir, timescaledb_server(args.database_url) as url:
        work = Path(work_dir)
        fleet = work / "fleet.jsonl"
        stats = generate_fleet(fleet, devices=args.devices, rows=args.records)
        progress(f"fleet: {stats.devices:,} devices, {stats.records:,} records")
        workloads = {
            f"benchmark fleet ({stats.devices:,} devices)": measure_workload(
                url, "fleet", fleet, work, levers=not args.quick
            ),
            "bundled replay (data/nab)": measure_workload(url, "bundled", BUNDLED, work, levers=not args.quick),
        }
    print(markdown(workloads))


if __name__ == "__main__":
    main()
