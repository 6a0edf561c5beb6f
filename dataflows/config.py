"""Settings: every ``FLEAD_*`` environment variable, parsed and checked once at start-up."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dataflows.replay_files import replay_files
from instrumentation.masking import masked_pair
from operators.aggregation import AGGREGATION_RULES
from operators.alerts import ALERT_FORMATS, AlertRules
from operators.device import DETECTORS, DetectionSettings
from operators.fedavg import FederationRules
from operators.messages import MessageLimits
from operators.shard import DeviceLimits
from operators.update_validation import UpdateLimits

BUNDLED_DATA = Path(__file__).resolve().parent.parent / "data" / "nab"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number of at least 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number of at least 0")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise ValueError("must be greater than 0")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1 (exclusive)")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError("must be at least 0 and below 1")
    return value


def _aggregation(text: str) -> str:
    value = text.strip()
    if value not in AGGREGATION_RULES:
        raise ValueError(f"must be one of {', '.join(AGGREGATION_RULES)}")
    return value


def _trim_fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 0.5:
        raise ValueError("must be at least 0 and below 0.5")
    return value


def _detector(text: str) -> str:
    value = text.strip()
    if value not in DETECTORS:
        raise ValueError(f"must be one of {', '.join(DETECTORS)}")
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def _field_list(text: str) -> frozenset[str] | None:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    return names or None


def _optional_text(text: str) -> str:
    return text.strip()


def _kafka_config(text: str) -> dict[str, str]:
    """``key=value`` pairs separated by ``;`` or newlines (values may hold commas)."""
    config = {}
    for pair in text.replace("\n", ";").split(";"):
        if not pair.strip():
            continue
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"expected key=value pairs separated by ';', got {masked_pair(pair)!r}")
        config[key.strip()] = value.strip()
    return config


def _webhook_url(text: str) -> str:
    value = text.strip()
    if value:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _alert_format(text: str) -> str:
    value = text.strip()
    if value not in ALERT_FORMATS:
        raise ValueError(f"must be one of {', '.join(ALERT_FORMATS)}")
    return value


def _optional_probability(text: str) -> float | None:
    return _probability(text) if text.strip() else None


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    """Its value may hold credentials: errors name the variable but never echo the value."""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "FLEAD_INPUT",
        str(BUNDLED_DATA),
        _text,
        "What to read: a JSON Lines file, a CSV file, a directory of them (replay), or `kafka`.",
    ),
    Setting("FLEAD_OUT_DIR", "flead-out", _text, "Where the JSON Lines outputs, `summary.json` and `report.html` go."),
    Setting("FLEAD_WINDOW", "100", _positive_int, "Readings in each field's rolling window."),
    Setting(
        "FLEAD_SHORT_WINDOW",
        "10",
        _positive_int,
        "Readings in the short window that level-shift and spread features compare with the long one.",
    ),
    Setting("FLEAD_WARMUP", "10", _positive_int, "Readings a field needs before its z-score counts."),
    Setting(
        "FLEAD_Z_WARNING", "2.5", _positive_float, "With `FLEAD_DETECTOR=z_rule`: |z| at or above this is a `warning`."
    ),
    Setting(
        "FLEAD_Z_CRITICAL", "3.0", _positive_float, "With `FLEAD_DETECTOR=z_rule`: |z| at or above this is `critical`."
    ),
    Setting("FLEAD_ROUND_ROWS", "50", _positive_int, "A local round closes after this many readings..."),
    Setting(
        "FLEAD_ROUND_SECONDS", "60", _non_negative_float, "...or after this many seconds of event time (0 = rows only)."
    ),
    Setting(
        "FLEAD_FEDAVG_UPDATES",
        "20",
        _non_negative_int,
        "A new global model after this many local updates (0 = time only)...",
    ),
    Setting(
        "FLEAD_FEDAVG_SECONDS",
        "0",
        _non_negative_float,
        "...or after this many seconds of event time since the last one (0 = off).",
    ),
    Setting(
        "FLEAD_AGGREGATION",
        "fedavg",
        _aggregation,
        "How a version combines the devices' changes: `fedavg` (weighted by samples, staleness-weighted), "
        "`trimmed_mean` or `median` (coordinate-wise, each device once); the fleet's normal model likewise.",
    ),
    Setting(
        "FLEAD_TRIM_FRACTION",
        "0.1",
        _trim_fraction,
        "With `trimmed_mean`: the share of devices dropped at each end of every coordinate.",
    ),
    Setting(
        "FLEAD_WEIGHT_CAP",
        "3",
        _non_negative_float,
        "A device weighs at most this multiple of the median samples of a version's devices (0 = no cap).",
    ),
    Setting(
        "FLEAD_CLIP_NORM",
        "0",
        _non_negative_float,
        "A device's change in a version is scaled down to this L2 norm (0 = `FLEAD_CLIP_MULTIPLE` decides); "
        "differential privacy needs it.",
    ),
    Setting(
        "FLEAD_CLIP_MULTIPLE",
        "1",
        _non_negative_float,
        "Without `FLEAD_CLIP_NORM`: clip a change to this multiple of the median norm of the last 1,000 "
        "devices' changes (0 = no clipping; the label-trained logistic model pays for it, "
        "docs/detection-quality.md).",
    ),
    Setting(
        "FLEAD_DP_NOISE_MULTIPLIER",
        "0",
        _non_negative_float,
        "Differential privacy (DP-FedAvg): Gaussian noise of this × `FLEAD_CLIP_NORM` / devices on each "
        "version's mean change, the ε spent reported per version (0 = off).",
    ),
    Setting("FLEAD_DP_DELTA", "0.00001", _probability, "The δ at which the spent ε is reported."),
    Setting(
        "FLEAD_INITIAL_MODEL",
        "",
        _optional_text,
        "A global model file (exported with `python -m api.export_model` or `GET /models/global/{version}/download`) "
        "that a start without recovery state publishes as its first version and goes on from: a new site's warm "
        "start, or a rollback (empty = none).",
    ),
    Setting(
        "FLEAD_SHARDS",
        "2",
        _positive_int,
        "Shard keys of the device stage (crc32(device_id) % shards): at least the workers of all processes "
        "(a run with more warns at start), and kept for the life of a recovery store; each shard scores its "
        "devices' readings as arrays, and fewer, fuller shards do that faster.",
    ),
    Setting("FLEAD_LABEL_COLUMN", "label", _text, "The ground-truth column (CSV) or key (JSON); never a feature."),
    Setting(
        "FLEAD_FIELDS",
        "",
        _field_list,
        "Comma-separated telemetry fields; empty = every numeric field except the label.",
    ),
    Setting("FLEAD_SCORES", "false", _flag, "Also write `scores.jsonl`, one row per processed reading."),
    Setting(
        "FLEAD_DEVICE_IDLE_SECONDS",
        "2592000",
        _non_negative_float,
        "A device silent this long in event time (30 days) has its partial round closed and its state dropped; "
        "back later, it starts afresh (0 = never).",
    ),
    Setting(
        "FLEAD_MAX_DEVICES_PER_SHARD",
        "640000",
        _non_negative_int,
        "Live devices per shard (× `FLEAD_SHARDS` for the fleet); a new device beyond it is a dead letter "
        "(`device_limit`) until idle devices make room (0 = no limit).",
    ),
    Setting(
        "FLEAD_REPORT_POINTS",
        "100000",
        _non_negative_int,
        "A replay writes `report.html`, drawing up to this many readings over the fleet (at least 50 per "
        "device drawn, so at most this / 50 devices; 0 = no report).",
    ),
    Setting(
        "FLEAD_LEARNING_RATE",
        "0.05",
        _positive_float,
        "SGD learning rate of the logistic models (they learn from labels).",
    ),
    Setting(
        "FLEAD_POSITIVE_WEIGHT",
        "5",
        _positive_float,
        "Training weight of a reading labelled anomalous (anomalies are rare).",
    ),
    Setting(
        "FLEAD_DETECTOR",
        "calibrated",
        _detector,
        "What flags an anomaly: `calibrated` (the score at or above the threshold) or `z_rule` "
        "(|z| at or above `FLEAD_Z_WARNING`, the reference design's rule).",
    ),
    Setting(
        "FLEAD_SCORE_THRESHOLD",
        "0.5",
        _probability,
        "A calibrated score at or above this is an anomaly (score = 1 − Q^(1/10) for a tail probability Q: "
        "0.5 ≈ 1 reading in 1,000 of a device's ordinary readings).",
    ),
    Setting(
        "FLEAD_TARGET_FALSE_ALARM_RATE",
        "0",
        _rate,
        "When above 0, FedAvg sets the threshold from the fleet's scores so that about this share of readings "
        "is flagged (e.g. `0.001`); it travels with each global model.",
    ),
    Setting(
        "FLEAD_ALERT_GAP",
        "100",
        _non_negative_int,
        "A device's anomaly raises an alert only after this many readings without one (one alert per incident).",
    ),
    Setting(
        "FLEAD_NORMAL_PRIOR_READINGS",
        "300",
        _non_negative_float,
        "How many readings of history the fleet's normal model counts for in a device's calibration "
        "(0 = each device calibrates on its own readings alone).",
    ),
    Setting(
        "FLEAD_LABEL_DELAY",
        "0",
        _non_negative_int,
        "Readings between a reading and the arrival of its label (operator feedback is late); "
        "the logistic models learn only from labels.",
    ),
    Setting("FLEAD_MAX_MESSAGE_BYTES", "65536", _positive_int, "Larger messages are rejected."),
    Setting("FLEAD_MAX_FIELDS", "32", _positive_int, "Messages with more telemetry fields are rejected."),
    Setting(
        "FLEAD_MAX_FUTURE_SECONDS",
        "86400",
        _non_negative_float,
        "Messages stamped further than this ahead of the wall clock are rejected.",
    ),
    Setting(
        "FLEAD_BATCH_SIZE",
        "1000",
        _positive_int,
        "Records per replay batch. Larger batches replay faster but bring each global model to the devices "
        "later, which costs false alarms (docs/performance.md).",
    ),
    Setting(
        "FLEAD_KAFKA_BROKERS",
        "",
        _optional_text,
        "Kafka bootstrap servers (`host:port,...`); needed by `FLEAD_INPUT=kafka`; when set, results also go "
        "to the topics below.",
    ),
    Setting(
        "FLEAD_KAFKA_CONFIG",
        "",
        _kafka_config,
        "Extra librdkafka settings for every client, `key=value` pairs separated by `;` (TLS, SASL); "
        "secret values are never logged.",
        secret=True,
    ),
    Setting(
        "FLEAD_KAFKA_TAIL",
        "true",
        _flag,
        "Keep following the input topics; `false` stops at their end (back-fills, tests).",
    ),
    Setting(
        "FLEAD_KAFKA_IDLE_SECONDS",
        "10",
        _positive_float,
        "With `FLEAD_KAFKA_TAIL=false`: the global-model input stops after this long with nothing new.",
    ),
    Setting(
        "FLEAD_KAFKA_CONNECT_SECONDS",
        "5",
        _positive_float,
        "Start-up fails when the brokers do not answer within this time.",
    ),
    Setting("FLEAD_TOPIC_TELEMETRY", "edge-iiot-stream", _text, "Telemetry in."),
    Setting("FLEAD_TOPIC_ANOMALIES", "anomalies", _text, "Anomalies out, keyed by device id."),
    Setting("FLEAD_TOPIC_LOCAL_UPDATES", "local-model-updates", _text, "Local updates out, keyed by device id."),
    Setting(
        "FLEAD_TOPIC_GLOBAL_MODELS",
        "global-model-updates",
        _text,
        "Global models out, keyed by version, and back in to every shard.",
    ),
    Setting("FLEAD_TOPIC_DEAD_LETTERS", "flead-dead-letters", _text, "Rejected input, with reason and source."),
    Setting(
        "FLEAD_EDGE_UPDATES",
        "false",
        _flag,
        "With `FLEAD_INPUT=kafka`: also federate the local updates of edge clients (`python -m dataflows.edge`), "
        "read from `FLEAD_TOPIC_LOCAL_UPDATES` and checked first (a bad one is a dead letter); the dataflow's "
        "own updates on that topic carry no edge mark and are left out.",
    ),
    Setting(
        "FLEAD_EDGE_MAX_UPDATE_NORM",
        "20",
        _positive_float,
        "An edge update whose change (weights and intercept minus those its round started from) has a larger "
        "L2 norm is a dead letter (`update_norm`); honest rounds on the bundled data stay below 8.3.",
    ),
    Setting(
        "FLEAD_DATABASE_URL",
        "",
        _optional_text,
        "PostgreSQL/TimescaleDB URL (`postgresql://user:pass@host:5432/db`); empty = no database.",
        secret=True,
    ),
    Setting(
        "FLEAD_DB_BUFFER_ROWS",
        "100000",
        _positive_int,
        "Rows a process holds in memory while the database is away; beyond it the oldest are dropped (and counted).",
    ),
    Setting(
        "FLEAD_DB_COMPRESS_AFTER",
        "7 days",
        _optional_text,
        "TimescaleDB compression policy: a chunk is compressed once its rows' event times are all further back "
        "than this from now (empty = none).",
    ),
    Setting(
        "FLEAD_DB_RETAIN_FOR",
        "",
        _optional_text,
        "TimescaleDB retention policy: a chunk is dropped once its rows' event times are all further back than "
        "this from now (empty = keep everything); a run that writes rows already that old warns once, at the first.",
    ),
    Setting(
        "FLEAD_ALERT_WEBHOOK_URL",
        "",
        _webhook_url,
        "Post alerts to this http(s) URL (empty = no alerts); it is never logged beyond its host.",
        secret=True,
    ),
    Setting(
        "FLEAD_ALERT_FORMAT",
        "json",
        _alert_format,
        "The alert's body: `json` (device_id, timestamp, severity, score, field, values, explanation, held_back) "
        "or `slack` (an incoming-webhook `text`).",
    ),
    Setting(
        "FLEAD_ALERT_SUSPECT_SCORE",
        "",
        _optional_probability,
        "Critical anomalies are alerted; with a score here, `warning` anomalies at or above it too (empty = none).",
    ),
    Setting(
        "FLEAD_ALERT_COOLDOWN_SECONDS",
        "900",
        _non_negative_float,
        "At most one alert per device in this many seconds of event time; the ones held back are counted "
        "into its next alert.",
    ),
    Setting(
        "FLEAD_ALERT_MAX_PER_MINUTE",
        "60",
        _non_negative_int,
        "Alerts per minute of wall time over the fleet, in bursts of up to as many (0 = no limit); the ones "
        "held back are counted into their device's next alert.",
    ),
    Setting("FLEAD_ALERT_TIMEOUT_SECONDS", "5", _positive_float, "Timeout of each webhook request."),
    Setting(
        "FLEAD_ALERT_QUEUE_SIZE",
        "1000",
        _positive_int,
        "Alerts waiting for the webhook; beyond it the oldest are dropped (and counted).",
    ),
    Setting("FLEAD_RATE", "0", _non_negative_float, "Producer: messages per second (0 = as fast as possible)."),
    Setting("FLEAD_LOOP", "false", _flag, "Producer: start again at the end of the input, shifted in time."),
    Setting("FLEAD_PROGRESS_SECONDS", "5", _non_negative_float, "Seconds between progress lines (0 = none)."),
)


@dataclass(frozen=True)
class KafkaSettings:
    brokers: tuple[str, ...]
    config: dict[str, str] = field(repr=False)
    tail: bool
    idle_seconds: float
    connect_seconds: float
    telemetry_topic: str
    anomalies_topic: str
    local_updates_topic: str
    global_models_topic: str
    dead_letters_topic: str

    def client_config(self) -> dict[str, str]:
        """librdkafka settings every FLEAD client starts from: the brokers plus FLEAD_KAFKA_CONFIG."""
        return {"bootstrap.servers": ",".join(self.brokers), **self.config}


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(repr=False)
    buffer_rows: int
    compress_after: str | None
    retain_for: str | None


@dataclass(frozen=True)
class AlertSettings:
    webhook_url: str = field(repr=False)
    body_format: str
    rules: AlertRules
    timeout_seconds: float
    queue_size: int


@dataclass(frozen=True)
class Settings:
    input: str
    out_dir: Path
    detection: DetectionSettings
    limits: MessageLimits
    fedavg_updates: int
    fedavg_seconds: float
    initial_model: Path | None
    """``FLEAD_INITIAL_MODEL``: read and checked at start-up (``dataflows/initial_model.py``)."""
    shards: int
    scores: bool
    report_points: int
    device_limits: DeviceLimits
    batch_size: int
    progress_seconds: float
    kafka: KafkaSettings | None
    database: DatabaseSettings | None
    rate: float
    loop: bool
    alerts: AlertSettings | None = None
    """Alerts to a webhook, when ``FLEAD_ALERT_WEBHOOK_URL`` is set."""
    edge_updates: bool = False
    """``FLEAD_EDGE_UPDATES``: edge clients' local updates join the federation (Kafka input only)."""
    update_limits: UpdateLimits = field(default_factory=UpdateLimits)
    """What an edge client's update may look like."""
    federation: FederationRules = field(default_factory=FederationRules)
    """How FedAvg combines the devices' changes: rule, one device's bounds, differential privacy."""

    @property
    def reads_kafka(self) -> bool:
        return self.input == "kafka"

    @property
    def input_path(self) -> Path:
        return Path(self.input)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every ``FLEAD_*`` variable; a wrong one raises :class:`ConfigError` naming it."""
    environ = os.environ if environ is None else environ
    known = {setting.name for setting in SETTINGS}
    # FLEAD_API_* are the HTTP API's (api/settings.py), which may share an environment with the dataflow
    unknown = sorted(
        name
        for name in environ
        if name.startswith("FLEAD_") and not name.startswith("FLEAD_API_") and name not in known
    )
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (known: see docs/operations.md)")
    raw: dict[str, Any] = {}
    for setting in SETTINGS:
        text = environ.get(setting.name, setting.default)
        try:
            raw[setting.name] = setting.parse(text)
        except ValueError as exc:
            reason = str(exc)
            if reason.startswith(("invalid literal", "could not convert")):
                reason = "is not a number"
            shown = setting.name if setting.secret else f"{setting.name}={text!r}"
            raise ConfigError(f"{shown}: {reason}") from None
    if raw["FLEAD_Z_CRITICAL"] < raw["FLEAD_Z_WARNING"]:
        raise ConfigError(
            f"FLEAD_Z_CRITICAL={raw['FLEAD_Z_CRITICAL']} must not be below FLEAD_Z_WARNING={raw['FLEAD_Z_WARNING']}"
        )
    if raw["FLEAD_SHORT_WINDOW"] > raw["FLEAD_WINDOW"]:
        raise ConfigError(f"FLEAD_SHORT_WINDOW={raw['FLEAD_SHORT_WINDOW']} must not exceed FLEAD_WINDOW")
    if raw["FLEAD_FEDAVG_UPDATES"] == 0 and raw["FLEAD_FEDAVG_SECONDS"] == 0:
        raise ConfigError("FLEAD_FEDAVG_UPDATES and FLEAD_FEDAVG_SECONDS are both 0: no global model would be made")
    if raw["FLEAD_DP_NOISE_MULTIPLIER"] > 0 and raw["FLEAD_CLIP_NORM"] == 0:
        raise ConfigError("FLEAD_DP_NOISE_MULTIPLIER needs a fixed FLEAD_CLIP_NORM (the noise is scaled to it)")
    if raw["FLEAD_DP_NOISE_MULTIPLIER"] > 0 and raw["FLEAD_AGGREGATION"] != "fedavg":
        raise ConfigError("FLEAD_DP_NOISE_MULTIPLIER is DP-FedAvg: it needs FLEAD_AGGREGATION=fedavg")
    if raw["FLEAD_WINDOW"] < 2:
        raise ConfigError("FLEAD_WINDOW must be at least 2")
    source = raw["FLEAD_INPUT"]
    if source == "kafka" and not raw["FLEAD_KAFKA_BROKERS"]:
        raise ConfigError("FLEAD_INPUT=kafka needs FLEAD_KAFKA_BROKERS (host:port,...)")
    if raw["FLEAD_DATABASE_URL"] and not raw["FLEAD_DATABASE_URL"].startswith(("postgresql://", "postgres://")):
        raise ConfigError("FLEAD_DATABASE_URL must start with postgresql:// (or postgres://)")
    if source != "kafka":
        if not Path(source).exists():
            raise ConfigError(f"FLEAD_INPUT={source!r}: no such file or directory")
        try:
            replay_files(Path(source))
        except FileNotFoundError as exc:
            raise ConfigError(f"FLEAD_INPUT={source!r}: {exc}") from None
    return Settings(
        input=source,
        out_dir=Path(raw["FLEAD_OUT_DIR"]),
        detection=DetectionSettings(
            window=raw["FLEAD_WINDOW"],
            short_window=raw["FLEAD_SHORT_WINDOW"],
            warmup=raw["FLEAD_WARMUP"],
            z_warning=raw["FLEAD_Z_WARNING"],
            z_critical=raw["FLEAD_Z_CRITICAL"],
            round_rows=raw["FLEAD_ROUND_ROWS"],
            round_seconds=raw["FLEAD_ROUND_SECONDS"],
            learning_rate=raw["FLEAD_LEARNING_RATE"],
            positive_weight=raw["FLEAD_POSITIVE_WEIGHT"],
            detector=raw["FLEAD_DETECTOR"],
            score_threshold=raw["FLEAD_SCORE_THRESHOLD"],
            target_false_alarm_rate=raw["FLEAD_TARGET_FALSE_ALARM_RATE"],
            alert_gap=raw["FLEAD_ALERT_GAP"],
            prior_weight=raw["FLEAD_NORMAL_PRIOR_READINGS"],
            label_delay=raw["FLEAD_LABEL_DELAY"],
        ),
        limits=MessageLimits(
            max_bytes=raw["FLEAD_MAX_MESSAGE_BYTES"],
            max_fields=raw["FLEAD_MAX_FIELDS"],
            max_future_seconds=raw["FLEAD_MAX_FUTURE_SECONDS"],
            label_key=raw["FLEAD_LABEL_COLUMN"],
            fields=raw["FLEAD_FIELDS"],
        ),
        fedavg_updates=raw["FLEAD_FEDAVG_UPDATES"],
        fedavg_seconds=raw["FLEAD_FEDAVG_SECONDS"],
        initial_model=Path(raw["FLEAD_INITIAL_MODEL"]) if raw["FLEAD_INITIAL_MODEL"] else None,
        shards=raw["FLEAD_SHARDS"],
        scores=raw["FLEAD_SCORES"],
        report_points=raw["FLEAD_REPORT_POINTS"],
        device_limits=DeviceLimits(raw["FLEAD_DEVICE_IDLE_SECONDS"], raw["FLEAD_MAX_DEVICES_PER_SHARD"]),
        batch_size=raw["FLEAD_BATCH_SIZE"],
        progress_seconds=raw["FLEAD_PROGRESS_SECONDS"],
        kafka=KafkaSettings(
            brokers=tuple(b.strip() for b in raw["FLEAD_KAFKA_BROKERS"].split(",") if b.strip()),
            config=raw["FLEAD_KAFKA_CONFIG"],
            tail=raw["FLEAD_KAFKA_TAIL"],
            idle_seconds=raw["FLEAD_KAFKA_IDLE_SECONDS"],
            connect_seconds=raw["FLEAD_KAFKA_CONNECT_SECONDS"],
            telemetry_topic=raw["FLEAD_TOPIC_TELEMETRY"],
            anomalies_topic=raw["FLEAD_TOPIC_ANOMALIES"],
            local_updates_topic=raw["FLEAD_TOPIC_LOCAL_UPDATES"],
            global_models_topic=raw["FLEAD_TOPIC_GLOBAL_MODELS"],
            dead_letters_topic=raw["FLEAD_TOPIC_DEAD_LETTERS"],
        )
        if raw["FLEAD_KAFKA_BROKERS"]
        else None,
        database=DatabaseSettings(
            url=raw["FLEAD_DATABASE_URL"],
            buffer_rows=raw["FLEAD_DB_BUFFER_ROWS"],
            compress_after=raw["FLEAD_DB_COMPRESS_AFTER"] or None,
            retain_for=raw["FLEAD_DB_RETAIN_FOR"] or None,
        )
        if raw["FLEAD_DATABASE_URL"]
        else None,
        rate=raw["FLEAD_RATE"],
        loop=raw["FLEAD_LOOP"],
        alerts=AlertSettings(
            webhook_url=raw["FLEAD_ALERT_WEBHOOK_URL"],
            body_format=raw["FLEAD_ALERT_FORMAT"],
            rules=AlertRules(
                suspect_score=raw["FLEAD_ALERT_SUSPECT_SCORE"],
                cooldown_seconds=raw["FLEAD_ALERT_COOLDOWN_SECONDS"],
                max_per_minute=raw["FLEAD_ALERT_MAX_PER_MINUTE"],
            ),
            timeout_seconds=raw["FLEAD_ALERT_TIMEOUT_SECONDS"],
            queue_size=raw["FLEAD_ALERT_QUEUE_SIZE"],
        )
        if raw["FLEAD_ALERT_WEBHOOK_URL"]
        else None,
        edge_updates=raw["FLEAD_EDGE_UPDATES"],
        update_limits=UpdateLimits(
            max_norm=raw["FLEAD_EDGE_MAX_UPDATE_NORM"],
            max_bytes=raw["FLEAD_MAX_MESSAGE_BYTES"],
        ),
        federation=FederationRules(
            rule=raw["FLEAD_AGGREGATION"],
            trim_fraction=raw["FLEAD_TRIM_FRACTION"],
            cap_multiple=raw["FLEAD_WEIGHT_CAP"],
            clip_norm=raw["FLEAD_CLIP_NORM"],
            clip_multiple=raw["FLEAD_CLIP_MULTIPLE"],
            dp_noise_multiplier=raw["FLEAD_DP_NOISE_MULTIPLIER"],
            dp_delta=raw["FLEAD_DP_DELTA"],
        ),
    )


def start_or_exit(build: Callable[[Settings], Any]) -> Any:
    """Load the settings and build a dataflow; a bad setting or a failed start-up check ends
    the process with one line that says what is wrong (and names the setting)."""
    logging.basicConfig(level=logging.INFO, format="flead: %(name)s: %(message)s")
    try:
        return build(load_settings())
    except ConfigError as exc:
        sys.exit(f"flead: bad setting: {exc}")
    except RuntimeError as exc:
        sys.exit(f"flead: cannot start: {exc}")


def settings_table() -> str:
    """The table of settings in ``docs/operations.md``, generated from :data:`SETTINGS` so the two cannot drift."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        if setting.name == "FLEAD_INPUT":
            default = "bundled `data/nab`"
        else:
            default = f"`{setting.default}`" if setting.default else "(empty)"
        text = setting.help.replace("|", "\\|")  # a table cell: |z| would end the cell
        rows.append(f"| `{setting.name}` | {default} | {text} |")
    return "\n".join(rows)
