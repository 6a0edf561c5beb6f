"""The webhook sink against a real HTTP receiver on 127.0.0.1: one that answers, one that is
down, slow, failing or refusing; and a replay of ``nab_sample`` posting its alerts to it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from prometheus_client import REGISTRY

from dataflows.config import ConfigError, load_settings
from dataflows.flead import build_flow
from deploy.local.servers import free_port
from operators.alerts import Alert, AlertGate, AlertRules, alert_body
from sinks.webhook import WebhookSender, WebhookSink
from tests.dataflow.conftest import settings_for

SECRET = "T0SECRET/B0SECRET/xoxb-not-a-real-token"

Answer = Callable[[int], tuple[int, float]]
"""The receiver's answer to its n-th request (from 0): HTTP status and seconds to wait before it."""


class Receiver:
    """A real HTTP server in a thread that records every body posted to it."""

    def __init__(self, answer: Answer = lambda n: (200, 0.0)) -> None:
        self.answer = answer
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    n = len(receiver.bodies)
                    receiver.bodies.append(body)
                    receiver.paths.append(self.path)
                status, delay = receiver.answer(n)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{SECRET}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(answer: Answer = lambda n: (200, 0.0)) -> Receiver:
        started.append(Receiver(answer))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/services/{SECRET}"


def alert(device: str = "pump-7", minute: int = 0, held_back: int = 0) -> Alert:
    row = {
        "device_id": device,
        "timestamp": f"2024-05-01T10:{minute:02d}:00.000Z",
        "values": {"temp": 97.5},
        "field": "temp",
        "z_score": 4.1,
        "severity": "critical",
        "score": 0.93,
        "global_version": 2,
        "explanation": [{"evidence": "level", "field": "temp", "value": 4.2, "log10_tail": -7.31}],
    }
    return Alert(row, held_back)


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def alert_metrics() -> dict[str, float]:
    values = {"sent": metric("flead_alerts_sent_total"), "retries": metric("flead_alerts_retries_total")}
    for reason in ("queue_full", "rejected", "failed", "shutdown"):
        values[reason] = metric("flead_alerts_dropped_total", reason=reason)
    for reason in ("cooldown", "rate_limit"):
        values[f"held_back_{reason}"] = metric("flead_alerts_held_back_total", reason=reason)
    return values


def change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


@pytest.mark.parametrize("body_format", ["json", "slack"])
def test_the_receiver_gets_each_alert_body_once_in_order(receiver, body_format):
    server = receiver()
    before = alert_metrics()
    sender = WebhookSender(server.url, body_format)
    alerts = [alert("pump-7", 0), alert("pump-8", 1, held_back=4), alert("pump-7", 20, held_back=1)]
    sender.put(alerts)
    assert sender.close() == 0
    assert server.bodies == [alert_body(a, body_format) for a in alerts]
    assert server.paths == [f"/services/{SECRET}"] * 3
    assert (sender.sent, sender.retries, sum(sender.dropped.values())) == (3, 0, 0)
    assert change(before, alert_metrics()) == {"sent": 3}


def test_a_receiver_that_is_down_costs_retries_then_drops_counted_and_never_blocks(closed_port_url):
    before = alert_metrics()
    sender = WebhookSender(closed_port_url, attempts=3, backoff=(0.05, 0.1))
    started = time.perf_counter()
    sender.put([alert("a", 0), alert("b", 1)])
    assert time.perf_counter() - started < 0.05
    wait_until(lambda: sender.dropped["failed"] == 2)
    assert (sender.sent, sender.failures, sender.retries) == (0, 6, 4)
    assert sender.close() == 0
    assert change(before, alert_metrics()) == {"failed": 2, "retries": 4}


def test_a_slow_receiver_past_the_timeout_is_tried_again(receiver):
    server = receiver(lambda n: (200, 1.0 if n == 0 else 0.0))
    sender = WebhookSender(server.url, timeout=0.3, backoff=(0.05, 0.1))
    sender.put([alert()])
    wait_until(lambda: sender.sent == 1)
    assert (sender.failures, sender.retries, sum(sender.dropped.values())) == (1, 1, 0)
    # the first copy reached the receiver before it answered too late: delivery is at least once
    assert server.bodies == [alert_body(alert())] * 2
    sender.close()


def test_a_500_then_200_is_delivered_once(receiver):
    server = receiver(lambda n: (500 if n == 0 else 200, 0.0))
    before = alert_metrics()
    sender = WebhookSender(server.url, backoff=(0.05, 0.1))
    sender.put([alert()])
    wait_until(lambda: sender.sent == 1)
    sender.close()
    assert len(server.bodies) == 2  # the refused one and the accepted one
    assert change(before, alert_metrics()) == {"sent": 1, "retries": 1}


@pytest.mark.parametrize("status", [400, 404, 302])
def test_a_4xx_or_a_redirect_is_dropped_without_a_retry(receiver, status):
    server = receiver(lambda n: (status, 0.0))
    before = alert_metrics()
    sender = WebhookSender(server.url, backoff=(0.05, 0.1))
    sender.put([alert()])
    wait_until(lambda: sender.dropped["rejected"] == 1)
    sender.close()
    assert len(server.bodies) == 1
    assert change(before, alert_metrics()) == {"rejected": 1}


def test_a_full_queue_drops_the_oldest_and_counts_them(receiver):
    release = threading.Event()
    server = receiver(lambda n: (200, 0.0) if release.wait(5) else (500, 0.0))
    before = alert_metrics()
    sender = WebhookSender(server.url, queue_size=3)
    sender.put([alert("in-flight", 0)])
    wait_until(lambda: len(server.bodies) == 1)  # being posted, out of the queue
    sender.put([alert(f"d{i}", i) for i in range(1, 6)])  # 5 into a queue of 3: d1 and d2 go
    assert sender.dropped["queue_full"] == 2
    release.set()
    sender.close()
    assert [body["device_id"] for body in server.bodies] == ["in-flight", "d3", "d4", "d5"]
    assert change(before, alert_metrics()) == {"sent": 4, "queue_full": 2}


def test_shutdown_against_a_hanging_receiver_is_bounded_and_counts_what_is_left(receiver):
    server = receiver(lambda n: (200, 3.0))
    sender = WebhookSender(server.url, timeout=0.5, backoff=(10.0, 10.0))
    sender.put([alert(f"d{i}", i) for i in range(10)])
    wait_until(lambda: len(server.bodies) == 1)
    started = time.perf_counter()
    left = sender.close(drain_seconds=0.2)
    assert time.perf_counter() - started < 0.2 + 0.5 + 1.0 + 0.5
    assert left >= 8 and sender.sent == 0
    assert sender.dropped["shutdown"] + sender.dropped["failed"] == 10


def test_the_url_is_never_in_a_log_line(closed_port_url, caplog):
    caplog.set_level(logging.INFO, logger="flead.webhook")
    sink = WebhookSink(closed_port_url, attempts=2, backoff=(0.01, 0.01))
    sender = sink.sender()
    sender.put([alert()])
    wait_until(lambda: sender.dropped["failed"] == 1)
    sender.close()
    lines = [record.getMessage() for record in caplog.records]
    assert any("failed" in line for line in lines) and any("dropped" in line for line in lines)
    assert all(closed_port_url.split("/services/")[0] + "/***" in line for line in lines)
    assert not any("SECRET" in line or "services" in line for line in lines)


def test_a_dataflow_writing_to_a_receiver_that_is_down_is_not_held_up(closed_port_url):
    before = alert_metrics()
    flow = Dataflow("webhook_down")
    alerts = op.input("alerts", flow, TestingSource([alert(f"d{i}", i % 60) for i in range(200)], batch_size=10))
    op.output("webhook", alerts, WebhookSink(closed_port_url, attempts=50, backoff=(30.0, 30.0), drain_seconds=2.0))
    started = time.perf_counter()
    run_main(flow)
    assert time.perf_counter() - started < 3.0
    dropped = change(before, alert_metrics())
    assert dropped.get("sent", 0) == 0
    assert dropped["failed"] + dropped.get("shutdown", 0) + dropped.get("queue_full", 0) == 200


# A replay of nab_sample with alerts: the receiver gets exactly the alerts the cooldown rule
# picks from the anomalies the run wrote, and the metrics account for every critical anomaly.


def replay_with_alerts(nab_sample, out, url: str, **extra: str) -> dict:
    settings = settings_for(nab_sample, out, alert_webhook_url=url, **extra)
    run_main(build_flow(settings))
    return orjson.loads((out / "summary.json").read_bytes())


def anomalies_of(out) -> list[dict]:
    return [orjson.loads(line) for line in (out / "anomalies.jsonl").read_bytes().splitlines()]


def test_a_replay_posts_its_critical_anomalies_once_per_device_per_cooldown(nab_sample, tmp_path, receiver):
    server = receiver()
    before = alert_metrics()
    summary = replay_with_alerts(nab_sample, tmp_path, server.url, alert_max_per_minute="0")
    rules = AlertRules(cooldown_seconds=900, max_per_minute=0)
    expected = AlertGate(rules).offer(anomalies_of(tmp_path)).alerts
    critical = summary["anomalies"]["critical"]
    assert 10 < len(expected) < critical  # the cooldown held some back, and there are alerts to compare
    # in the order of each device's anomalies; devices may interleave
    by_device = sorted(server.bodies, key=lambda body: (body["device_id"], body["timestamp"]))
    assert by_device == sorted((alert_body(a) for a in expected), key=lambda b: (b["device_id"], b["timestamp"]))
    assert sum(body["held_back"] for body in server.bodies) <= critical - len(expected)
    assert change(before, alert_metrics()) == {
        "sent": len(expected),
        "held_back_cooldown": critical - len(expected),
    }


def test_a_replay_with_the_receiver_down_writes_the_same_anomalies_and_counts_the_drops(
    nab_sample, tmp_path, closed_port_url
):
    before = alert_metrics()
    summary = replay_with_alerts(nab_sample, tmp_path, closed_port_url, alert_max_per_minute="0")
    expected = AlertGate(AlertRules(max_per_minute=0)).offer(anomalies_of(tmp_path)).alerts
    assert summary["rows_processed"] == 4032 + 4032 + 1882
    moved = change(before, alert_metrics())
    assert moved.get("sent", 0) == 0
    dropped = moved["failed"] + moved.get("shutdown", 0) + moved.get("queue_full", 0)
    assert dropped == len(expected) > 10


def test_without_a_webhook_url_the_dataflow_has_no_alert_steps(nab_sample, tmp_path):
    def step_names(settings) -> set[str]:
        return {step.step_name for step in build_flow(settings).substeps}

    without = step_names(settings_for(nab_sample, tmp_path))
    with_url = step_names(settings_for(nab_sample, tmp_path, alert_webhook_url="https://hooks.example/x"))
    assert with_url - without == {"alert_worthy", "alert_key", "alert_gate", "alerts", "webhook"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FLEAD_ALERT_WEBHOOK_URL", f"ftp://hooks.example/{SECRET}", "FLEAD_ALERT_WEBHOOK_URL: must be an http://"),
        ("FLEAD_ALERT_WEBHOOK_URL", f"https:///{SECRET}", "FLEAD_ALERT_WEBHOOK_URL: must be an http://"),
        ("FLEAD_ALERT_FORMAT", "teams", "FLEAD_ALERT_FORMAT='teams': must be one of json, slack"),
        ("FLEAD_ALERT_SUSPECT_SCORE", "1", "FLEAD_ALERT_SUSPECT_SCORE='1': must be between 0 and 1"),
        ("FLEAD_ALERT_COOLDOWN_SECONDS", "-5", "FLEAD_ALERT_COOLDOWN_SECONDS='-5'"),
        ("FLEAD_ALERT_MAX_PER_MINUTE", "lots", "FLEAD_ALERT_MAX_PER_MINUTE='lots': is not a number"),
    ],
)
def test_a_bad_alert_setting_is_named_and_the_url_never_echoed(name, value, message):
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})
    assert message in str(raised.value)
    assert "SECRET" not in str(raised.value)


def test_alert_settings_reach_the_rules():
    settings = load_settings(
        {
            "FLEAD_ALERT_WEBHOOK_URL": "https://hooks.example/x",
            "FLEAD_ALERT_FORMAT": "slack",
            "FLEAD_ALERT_SUSPECT_SCORE": "0.6",
            "FLEAD_ALERT_COOLDOWN_SECONDS": "60",
            "FLEAD_ALERT_MAX_PER_MINUTE": "0",
        }
    )
    assert settings.alerts is not None and settings.alerts.body_format == "slack"
    assert settings.alerts.rules == AlertRules(suspect_score=0.6, cooldown_seconds=60, max_per_minute=0)
    assert "hooks.example" not in repr(settings)
    assert load_settings({}).alerts is None
