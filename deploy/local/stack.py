"""The whole stack on one machine, no Docker: Kafka, PostgreSQL, the producer and the dataflow.

    .venv/bin/python -m deploy.local.stack

Starts Kafka and PostgreSQL exactly as the tests do (``deploy/local/servers.py``), makes the
schema as its owner (``python -m sinks.migrate --writer flead_writer``, the server's superuser
being the owner here), then the producer (replaying ``FLEAD_INPUT``, the bundled data by
default, at ``FLEAD_RATE`` messages per second, looping) and the dataflow reading from Kafka
and writing to the topics, the database (as ``flead_writer``, which may only insert and
select) and ``/metrics``. Prints where to look, and stops everything it started on
Ctrl-C, on SIGTERM (a process manager, ``timeout``, ``kill``) and on SIGHUP (the terminal
closed): the dataflows first, then the servers they write to. Other ``FLEAD_*`` settings in
the environment pass through to both dataflows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from deploy.local.servers import KafkaServer, PostgresServer, free_port

REPO = Path(__file__).resolve().parents[2]
WRITER = "flead_writer"


def _writer_url(owner_url: str) -> str:
    """The dataflow's login: a role that may only insert and select, made here, granted by the migrate."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(WRITER)))
    parts = urlsplit(owner_url)
    return urlunsplit(parts._replace(netloc=f"{WRITER}@{parts.hostname}:{parts.port}"))


def _migrate(env: dict[str, str], log: Path) -> None:
    """The schema, made by its owner (``env``'s URL); exits with the migrate's own line if it fails."""
    with log.open("w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "sinks.migrate", "--writer", WRITER], cwd=REPO, env=env, stdout=handle, stderr=handle
        )
    if done.returncode != 0:
        sys.exit(log.read_text().strip().splitlines()[-1])


def _dataflow(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = log.open("w")
    # Its own session: a Ctrl-C in the terminal reaches only this script, which then stops
    # the dataflows one by one, before the servers they write to.
    return subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", module],
        cwd=REPO,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(Exception):
    """A signal asked the stack to stop."""


def _stop(signum: int, frame: object) -> None:
    raise StopRequested(signal.Signals(signum).name)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    work = Path(tempfile.mkdtemp(prefix="flead-stack-"))
    processes: list[subprocess.Popen] = []
    with KafkaServer() as kafka, PostgresServer() as postgres:
        metrics_port = free_port()
        base = {k: v for k, v in os.environ.items()}
        base.update(FLEAD_KAFKA_BROKERS=kafka.bootstrap, FLEAD_OUT_DIR=str(work), FLEAD_PROGRESS_SECONDS="10")
        producer_env = {"FLEAD_RATE": "500", "FLEAD_LOOP": "true", **base}
        writer_url = _writer_url(postgres.url)
        _migrate({**base, "FLEAD_DATABASE_URL": postgres.url}, work / "migrate.log")
        flead_env = {
            **base,
            "FLEAD_INPUT": "kafka",
            "FLEAD_DATABASE_URL": writer_url,
            "BYTEWAX_DATAFLOW_API_ENABLED": "1",
            "BYTEWAX_DATAFLOW_API_PORT": str(metrics_port),
        }
        try:
            processes.append(_dataflow("dataflows.flead", flead_env, work / "flead.log"))
            time.sleep(3)  # the dataflow creates the topics; the producer then writes into them
            processes.append(_dataflow("dataflows.producer", producer_env, work / "producer.log"))
            print(
                f"""
FLEAD is running. Ctrl-C stops everything.

  Kafka        {kafka.bootstrap}   topics: edge-iiot-stream, anomalies, local-model-updates,
                                   global-model-updates, flead-dead-letters
  PostgreSQL   {postgres.url}   the schema's owner; the dataflow writes as {WRITER}
               psql "{postgres.url}" -c 'select count(*) from local_models'
  Metrics      http://127.0.0.1:{metrics_port}/metrics
  Logs         {work}/flead.log  {work}/producer.log  {work}/migrate.log
""",
                flush=True,
            )
            while all(process.poll() is None for process in processes):
                time.sleep(1)
            failed = next(p for p in processes if p.poll() is not None)
            print(f"a dataflow stopped (exit code {failed.returncode}); see the logs in {work}", file=sys.stderr)
        except (KeyboardInterrupt, StopRequested):
            print("\nstopping…", flush=True)
        finally:
            for stop_signal in STOP_SIGNALS:  # a second signal must not cut the clean-up short
                signal.signal(stop_signal, signal.SIG_IGN)
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, StopRequested):  # while the servers were starting: they stopped themselves
        sys.exit(1)
