"""Alerts to an HTTP webhook, so that a receiver that is down, slow or failing never stalls the dataflow.

The sink owns its connection, queue and retries and nothing else (which anomalies become
alerts, and how often, is decided before it: ``operators/alerts.py``):

- ``write_batch`` only queues alerts: a background thread posts them, one JSON body per alert
  (``urllib.request``, a timeout on every request). The queue is bounded; when it is full the
  oldest alert is dropped, and counted;
- a 5xx answer, 408, 429, a timeout or a failed connection is tried again after a wait that
  doubles (``backoff``), ``attempts`` times in all; any other answer (4xx, a redirect, which
  would lose the body) drops the alert at once, counted as ``rejected``;
- on shutdown there are no more waits: each alert still queued gets one attempt, for up to
  ``drain_seconds`` in all; what is left then is dropped, counted as ``shutdown``;
- the URL often holds a secret token in its path or query: log lines show only its scheme and host.

Every alert put is sent (``flead_alerts_sent_total``), dropped (``flead_alerts_dropped_total{reason}``)
or still queued.
"""

from __future__ import annotations

import http.client
import logging
import threading
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Iterable

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from instrumentation.masking import masked_webhook_url
from instrumentation.metrics import ALERTS_DROPPED, ALERTS_RETRIES, ALERTS_SENT
from operators.alerts import ALERT_FORMATS, Alert, alert_body

log = logging.getLogger("flead.webhook")

_SENT, _RETRY, _REJECTED = "sent", "retry", "rejected"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class WebhookSender:
    """A bounded queue of alerts and the thread that posts them (see the module's docstring).

    Counters: ``sent``, ``dropped`` (by reason: ``queue_full``, ``rejected``, ``failed``,
    ``shutdown``), ``retries`` (attempts after the first) and ``failures`` (failed attempts).

    Parameters
    ----------
    url
        Where alerts are posted.
    body_format
        ``json`` or ``slack`` (:func:`operators.alerts.alert_body`).
    timeout
        Seconds for each request (connecting, and each read of the answer).
    queue_size
        Alerts waiting at most, beside the one being posted; beyond it the oldest are dropped.
    attempts
        Tries of one alert, the first included.
    backoff
        The first and the longest wait between two tries, in seconds; the wait doubles after each.
    """

    def __init__(
        self,
        url: str,
        body_format: str = "json",
        *,
        timeout: float = 5.0,
        queue_size: int = 1000,
        attempts: int = 5,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if body_format not in ALERT_FORMATS:
            raise ValueError(f"body_format must be one of {', '.join(ALERT_FORMATS)}, got {body_format!r}")
        if queue_size < 1 or attempts < 1 or timeout <= 0:
            raise ValueError(
                f"queue_size and attempts must be at least 1 and timeout above 0, got {queue_size=}, "
                f"{attempts=}, {timeout=}"
            )
        self._url = url
        self.masked_url = masked_webhook_url(url)
        self._format = body_format
        self._timeout = timeout
        self._max = queue_size
        self._attempts = attempts
        self._first_backoff, self._max_backoff = backoff
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._queue: deque[Alert] = deque()
        self._in_flight = 0
        self._condition = threading.Condition()
        self._closing = False
        self._give_up = False
        self.sent = 0
        self.dropped: Counter[str] = Counter()
        self.retries = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="flead-webhook", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Alerts waiting or being posted."""
        with self._condition:
            return len(self._queue) + self._in_flight

    def put(self, alerts: Iterable[Alert]) -> None:
        """Queue alerts; never waits for the receiver."""
        with self._condition:
            self._queue.extend(alerts)
            overflow = len(self._queue) - self._max
            for _ in range(overflow):
                self._queue.popleft()
            self._condition.notify()
        if overflow > 0:
            self._drop("queue_full", overflow)

    def _drop(self, reason: str, n: int = 1, detail: str = "") -> None:
        with self._condition:
            self.dropped[reason] += n
            total = self.dropped[reason]
        ALERTS_DROPPED.labels(reason).inc(n)
        if total == n or total // 100 > (total - n) // 100:  # the first, then one line per hundred
            because = f": {detail}" if detail else ""
            log.warning("%d alerts for %s dropped so far (%s)%s", total, self.masked_url, reason, because)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue or self._give_up:
                    return
                alert = self._queue.popleft()
                self._in_flight = 1
            try:
                self._deliver(alert)
            finally:
                with self._condition:
                    self._in_flight = 0

    def _deliver(self, alert: Alert) -> None:
        body = orjson.dumps(alert_body(alert, self._format))
        wait = self._first_backoff
        for attempt in range(1, self._attempts + 1):
            outcome, detail = self._post(body)
            if outcome == _SENT:
                with self._condition:
                    self.sent += 1
                ALERTS_SENT.inc()
                return
            if outcome == _REJECTED:
                self._drop("rejected", detail=f"the receiver answered {detail}")
                return
            with self._condition:
                self.failures += 1
                failures = self.failures
            if failures == 1 or failures % 100 == 0:
                log.warning("posting an alert to %s failed (%d so far): %s", self.masked_url, failures, detail)
            if self._give_up:
                self._drop("shutdown")
                return
            if attempt == self._attempts or self._closing:
                self._drop("failed", detail=f"{attempt} attempts, the last: {detail}")
                return
            with self._condition:
                self._condition.wait_for(lambda: self._closing, wait)  # shutdown cuts the wait short
                self.retries += 1
            ALERTS_RETRIES.inc()
            wait = min(wait * 2, self._max_backoff)

    def _post(self, body: bytes) -> tuple[str, str]:
        request = urllib.request.Request(
            self._url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": "flead-alerts"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read()
                return _SENT, f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            exc.close()
            retry = exc.code >= 500 or exc.code in (408, 429)
            return (_RETRY if retry else _REJECTED), f"HTTP {exc.code}"
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, a broken answer
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return _RETRY, (str(reason) or type(reason).__name__).replace(self._url, self.masked_url)

    def close(self, drain_seconds: float = 10.0) -> int:
        """Post what is queued (one attempt each) for up to ``drain_seconds``, then stop;
        returns (and logs) the alerts dropped as ``shutdown``."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(drain_seconds)
        with self._condition:
            self._give_up = True
            left = len(self._queue)
            self._queue.clear()
            self._condition.notify_all()
        if left:
            self._drop("shutdown", left)
        self._thread.join(self._timeout + 1.0)  # a request under way ends within its timeout
        shutdown = self.dropped["shutdown"]
        if shutdown:
            log.error("%d alerts were not posted to %s before shutdown (dropped)", shutdown, self.masked_url)
        return shutdown


class _WebhookPartition(StatelessSinkPartition[Alert]):
    def __init__(self, sink: WebhookSink) -> None:
        self._sink = sink
        self.sender: WebhookSender | None = None  # made at the first alert: one worker gets them all

    def write_batch(self, items: list[Alert]) -> None:
        if self.sender is None:
            self.sender = self._sink.sender()
        self.sender.put(items)

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close(self._sink.drain_seconds)


class WebhookSink(DynamicSink[Alert]):
    """Posts :class:`~operators.alerts.Alert` items to ``url``; the parameters are :class:`WebhookSender`'s,
    and ``drain_seconds`` bounds the shutdown."""

    def __init__(
        self,
        url: str,
        body_format: str = "json",
        *,
        timeout: float = 5.0,
        queue_size: int = 1000,
        attempts: int = 5,
        backoff: tuple[float, float] = (0.5, 30.0),
        drain_seconds: float = 10.0,
    ) -> None:
        self._url = url
        self._options = {
            "body_format": body_format,
            "timeout": timeout,
            "queue_size": queue_size,
            "attempts": attempts,
            "backoff": backoff,
        }
        self.drain_seconds = drain_seconds

    def sender(self) -> WebhookSender:
        sender = WebhookSender(self._url, **self._options)
        log.info("alerts go to %s (%s)", sender.masked_url, self._options["body_format"])
        return sender

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WebhookPartition:
        return _WebhookPartition(self)
