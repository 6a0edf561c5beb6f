"""The API as its users see it: ``python -m api`` in a subprocess, asked over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from deploy.local.servers import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
OTHER_TOKEN = "second-token-fedcba9876543210"


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any
    """The body parsed as JSON: a reply that is not JSON fails the request."""


def api_environment(database_url: str, port: int, tokens: str | None = f"{TOKEN},{OTHER_TOKEN}", **extra: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEAD_")}
    env.update({"FLEAD_DATABASE_URL": database_url, "FLEAD_API_BIND": f"127.0.0.1:{port}", **extra})
    if tokens is not None:
        env["FLEAD_API_TOKENS"] = tokens
    return env


def start_api(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_serving(proc: subprocess.Popen[str], base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/openapi.json", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the API did not answer at {base} within {timeout} s")


@dataclass
class Api:
    base: str
    proc: subprocess.Popen[str]

    def get(self, path: str, token: str | None = TOKEN, headers: dict[str, str] | None = None) -> Reply:
        """GET ``path`` (already percent-encoded) with ``token`` as the bearer token."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base + path, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, got, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, got, raw = error.code, error.headers, error.read()
        assert got["content-type"].startswith("application/json"), (path, status, got["content-type"], raw[:200])
        return Reply(status, got, json.loads(raw))

    def ok(self, path: str, **params: Any) -> Any:
        """The JSON of a 200 reply to ``path`` with ``params`` as its query."""
        query = {name: value for name, value in params.items() if value is not None}
        reply = self.get(f"{path}?{urlencode(query)}" if query else path)
        assert reply.status == 200, (path, params, reply.status, reply.body)
        return reply.body

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def launch(env: dict[str, str], port: int) -> Api:
    proc = start_api(env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Api(base, proc)


def device_path(device_id: str) -> str:
    """``/devices/<id>`` with every character of the id that is not unreserved percent-encoded (``/`` too)."""
    return "/devices/" + quote(device_id, safe="")


__all__ = ["TOKEN", "Api", "Reply", "api_environment", "device_path", "free_port", "launch", "start_api"]
