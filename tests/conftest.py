import pytest

pytest_plugins = ["tests.servers.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: needs real servers (Kafka via java+mvn, PostgreSQL)"
    )
