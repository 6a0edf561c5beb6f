"""Which anomalies become alerts, how often, and the body that carries one to a webhook.

An anomaly row is *alert-worthy* when it is ``critical``, or, with a ``suspect_score``, a
``warning`` whose score is at or above it. An alert-worthy row is sent unless

- its device sent an alert less than ``cooldown_seconds`` before it, in **event time** (the
  readings' timestamps, so a replay sends the same alerts whatever the machine's speed), or
- the fleet is over its rate limit: a token bucket in **wall time** that holds
  ``max_per_minute`` tokens and refills at that rate (0 = no limit), since it protects the
  receiver, which lives in wall time.

A row that is not sent is *held back*, and counted into its device's next alert
(``held_back``). A row held back by the rate limit does not start a cooldown: the device's next
alert-worthy row may be sent as soon as there is a token.

>>> rules = AlertRules(cooldown_seconds=600, max_per_minute=0)
>>> gate = AlertGate(rules)
>>> row = {"device_id": "pump-7", "severity": "critical", "score": 0.91}
>>> times = ["2024-05-01T10:00:00Z", "2024-05-01T10:05:00Z", "2024-05-01T10:09:59Z", "2024-05-01T10:10:00Z"]
>>> gated = gate.offer([{**row, "timestamp": t} for t in times])
>>> [(alert.row["timestamp"], alert.held_back) for alert in gated.alerts]
[('2024-05-01T10:00:00Z', 0), ('2024-05-01T10:10:00Z', 2)]
>>> gated.held_back
{'cooldown': 2, 'rate_limit': 0}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from operators.messages import parse_timestamp

ALERT_FORMATS = ("json", "slack")
"""``json``: the alert's fields as one object; ``slack``: a Slack incoming-webhook ``text`` in mrkdwn."""

HELD_BACK_REASONS = ("cooldown", "rate_limit")

Row = dict[str, Any]


@dataclass(frozen=True)
class AlertRules:
    """What becomes an alert, and how often.

    Parameters
    ----------
    suspect_score
        ``None``: only ``critical`` anomalies are alerted. A score in (0, 1): ``warning``
        anomalies at or above it are alerted too.
    cooldown_seconds
        Event-time seconds after a device's alert during which its alert-worthy rows are held back.
    max_per_minute
        Fleet-wide alerts per minute of wall time, with bursts of as many (0 = no limit).
    """

    suspect_score: float | None = None
    cooldown_seconds: float = 900.0
    max_per_minute: float = 60.0

    def __post_init__(self) -> None:
        if self.suspect_score is not None and not 0 < self.suspect_score < 1:
            raise ValueError(f"suspect_score must be between 0 and 1 (exclusive), got {self.suspect_score!r}")
        if not 0 <= self.cooldown_seconds < float("inf"):
            raise ValueError(f"cooldown_seconds must be a finite number of at least 0, got {self.cooldown_seconds!r}")
        if not 0 <= self.max_per_minute < float("inf"):
            raise ValueError(f"max_per_minute must be a finite number of at least 0, got {self.max_per_minute!r}")

    def worthy(self, row: Row) -> bool:
        """Whether an anomaly row should be alerted (before cooldown and rate limit).

        >>> AlertRules().worthy({"severity": "warning", "score": 0.66})
        False
        >>> AlertRules(suspect_score=0.6).worthy({"severity": "warning", "score": 0.66})
        True
        """
        severity = row.get("severity")
        if severity == "critical":
            return True
        return severity == "warning" and self.suspect_score is not None and row.get("score", 0.0) >= self.suspect_score


class Alert(NamedTuple):
    row: Row
    """The anomaly row that is alerted."""
    held_back: int
    """The device's alert-worthy rows held back since its previous alert."""


class Gated(NamedTuple):
    alerts: list[Alert]
    held_back: dict[str, int]
    """Rows held back by this call, by reason (:data:`HELD_BACK_REASONS`)."""


class TokenBucket:
    """``per_minute`` tokens at most, refilled continuously at ``per_minute`` a minute.

    >>> now = [0.0]
    >>> bucket = TokenBucket(2, clock=lambda: now[0])
    >>> [bucket.take() for _ in range(3)]
    [True, True, False]
    >>> now[0] = 30.0  # half a minute: one token back
    >>> [bucket.take(), bucket.take()]
    [True, False]
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.time) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.tokens = per_minute
        self.clock = clock
        self.updated = clock()

    def take(self) -> bool:
        now = self.clock()
        elapsed = max(0.0, now - self.updated)  # a wall clock set back refills nothing
        self.updated = now
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AlertGate:
    """Per-device cooldown in event time and the fleet's rate limit (see the module's docstring).

    The state is each device's last alert time and its rows held back since; a device whose
    cooldown is over with nothing held back is forgotten when the table grows, so the state
    holds about the devices alerting lately, not the fleet.
    """

    def __init__(self, rules: AlertRules, clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self.bucket = TokenBucket(rules.max_per_minute, clock) if rules.max_per_minute else None
        self.devices: dict[str, list[float | int]] = {}  # device_id -> [last alert time or -inf, held back]
        self.newest = float("-inf")
        self._prune_at = 10_000

    def offer(self, rows: Iterable[Row]) -> Gated:
        """The alerts among anomaly rows, in their order; rows that are not alert-worthy are ignored."""
        rules, devices, bucket = self.rules, self.devices, self.bucket
        alerts: list[Alert] = []
        held = dict.fromkeys(HELD_BACK_REASONS, 0)
        for row in rows:
            if not rules.worthy(row):
                continue
            when = parse_timestamp(row["timestamp"])
            self.newest = max(self.newest, when)
            device = devices.get(row["device_id"])
            if device is None:
                device = devices[row["device_id"]] = [float("-inf"), 0]
            if when < device[0] + rules.cooldown_seconds:
                device[1] += 1
                held["cooldown"] += 1
            elif bucket is not None and not bucket.take():
                device[1] += 1
                held["rate_limit"] += 1
            else:
                alerts.append(Alert(row, int(device[1])))
                device[0], device[1] = when, 0
        if len(devices) > self._prune_at:
            self._prune()
        return Gated(alerts, held)

    def _prune(self) -> None:
        quiet_before = self.newest - self.rules.cooldown_seconds
        self.devices = {d: state for d, state in self.devices.items() if state[1] or state[0] > quiet_before}
        self._prune_at = max(10_000, 2 * len(self.devices))


def alert_body(alert: Alert, body_format: str = "json") -> dict[str, Any]:
    """What is posted for an alert: its fields (``json``) or a Slack incoming-webhook message (``slack``).

    >>> row = {"device_id": "pump<7>", "timestamp": "2024-05-01T10:00:00.000Z", "severity": "critical",
    ...        "score": 0.912345, "field": "temp", "values": {"temp": 97.5},
    ...        "explanation": [{"evidence": "level", "field": "temp", "value": 4.2, "log10_tail": -7.31}]}
    >>> alert_body(Alert(row, 3))["held_back"]
    3
    >>> print(alert_body(Alert(row, 3), "slack")["text"])
    :rotating_light: *critical* anomaly on `pump&lt;7&gt;` at 2024-05-01T10:00:00.000Z, score 0.912
    • level of temp: 4.2 (tail 10^-7.31)
    _3 more held back since the device's last alert_
    """
    row = alert.row
    if body_format == "json":
        return {
            "device_id": row["device_id"],
            "timestamp": row["timestamp"],
            "severity": row["severity"],
            "score": row["score"],
            "field": row.get("field"),
            "values": row.get("values"),
            "explanation": row.get("explanation", []),
            "held_back": alert.held_back,
        }
    if body_format != "slack":
        raise ValueError(f"body_format must be one of {', '.join(ALERT_FORMATS)}, got {body_format!r}")
    icon = ":rotating_light:" if row["severity"] == "critical" else ":warning:"
    lines = [
        f"{icon} *{row['severity']}* anomaly on `{_mrkdwn(row['device_id'])}` at {_mrkdwn(row['timestamp'])}, "
        f"score {row['score']:.3f}"
    ]
    for item in row.get("explanation", [])[:3]:
        lines.append(
            f"• {_mrkdwn(item['evidence'])} of {_mrkdwn(item['field'])}: {item['value']} (tail 10^{item['log10_tail']})"
        )
    if alert.held_back:
        lines.append(f"_{alert.held_back} more held back since the device's last alert_")
    return {"text": "\n".join(lines)}


def _mrkdwn(text: object) -> str:
    """Text as Slack shows it literally: its control characters ``&``, ``<`` and ``>`` escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")
