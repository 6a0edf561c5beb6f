"""Session-wide real servers; loaded for every test module via ``tests/conftest.py``."""

from collections.abc import Iterator

import pytest

from deploy.local.servers import KafkaServer, PostgresServer


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    with KafkaServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
