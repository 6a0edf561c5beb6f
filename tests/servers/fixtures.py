"""Session-wide real servers; loaded for every test module via ``tests/conftest.py``."""

from collections.abc import Iterator

import pytest

from deploy.local.servers import KafkaServer, PostgresServer
from deploy.local.timescaledb import TimescaleUnavailable, ensure_timescaledb


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    with KafkaServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Plain PostgreSQL: a server that does not preload TimescaleDB, whether or not it is installed."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def timescaledb() -> Iterator[PostgresServer]:
    """PostgreSQL with TimescaleDB preloaded, the extension built from its source if need be
    (``.ci/run`` builds it; skipped, saying why, where its source archive is absent)."""
    try:
        ensure_timescaledb()
    except TimescaleUnavailable as exc:
        pytest.skip(f"no TimescaleDB: {exc}")
    with PostgresServer(preload="timescaledb") as server:
        yield server
