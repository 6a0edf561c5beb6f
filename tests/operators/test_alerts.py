"""Which anomalies become alerts: the severity rule, the per-device cooldown in event time, the
fleet's rate limit in wall time, and the bodies, on hand-checked cases."""

from __future__ import annotations

import pickle

import pytest

from operators.alerts import Alert, AlertGate, AlertRules, TokenBucket, alert_body


def anomaly(device: str, minute: int, severity: str = "critical", score: float = 0.9) -> dict:
    """An anomaly row of ``device`` at 10:00 + ``minute`` minutes on 1 May 2024."""
    hours, minutes = divmod(minute, 60)
    return {
        "device_id": device,
        "timestamp": f"2024-05-01T{10 + hours:02d}:{minutes:02d}:00.000Z",
        "values": {"temp": 97.5},
        "field": "temp",
        "z_score": 4.1,
        "severity": severity,
        "score": score,
        "global_version": 3,
        "explanation": [{"evidence": "level", "field": "temp", "value": 4.2, "log10_tail": -7.31}],
    }


def sent(gate: AlertGate, rows: list[dict]) -> list[tuple[str, str, int]]:
    return [(a.row["device_id"], a.row["timestamp"][11:16], a.held_back) for a in gate.offer(rows).alerts]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_critical_anomalies_are_alerted_and_warnings_only_at_the_suspect_score():
    critical_only = AlertRules()
    assert critical_only.worthy(anomaly("a", 0, "critical", 0.69))
    assert not critical_only.worthy(anomaly("a", 0, "warning", 0.68))
    suspects = AlertRules(suspect_score=0.6)
    assert suspects.worthy(anomaly("a", 0, "warning", 0.6))  # at the score: alerted
    assert not suspects.worthy(anomaly("a", 0, "warning", 0.5999))
    assert suspects.worthy(anomaly("a", 0, "critical", 0.69))
    assert not suspects.worthy({**anomaly("a", 0), "severity": None})


def test_one_alert_per_device_per_cooldown_and_the_held_back_go_into_the_next():
    gate = AlertGate(AlertRules(cooldown_seconds=15 * 60, max_per_minute=0))
    # 10:00 sent; 10:05, 10:10, 10:14 within 15 minutes of it: held; 10:15 is 15 minutes after: sent with 3;
    # 10:20 within 15 of 10:15: held; 10:31 sent with 1
    minutes = [0, 5, 10, 14, 15, 20, 31]
    assert sent(gate, [anomaly("pump", m) for m in minutes]) == [
        ("pump", "10:00", 0),
        ("pump", "10:15", 3),
        ("pump", "10:31", 1),
    ]


def test_the_cooldown_is_per_device():
    gate = AlertGate(AlertRules(cooldown_seconds=600, max_per_minute=0))
    rows = [anomaly("a", 0), anomaly("b", 1), anomaly("a", 2), anomaly("b", 11), anomaly("a", 10)]
    assert sent(gate, rows) == [("a", "10:00", 0), ("b", "10:01", 0), ("b", "10:11", 0), ("a", "10:10", 1)]


def test_the_cooldown_counts_in_event_time_so_a_replay_gives_the_same_alerts_in_any_batches():
    rules = AlertRules(cooldown_seconds=600, max_per_minute=0)
    rows = [anomaly("a", m) for m in (0, 3, 9, 10, 12, 25, 26, 40)]
    at_once = sent(AlertGate(rules), rows)
    gate = AlertGate(rules)
    one_by_one = [alert for row in rows for alert in sent(gate, [row])]
    assert at_once == one_by_one == [("a", "10:00", 0), ("a", "10:10", 2), ("a", "10:25", 1), ("a", "10:40", 1)]


def test_a_row_earlier_than_the_last_alert_is_held_back():
    gate = AlertGate(AlertRules(cooldown_seconds=600, max_per_minute=0))
    assert sent(gate, [anomaly("a", 30), anomaly("a", 0), anomaly("a", 40)]) == [("a", "10:30", 0), ("a", "10:40", 1)]


def test_without_a_cooldown_every_critical_anomaly_is_an_alert():
    gate = AlertGate(AlertRules(cooldown_seconds=0, max_per_minute=0))
    rows = [anomaly("a", 0), anomaly("a", 0), anomaly("a", 1, "warning", 0.99)]
    assert sent(gate, rows) == [("a", "10:00", 0), ("a", "10:00", 0)]


def test_the_rate_limit_holds_back_over_the_fleet_and_starts_no_cooldown():
    clock = Clock()
    gate = AlertGate(AlertRules(cooldown_seconds=600, max_per_minute=3), clock)
    # five devices at once: a burst of 3 tokens
    gated = gate.offer([anomaly(device, 0) for device in "abcde"])
    assert [(a.row["device_id"], a.held_back) for a in gated.alerts] == [("a", 0), ("b", 0), ("c", 0)]
    assert gated.held_back == {"cooldown": 0, "rate_limit": 2}
    # 20 s of wall time later: 3 a minute refills one token; d was only rate-limited, so it may go at once,
    # carrying its held-back row; e finds no token yet
    clock.now += 20
    gated = gate.offer([anomaly("d", 1), anomaly("e", 1)])
    assert [(a.row["device_id"], a.held_back) for a in gated.alerts] == [("d", 1)]
    assert gated.held_back == {"cooldown": 0, "rate_limit": 1}
    # a, still in its cooldown, is held back by it and takes no token: e gets the next one
    clock.now += 20
    gated = gate.offer([anomaly("a", 2), anomaly("e", 2)])
    assert [(a.row["device_id"], a.held_back) for a in gated.alerts] == [("e", 2)]
    assert gated.held_back == {"cooldown": 1, "rate_limit": 0}


def test_the_token_bucket_refills_at_its_rate_up_to_its_size():
    clock = Clock()
    bucket = TokenBucket(60, clock)  # one a second, bursts of 60
    assert sum(bucket.take() for _ in range(100)) == 60
    clock.now += 2.5
    assert sum(bucket.take() for _ in range(10)) == 2
    clock.now += 3600
    assert sum(bucket.take() for _ in range(100)) == 60
    clock.now -= 100  # a wall clock set back gives nothing
    assert not bucket.take()


def test_the_gate_pickles_and_goes_on_where_it_was():
    rules = AlertRules(cooldown_seconds=600, max_per_minute=0)
    gate = AlertGate(rules)
    assert sent(gate, [anomaly("a", 0), anomaly("a", 5)]) == [("a", "10:00", 0)]
    resumed = pickle.loads(pickle.dumps(gate))
    assert sent(resumed, [anomaly("a", 9), anomaly("a", 10)]) == [("a", "10:10", 2)]


def test_quiet_devices_are_forgotten_but_not_those_holding_back_or_in_cooldown():
    gate = AlertGate(AlertRules(cooldown_seconds=600, max_per_minute=0))
    gate._prune_at = 2
    gate.offer([anomaly("old", 0), anomaly("holding", 1), anomaly("holding", 2)])
    gate.offer([anomaly("new", 20)])  # three devices > 2: old (quiet since 10:00) goes
    assert set(gate.devices) == {"holding", "new"}
    assert sent(gate, [anomaly("holding", 30)]) == [("holding", "10:30", 1)]


def test_the_json_body_carries_the_device_time_severity_score_explanation_and_held_back():
    row = anomaly("pump-7", 5, "critical", 0.912345)
    assert alert_body(Alert(row, 2)) == {
        "device_id": "pump-7",
        "timestamp": "2024-05-01T10:05:00.000Z",
        "severity": "critical",
        "score": 0.912345,
        "field": "temp",
        "values": {"temp": 97.5},
        "explanation": [{"evidence": "level", "field": "temp", "value": 4.2, "log10_tail": -7.31}],
        "held_back": 2,
    }


def test_the_slack_body_is_one_mrkdwn_text_with_the_device_escaped():
    row = anomaly("<!channel> & `x`", 5, "warning", 0.6512)
    body = alert_body(Alert(row, 0), "slack")
    assert body == {
        "text": ":warning: *warning* anomaly on `&lt;!channel&gt; &amp; 'x'` at 2024-05-01T10:05:00.000Z, "
        "score 0.651\n• level of temp: 4.2 (tail 10^-7.31)"
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suspect_score": 1.0}, "suspect_score must be between 0 and 1"),
        ({"cooldown_seconds": -1}, "cooldown_seconds must be a finite number"),
        ({"max_per_minute": float("inf")}, "max_per_minute must be a finite number"),
    ],
)
def test_wrong_rules_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlertRules(**kwargs)


def test_an_unknown_body_format_is_refused():
    with pytest.raises(ValueError, match="body_format must be one of json, slack"):
        alert_body(Alert(anomaly("a", 0), 0), "xml")
