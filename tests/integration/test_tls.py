"""FLEAD over TLS with passwords: a Kafka broker that takes only SASL_SSL (SCRAM-SHA-512) and a
PostgreSQL that takes only TLS and scram-sha-256 over TCP, both with certificates of a CA made
for this module (``deploy/local/tls.py``).

- The producer, the dataflow and an edge client reach the broker through ``FLEAD_KAFKA_CONFIG``,
  and the dataflow the database with ``sslmode=verify-full``; nothing is lost on the way.
- A wrong password, a CA that did not sign the server's certificate, or (PostgreSQL) a host
  name the certificate does not name, stops start-up at once with one line that names the
  broker or the database and the cause.
- No password, right or wrong, appears in anything these runs print, nor in the metrics the
  dataflow serves: every password is random and long, so a grep for it means something.
"""

from __future__ import annotations

import secrets
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from deploy.local.servers import KafkaServer, PostgresServer, free_port
from deploy.local.tls import make_ca, make_pkcs12_keystore, make_server_certificate
from sinks.database_schema import TABLES, connect
from tests.flead_runs import REPO, environment, flead_command
from tests.integration.test_kafka import topics_env

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Passwords:
    kafka: str
    postgres: str
    wrong: str

    def __iter__(self) -> Iterator[str]:
        return iter((self.kafka, self.postgres, self.wrong))


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    metrics: str = ""


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(*(f"{kind}-{secrets.token_hex(12)}" for kind in ("kafka", "postgres", "wrong")))


@pytest.fixture(scope="module")
def tls_kafka(passwords: Passwords) -> Iterator[KafkaServer]:
    with KafkaServer(tls_password=passwords.kafka) as server:
        yield server


@pytest.fixture(scope="module")
def tls_postgres(passwords: Passwords) -> Iterator[PostgresServer]:
    with PostgresServer(tls_password=passwords.postgres) as server:
        yield server


@pytest.fixture(scope="module")
def untrusted_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed neither server's certificate."""
    return make_ca(tmp_path_factory.mktemp("untrusted-ca"), "Untrusted CA").cert


def run(dataflow: str, env: dict[str, str], api_port: int | None = None) -> Run:
    """Run ``dataflow`` by its real command; with ``api_port``, scrape its ``/metrics`` all along."""
    started = time.monotonic()
    process = subprocess.Popen(
        flead_command(dataflow=dataflow), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    scrapes = []
    try:
        while api_port is not None and process.poll() is None and time.monotonic() - started < 300:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=2) as response:
                    scrapes.append(response.read().decode())
            except OSError:
                pass
            time.sleep(0.2)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return Run(process.returncode, stdout, stderr, time.monotonic() - started, "\n".join(scrapes))


def assert_no_secret(passwords: Passwords, *texts: str) -> None:
    for password in passwords:
        assert not any(password in text for text in texts), "a password was printed"


def the_one_error_line(result: Run) -> str:
    """The run failed, and besides the lines FLEAD's loggers wrote (``flead: flead.<name>: ...``)
    it printed one line: no traceback, no librdkafka log lines, no retries."""
    assert result.returncode != 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if not line.startswith("flead: flead.")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("flead: cannot start: "), lines[0]
    return lines[0]


def messages_on(kafka: KafkaServer, topic: str) -> int:
    consumer = Consumer({**kafka.admin_config(), "group.id": f"test-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        watermarks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions]
    finally:
        consumer.close()
    return sum(high - low for low, high in watermarks)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], check=False, capture_output=True, text=True)


def test_the_server_certificate_names_127_0_0_1_and_localhost_and_only_its_ca_vouches_for_it(tmp_path, untrusted_ca):
    ca = make_ca(tmp_path)
    server = make_server_certificate(ca, tmp_path)
    keystore = make_pkcs12_keystore(server, tmp_path / "server.p12", "s3cret-store")
    names = openssl("x509", "-in", str(server.cert), "-noout", "-ext", "subjectAltName").stdout
    assert names.split("\n")[1].strip() == "IP Address:127.0.0.1, DNS:localhost"
    assert openssl("verify", "-CAfile", str(ca.cert), str(server.cert)).returncode == 0
    assert openssl("verify", "-CAfile", str(untrusted_ca), str(server.cert)).returncode != 0
    assert openssl("pkcs12", "-in", str(keystore), "-noout", "-passin", "pass:s3cret-store").returncode == 0
    assert openssl("pkcs12", "-in", str(keystore), "-noout", "-passin", "pass:guess").returncode != 0
    assert oct(server.key.stat().st_mode & 0o777) == "0o600"


def test_the_servers_take_no_client_without_tls(tls_kafka, tls_postgres):
    """Otherwise the tests below would prove nothing about TLS."""
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": tls_kafka.bootstrap, "log_level": 0}).list_topics(timeout=2)
    plain = tls_postgres.url.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(plain, connect_timeout=5)


def test_producer_and_dataflow_run_over_sasl_ssl_into_postgresql_verify_full(
    tls_kafka, tls_postgres, passwords, nab_sample, tmp_path
):
    topics = topics_env(tls_kafka, FLEAD_KAFKA_CONFIG=tls_kafka.flead_kafka_config)
    produced = run("dataflows.producer", environment(nab_sample, tmp_path / "producer", **topics))
    assert produced.returncode == 0, produced.stderr[-3000:]
    assert "done: produced 9,946 messages" in produced.stdout  # 9,949 rows less the 3 invalid ones
    assert messages_on(tls_kafka, topics["FLEAD_TOPIC_TELEMETRY"]) == 9946

    port = free_port()
    out = tmp_path / "flead"
    env = environment(
        "kafka",
        out,
        FLEAD_KAFKA_TAIL="false",
        FLEAD_DATABASE_URL=tls_postgres.url,
        BYTEWAX_DATAFLOW_API_ENABLED="1",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
        **topics,
    )
    flead = run("dataflows.flead", env, api_port=port)
    assert flead.returncode == 0, flead.stderr[-3000:]
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert (summary["rows_read"], summary["rows_rejected"]) == (9946, 0)
    # A run from Kafka writes no JSON Lines files: its rows are on the topics and in the tables.
    on_topics = {
        "anomalies": messages_on(tls_kafka, topics["FLEAD_TOPIC_ANOMALIES"]),
        "local_models": messages_on(tls_kafka, topics["FLEAD_TOPIC_LOCAL_UPDATES"]),
        "federated_models": messages_on(tls_kafka, topics["FLEAD_TOPIC_GLOBAL_MODELS"]),
    }
    counted = {
        "anomalies": sum(summary["anomalies"].values()),
        "local_models": summary["local_updates"],
        "federated_models": summary["global_versions"],
    }
    assert on_topics == counted and min(counted.values()) > 0, summary
    with connect(tls_postgres.url) as conn:
        tables = {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}
    assert tables == {**counted, "dead_letters": 0, "model_evaluations": tables["model_evaluations"]}
    assert tables["model_evaluations"] > 0

    assert 'flead_events_total{outcome="read"} 9946.0' in flead.metrics, "no scrape saw the whole run"
    assert_no_secret(passwords, produced.stdout, produced.stderr, flead.stdout, flead.stderr, flead.metrics)


def test_an_edge_client_runs_over_sasl_ssl(tls_kafka, passwords, tmp_path):
    """The edge path: a device training on its own hardware publishes its updates and anomalies
    through FLEAD_KAFKA_CONFIG, like the dataflow and the producer."""
    series = REPO / "data" / "nab" / "artificialWithAnomaly" / "art_daily_jumpsup.csv"
    topics = topics_env(tls_kafka, FLEAD_KAFKA_CONFIG=tls_kafka.flead_kafka_config)
    edge = run("dataflows.edge", environment(series, tmp_path, FLEAD_ROUND_SECONDS="0", **topics))
    assert edge.returncode == 0, edge.stderr[-3000:]
    summary = orjson.loads((tmp_path / "edge-summary.json").read_bytes())
    assert summary["rows_processed"] == 4032 and summary["local_updates"] > 0 and summary["anomalies"] > 0
    assert messages_on(tls_kafka, topics["FLEAD_TOPIC_LOCAL_UPDATES"]) == summary["local_updates"]
    assert messages_on(tls_kafka, topics["FLEAD_TOPIC_ANOMALIES"]) == summary["anomalies"]
    assert_no_secret(passwords, edge.stdout, edge.stderr)


KAFKA_FAULTS = {
    # what is wrong: (FLEAD_KAFKA_CONFIG's setting, its wrong value, what the line must say)
    "wrong password": ("sasl.password", None, "authentication failed"),
    "untrusted CA": ("ssl.ca.location", "untrusted", "certificate verify failed"),
}


@pytest.mark.parametrize("dataflow", ["dataflows.flead", "dataflows.producer", "dataflows.edge"])
@pytest.mark.parametrize("fault", list(KAFKA_FAULTS))
def test_a_broker_that_refuses_the_client_stops_start_up_at_once_with_one_line(
    tls_kafka, passwords, untrusted_ca, nab_sample, tmp_path, dataflow, fault
):
    setting, value, cause = KAFKA_FAULTS[fault]
    config = {**tls_kafka.client_config, setting: {None: passwords.wrong, "untrusted": str(untrusted_ca)}[value]}
    topics = topics_env(
        tls_kafka,
        FLEAD_KAFKA_CONFIG=";".join(f"{key}={value}" for key, value in config.items()),
        FLEAD_KAFKA_CONNECT_SECONDS="60",  # a refusal must not wait for this
    )
    input_path = {
        "dataflows.flead": "kafka",
        "dataflows.producer": nab_sample,
        "dataflows.edge": REPO / "data" / "nab" / "artificialWithAnomaly" / "art_daily_jumpsup.csv",
    }[dataflow]
    result = run(dataflow, environment(input_path, tmp_path, **topics))
    line = the_one_error_line(result)
    assert tls_kafka.bootstrap in line and cause in line.lower(), line
    assert result.seconds < 30, f"{result.seconds:.1f} s"
    assert_no_secret(passwords, result.stdout, result.stderr)


POSTGRES_FAULTS = {
    "wrong password": "password authentication failed",
    "untrusted root certificate": "certificate verify failed",
    "wrong host name": 'does not match host name "wrong-name.invalid"',
}


@pytest.mark.parametrize("fault", list(POSTGRES_FAULTS))
def test_a_database_that_refuses_the_client_stops_start_up_with_one_line(
    tls_postgres, passwords, untrusted_ca, nab_sample, tmp_path, fault
):
    url = tls_postgres.url
    if fault == "wrong password":
        url = url.replace(passwords.postgres, passwords.wrong)
    elif fault == "untrusted root certificate":
        url = url.replace(str(tls_postgres.ca_cert), str(untrusted_ca))
    else:  # the right server, by a name its certificate does not carry
        url = url.replace("@127.0.0.1:", "@wrong-name.invalid:") + "&hostaddr=127.0.0.1"
    result = run("dataflows.flead", environment(nab_sample, tmp_path, FLEAD_DATABASE_URL=url))
    line = the_one_error_line(result)
    host = "wrong-name.invalid" if fault == "wrong host name" else "127.0.0.1"
    assert f"postgresql://flead:***@{host}:{tls_postgres.port}/flead" in line, line
    assert POSTGRES_FAULTS[fault] in line, line
    assert result.seconds < 30, f"{result.seconds:.1f} s"
    assert_no_secret(passwords, result.stdout, result.stderr)
