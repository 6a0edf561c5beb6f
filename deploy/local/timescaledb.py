"""TimescaleDB for a local PostgreSQL server: built once from its source archive into a cache,
then installed into the server's tree from there.

    python -m deploy.local.timescaledb      # build if not cached, install if not installed

TimescaleDB is not packaged for Debian's PostgreSQL 15, so the tests and a local stack build
it from the release archive that ``FLEAD_TIMESCALEDB_SOURCE`` names (a
``timescaledb-<version>.tar.gz`` from TimescaleDB's releases; ``.ci/run`` sets it when it finds
one). The build needs
``cmake``, a C compiler and the server's headers (``postgresql-server-dev-<major>``) and takes
about 1.5 minutes on 2 cores; its files are kept in ``FLEAD_TIMESCALEDB_CACHE`` (default
``~/.cache/flead/timescaledb-<version>-pg<major>``) so that later runs only copy them.
Installing writes into the server's ``lib`` and ``share`` folders, which needs root or their
owner. The server must then start with ``shared_preload_libraries=timescaledb``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from deploy.local.servers import pg_bin_dir


class TimescaleUnavailable(RuntimeError):
    """TimescaleDB cannot be had here; the message says why and what would change it."""


def pg_config(bin_dir: Path, option: str) -> str:
    return subprocess.run(
        [str(bin_dir / "pg_config"), option], capture_output=True, text=True, check=True
    ).stdout.strip()


def source_archive() -> Path:
    named = os.environ.get("FLEAD_TIMESCALEDB_SOURCE")
    if not named:
        raise TimescaleUnavailable(
            "no TimescaleDB source archive: set FLEAD_TIMESCALEDB_SOURCE to a timescaledb-<version>.tar.gz"
        )
    source = Path(named)
    if not source.is_file():
        raise TimescaleUnavailable(f"no TimescaleDB source archive at {source} (FLEAD_TIMESCALEDB_SOURCE)")
    return source


def _version(source: Path) -> str:
    match = re.search(r"timescaledb-([\d.]+)\.tar\.gz$", source.name)
    if match is None:
        raise TimescaleUnavailable(f"{source.name} is not named timescaledb-<version>.tar.gz")
    return match.group(1)


def cache_dir(version: str, major: str) -> Path:
    default = Path.home() / ".cache" / "flead" / f"timescaledb-{version}-pg{major}"
    return Path(os.environ.get("FLEAD_TIMESCALEDB_CACHE") or default)


def is_installed(bin_dir: Path) -> bool:
    extension = Path(pg_config(bin_dir, "--sharedir")) / "extension" / "timescaledb.control"
    return extension.is_file() and (Path(pg_config(bin_dir, "--pkglibdir")) / "timescaledb.so").is_file()


def build(source: Path, bin_dir: Path, cache: Path) -> None:
    """Build the extension and install it under ``cache`` (its files at their absolute paths)."""
    for tool in ("cmake", "cc", "make"):
        if shutil.which(tool) is None:
            raise TimescaleUnavailable(f"building TimescaleDB needs {tool} (apt-get install -y cmake build-essential)")
    if not (Path(pg_config(bin_dir, "--includedir-server")) / "postgres.h").is_file():
        major = bin_dir.parent.name
        raise TimescaleUnavailable(f"building TimescaleDB needs the server headers (postgresql-server-dev-{major})")
    with tempfile.TemporaryDirectory(prefix="flead-timescaledb-") as work:
        with tarfile.open(source) as archive:
            archive.extractall(work, filter="data")
        (tree,) = Path(work).iterdir()
        options = [
            f"-DPG_CONFIG={bin_dir / 'pg_config'}",
            "-DREGRESS_CHECKS=OFF",
            "-DTAP_CHECKS=OFF",
            "-DWARNINGS_AS_ERRORS=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        _run(["./bootstrap", *options], tree)
        staged = cache.with_name(cache.name + ".partial")
        shutil.rmtree(staged, ignore_errors=True)
        _run(["make", "-C", "build", f"-j{os.cpu_count() or 2}", "install", f"DESTDIR={staged}"], tree)
        staged.replace(cache)


def install(cache: Path) -> None:
    """Copy the cached files to their places in the server's tree."""
    for path in cache.rglob("*"):
        if path.is_file():
            target = Path("/") / path.relative_to(cache)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def ensure_timescaledb(bin_dir: Path | None = None) -> None:
    """TimescaleDB installed for the server in ``bin_dir`` (the newest local one by default):
    built into the cache if it is not there, copied from it if not installed."""
    bin_dir = bin_dir or pg_bin_dir()
    if is_installed(bin_dir):
        return
    source = source_archive()
    cache = cache_dir(_version(source), bin_dir.parent.name)
    if not cache.is_dir():
        build(source, bin_dir, cache)
    try:
        install(cache)
    except PermissionError as exc:
        raise TimescaleUnavailable(f"installing TimescaleDB needs root: {exc}") from None


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TimescaleUnavailable(f"{' '.join(command)} failed:\n{(done.stdout + done.stderr)[-3000:]}")


if __name__ == "__main__":
    try:
        ensure_timescaledb()
    except TimescaleUnavailable as exc:
        sys.exit(f"timescaledb: {exc}")
    print(f"timescaledb: installed for {pg_bin_dir().parent}")
