"""The one-command local stack: it starts everything, says where to look, and stops it all on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from tests.flead_runs import REPO

pytestmark = pytest.mark.integration


def children_of(pid: int) -> set[int]:
    found = set()
    for line in subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.splitlines():
        child, parent = map(int, line.split())
        if parent == pid:
            found |= {child} | children_of(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_stack() -> tuple[subprocess.Popen[str], str]:
    """The stack, and what it printed until it said where to look."""
    stack = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.stack"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/bin:/bin", "FLEAD_RATE": "2000"},
        # A shell that starts the tests in the background ignores SIGINT, and children inherit
        # that; the stack must see Ctrl-C as a terminal would deliver it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    printed = ""
    for line in stack.stdout:
        printed += line
        if "Logs" in line:
            break
    return stack, printed


def stop_stack(stack: subprocess.Popen[str], stop_signal: signal.Signals) -> None:
    """Send ``stop_signal`` and wait for the stack to end (killing it and its children if it does not)."""
    stack.send_signal(stop_signal)
    try:
        stack.wait(timeout=120)
    except subprocess.TimeoutExpired:
        for pid in [stack.pid, *children_of(stack.pid)]:
            os.kill(pid, signal.SIGKILL)
        raise


def get_json(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def api_processes(pids: set[int]) -> list[int]:
    """Those of ``pids`` that run ``python -m api``."""
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if cmdline.read().split(b"\0")[1:3] == [b"-m", b"api"]:
                    found.append(pid)
        except FileNotFoundError:
            pass
    return found


def test_the_local_stack_runs_and_stops_everything_on_ctrl_c():
    stack, printed = start_stack()
    try:
        assert "FLEAD is running" in printed, printed
        url = re.search(r"PostgreSQL\s+(\S+)", printed)[1]
        metrics = re.search(r"Metrics\s+(\S+)", printed)[1]
        api, token = re.search(r"API\s+(http://127\.0\.0\.1:\d+)\s+token (\S+)", printed).groups()
        assert re.search(r"Kafka\s+127\.0\.0\.1:\d+", printed)
        started = children_of(stack.pid)
        assert len(api_processes(started)) == 1, started
        deadline = time.monotonic() + 90
        local_models = 0
        while time.monotonic() < deadline and not local_models:
            time.sleep(2)
            with psycopg.connect(url) as conn:
                local_models = conn.execute("SELECT count(*) FROM local_models").fetchone()[0]
        assert local_models > 0, printed
        with urllib.request.urlopen(metrics, timeout=5) as response:
            assert b'flead_events_total{outcome="processed"}' in response.read()
        # the API reads what the dataflow wrote, as its own login, with the token printed
        while True:  # started with the dataflow; serving within seconds
            try:
                status, health = get_json(f"{api}/health")
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "the API never answered"
                time.sleep(1)
        assert (status, health["status"], health["database"]) == (200, "ok", "reachable"), health
        assert get_json(f"{api}/models/global/latest")[0] == 401
        status, latest = get_json(f"{api}/models/global/latest", token)
        while status == 404 and time.monotonic() < deadline:  # no global version yet
            time.sleep(2)
            status, latest = get_json(f"{api}/models/global/latest", token)
        assert status == 200, latest
        assert latest["global_version"] >= 1 and latest["weights"]
        with psycopg.connect(url) as conn:
            sessions = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND application_name = 'flead-api'",
                ("flead_api",),
            ).fetchone()[0]
        assert sessions >= 1, "the API does not read as its own login"
    finally:
        stop_stack(stack, signal.SIGINT)
    time.sleep(1)
    assert not [pid for pid in started if alive(pid)], "the stack left processes behind"
    assert not listening(int(api.rsplit(":", 1)[1])), "the API still listens"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_the_local_stack_stops_everything_it_started_on_sigterm_and_sighup(stop_signal):
    stack, printed = start_stack()
    try:
        assert "FLEAD is running" in printed, printed
        started = children_of(stack.pid)
        assert len(started) >= 4, started  # Kafka, the dataflow, the producer, the API (PostgreSQL runs on its own)
        assert len(api_processes(started)) == 1, started
        ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", printed)}  # Kafka, PostgreSQL, metrics, API
    finally:
        stop_stack(stack, stop_signal)
    assert "stopping" in stack.stdout.read()
    time.sleep(1)
    assert not [pid for pid in started if alive(pid)], "the stack left processes behind"
    assert len(ports) == 4 and not [port for port in ports if listening(port)], "a server still listens"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
