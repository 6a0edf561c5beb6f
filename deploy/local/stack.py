"""The whole stack on one machine, no Docker: Kafka, PostgreSQL, the producer, the dataflow and the API.

    .venv/bin/python -m deploy.local.stack

Starts Kafka and PostgreSQL exactly as the tests do (``deploy/local/servers.py``), makes the
schema as its owner (``python -m sinks.migrate --writer flead_writer --reader flead_api``, the
server's superuser being the owner here), then the producer (replaying ``FLEAD_INPUT``, the
bundled data by default, at ``FLEAD_RATE`` messages per second, looping), the dataflow reading
from Kafka and writing to the topics, the database (as ``flead_writer``, which may only insert
and select) and ``/metrics``, and the HTTP API (``python -m api`` as ``flead_api``, which may
only select, on a free port of 127.0.0.1 with the token of ``FLEAD_API_TOKENS`` or one made
and printed here). Prints where to look, and stops everything it started on Ctrl-C, on SIGTERM
(a process manager, ``timeout``, ``kill``) and on SIGHUP (the terminal closed): the dataflows
and the API first, then the servers they use. Other ``FLEAD_*`` settings in the environment
pass through to both dataflows and to the API.
"""

from __future__ import annotations

import os
import secrets
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
READER = "flead_api"


def _login_url(owner_url: str, role: str) -> str:
    """A login of its own (the dataflow's, the API's), made here; the migrate grants it what it may do."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    parts = urlsplit(owner_url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))


def _migrate(env: dict[str, str], log: Path) -> None:
    """The schema, made by its owner (``env``'s URL); exits with the migrate's own line if it fails."""
    command = [sys.executable, "-m", "sinks.migrate", "--writer", WRITER, "--reader", READER]
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=handle)
    if done.returncode != 0:
        sys.exit(log.read_text().strip().splitlines()[-1])


def _dataflow(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return _child([sys.executable, "-m", "bytewax.run", module], env, log)


def _child(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = log.open("w")
    # Its own session: a Ctrl-C in the terminal reaches only this script, which then stops
    # the children one by one, before the servers they use.
    return subprocess.Popen(
        command,
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
        metrics_port, api_port = free_port(), free_port()
        # The API's own settings go to the API only: the dataflows refuse FLEAD_* names they do not know.
        base = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_API_")}
        token = os.environ.get("FLEAD_API_TOKENS") or secrets.token_hex(16)
        base.update(FLEAD_KAFKA_BROKERS=kafka.bootstrap, FLEAD_OUT_DIR=str(work), FLEAD_PROGRESS_SECONDS="10")
        producer_env = {"FLEAD_RATE": "500", "FLEAD_LOOP": "true", **base}
        writer_url = _login_url(postgres.url, WRITER)
        reader_url = _login_url(postgres.url, READER)
        _migrate({**base, "FLEAD_DATABASE_URL": postgres.url}, work / "migrate.log")
        flead_env = {
            **base,
            "FLEAD_INPUT": "kafka",
            "FLEAD_DATABASE_URL": writer_url,
            "BYTEWAX_DATAFLOW_API_ENABLED": "1",
            "BYTEWAX_DATAFLOW_API_PORT": str(metrics_port),
        }
        api_env = {
            **base,
            "FLEAD_DATABASE_URL": reader_url,
            "FLEAD_API_BIND": f"127.0.0.1:{api_port}",
            "FLEAD_API_TOKENS": token,
        }
        api = f"http://127.0.0.1:{api_port}"
        shown_token = token.split(",")[0].strip()  # the first, should FLEAD_API_TOKENS hold several
        try:
            processes.append(_dataflow("dataflows.flead", flead_env, work / "flead.log"))
            time.sleep(3)  # the dataflow creates the topics; the producer then writes into them
            processes.append(_dataflow("dataflows.producer", producer_env, work / "producer.log"))
            processes.append(_child([sys.executable, "-m", "api"], api_env, work / "api.log"))
            print(
                f"""
FLEAD is running. Ctrl-C stops everything.

  Kafka        {kafka.bootstrap}   topics: edge-iiot-stream, anomalies, local-model-updates,
                                   global-model-updates, flead-dead-letters
  PostgreSQL   {postgres.url}   the schema's owner; the dataflow writes as {WRITER}
               psql "{postgres.url}" -c 'select count(*) from local_models'
  Metrics      http://127.0.0.1:{metrics_port}/metrics
  API          {api}   token {shown_token}   reads as {READER}
               curl -s -H "Authorization: Bearer {shown_token}" {api}/models/global/latest
  Logs         {work}/flead.log  {work}/producer.log  {work}/api.log  {work}/migrate.log
""",
                flush=True,
            )
            while all(process.poll() is None for process in processes):
                time.sleep(1)
            failed = next(p for p in processes if p.poll() is not None)
            print(f"a process stopped (exit code {failed.returncode}); see the logs in {work}", file=sys.stderr)
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
