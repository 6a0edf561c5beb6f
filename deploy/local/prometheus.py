"""A real Prometheus for tests and demos: built once with Go into a cache, run like the servers
in ``deploy/local/servers.py``.

    python -m deploy.local.prometheus      # build if not cached; prints the folder

``prometheus`` and ``promtool`` come from ``go install github.com/prometheus/prometheus/cmd/…@VERSION``
with ``GOBIN`` set to the cache (``FLEAD_PROMETHEUS_CACHE``, default
``~/.cache/flead/prometheus-VERSION``), so later runs find them there and need no Go. The first
build downloads the modules and takes about 6 minutes on 2 cores. Without Go and without a
cached build, :class:`PrometheusUnavailable` says so (tests skip with its message).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy.local.servers import LocalServer, _tail, free_port

VERSION = "v0.316.0"  # the Go module version of Prometheus 3.16.0 (v0.3MM.P is v3.MM.P)
MODULE = "github.com/prometheus/prometheus"
BINARIES = ("prometheus", "promtool")
UNAVAILABLE_EXIT = 3  # ``python -m deploy.local.prometheus``: no build here, and none can be made


class PrometheusUnavailable(RuntimeError):
    """Prometheus cannot be had here (no cached build, no Go); the message says what would change it."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "flead" / f"prometheus-{VERSION}"
    return Path(os.environ.get("FLEAD_PROMETHEUS_CACHE") or default)


def _built(cache: Path) -> bool:
    return all(os.access(cache / name, os.X_OK) and (cache / name).is_file() for name in BINARIES)


def ensure_prometheus() -> Path:
    """The cache folder holding ``prometheus`` and ``promtool``, built into it when missing.

    The build goes to a temporary ``GOBIN`` next to the cache and its binaries are moved in
    when both exist, so an interrupted build leaves nothing half-written; a lock file keeps
    two callers (two test runs) from building at once.
    """
    cache = cache_dir()
    if _built(cache):
        return cache
    go = shutil.which("go")
    if go is None:
        raise PrometheusUnavailable(
            f"no Prometheus in {cache} and no Go to build it (install Go, https://go.dev/dl/, "
            f"or set FLEAD_PROMETHEUS_CACHE to a folder holding {' and '.join(BINARIES)})"
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    with (cache.parent / f"{cache.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build may be running: wait for it
        if _built(cache):
            return cache
        with tempfile.TemporaryDirectory(prefix=f"{cache.name}.build-", dir=cache.parent) as gobin:
            packages = [f"{MODULE}/cmd/{name}@{VERSION}" for name in BINARIES]
            print(f"prometheus: building {VERSION} with {go} (about 6 minutes the first time)", file=sys.stderr)
            started = time.monotonic()
            done = subprocess.run(
                [go, "install", *packages],
                env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"},
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 or not _built(Path(gobin)):
                raise RuntimeError(f"go install {' '.join(packages)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
            cache.mkdir(exist_ok=True)
            for name in BINARIES:
                os.replace(Path(gobin) / name, cache / name)
            print(f"prometheus: built in {time.monotonic() - started:.0f} s into {cache}", file=sys.stderr)
    return cache


class PrometheusServer(LocalServer):
    """Prometheus on 127.0.0.1 (a free port) scraping ``targets`` every ``interval``, with a
    temporary data folder and a generated config. Stopped by its PID.

    ``job`` and ``metrics_path`` name the scrape job as a deployment's config does;
    ``rule_files`` are loaded and evaluated every ``interval`` too.
    """

    def __init__(
        self,
        targets: Sequence[str],
        job: str = "flead",
        metrics_path: str = "/metrics",
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
        start_timeout: float = 60.0,
    ) -> None:
        self.targets = list(targets)
        self.job = job
        self.metrics_path = metrics_path
        self.rule_files = [Path(path).resolve() for path in rule_files]
        super().__init__(start_timeout)
        self.interval = interval
        self.port = 0
        self.url = ""

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": self.interval,
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    def _launch(self) -> None:
        """Write the config, launch Prometheus, wait until it says it is ready."""
        binaries = ensure_prometheus()
        self._tmp = Path(tempfile.mkdtemp(prefix="flead-prometheus-"))
        config = self._tmp / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self._tmp / "prometheus.log"
        command = [
            str(binaries / "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={self._tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        state = "exited" if self._proc.poll() is not None else f"not ready after {self.start_timeout} s"
        raise RuntimeError(f"Prometheus at {self.url} {state}:\n{_tail(self.log_path)}")

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: the ``data`` of a successful answer; an error raises, with Prometheus's text."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
            answer = json.load(exc)
        if answer.get("status") != "success":
            raise ValueError(f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``expression`` evaluates to now."""
        data = self.api("query", query=expression)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] == "matrix":
            raise ValueError(f"{expression} is a range vector: a panel or a rule needs an instant vector")
        return data["result"]


if __name__ == "__main__":
    try:
        folder = ensure_prometheus()
    except PrometheusUnavailable as exc:
        print(f"prometheus: {exc}; the tests that need it will skip", file=sys.stderr)
        sys.exit(UNAVAILABLE_EXIT)
    except RuntimeError as exc:
        sys.exit(f"prometheus: {exc}")
    print(f"prometheus: {folder / 'prometheus'} and {folder / 'promtool'} ({VERSION})")
