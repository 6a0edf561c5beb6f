"""The local servers in deploy/local/servers.py really serve Kafka and PostgreSQL."""

import uuid

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from deploy.local.servers import KafkaServer, PostgresServer

pytestmark = pytest.mark.integration


def test_kafka_round_trip_on_four_partitions(kafka: KafkaServer) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=4)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    sent = {(partition, f"msg-{partition}".encode()) for partition in range(4)}
    for partition, value in sent:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received = set()
    try:
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                received.add((msg.partition(), msg.value()))
            if received == sent:
                break
    finally:
        consumer.close()
    assert received == sent


def test_postgres_accepts_connection_and_ddl(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.url) as conn:
        conn.execute("CREATE TABLE smoke (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO smoke VALUES (1, 'hello')")
        assert conn.execute("SELECT note FROM smoke").fetchone() == ("hello",)
        user, db = conn.execute("SELECT current_user, current_database()").fetchone()
    assert (user, db) == ("flead", "flead")


def test_postgres_restart_keeps_data(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.url) as conn:
        conn.execute("CREATE TABLE survives (id int)")
        conn.execute("INSERT INTO survives VALUES (42)")
    old_pid = postgres.pid

    postgres.stop_server()
    assert postgres.pid is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url, connect_timeout=2)

    postgres.start_again()
    assert postgres.pid not in (None, old_pid)
    with psycopg.connect(postgres.url) as conn:
        assert conn.execute("SELECT id FROM survives").fetchall() == [(42,)]
