"""The API's settings: its ``FLEAD_API_*`` variables and ``FLEAD_DATABASE_URL``, parsed and checked once.

Declared as the dataflow's are in ``dataflows/config.py`` (not imported: it would bring the
dataflow's models into the API's start-up): a wrong value raises :class:`ConfigError` naming
the variable, never echoing a secret. The dataflow's own ``FLEAD_*`` variables may share the
environment and are left to it; an unknown ``FLEAD_API_*`` name (a typo) is refused.

>>> settings = load_api_settings({"FLEAD_DATABASE_URL": "postgresql://flead@db/flead"})
>>> settings.host, settings.port, settings.tokens
('127.0.0.1', 8000, ())
>>> load_api_settings({"FLEAD_DATABASE_URL": "postgresql://flead@db/flead", "FLEAD_API_BIND": "0.0.0.0:8000"})
Traceback (most recent call last):
...
api.settings.ConfigError: FLEAD_API_BIND='0.0.0.0:8000': without FLEAD_API_TOKENS the API listens on a \
loopback address only (127.0.0.1, ::1 or localhost)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

MIN_TOKEN_LENGTH = 16


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    """Its value may hold credentials: errors name the variable but never echo the value."""


def _tokens(text: str) -> tuple[str, ...]:
    tokens = tuple(token.strip() for token in text.split(",") if token.strip())
    for token in tokens:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"a token is shorter than {MIN_TOKEN_LENGTH} characters")
        if not all("!" <= char <= "~" for char in token):
            raise ValueError("a token holds a character other than printable ASCII without spaces")
    return tokens


def _bind(text: str) -> tuple[str, int]:
    """``host:port``; an IPv6 address in brackets (``[::1]:8000``)."""
    host, separator, port_text = text.strip().rpartition(":")
    if not separator or not host:
        raise ValueError("must be host:port (127.0.0.1:8000, [::1]:8000)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address goes in brackets: [::1]:8000")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port_text)


def _database_url(text: str) -> str:
    url = text.strip()
    if not url:
        raise ValueError("must be set: the API reads the tables the dataflow writes there")
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql:// (or postgres://)")
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ValueError("is not a PostgreSQL URL (postgresql://user:password@host:port/database)") from None
    return url


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "FLEAD_API_TOKENS",
        "",
        _tokens,
        "Comma-separated bearer tokens the API accepts (each at least 16 printable ASCII characters); "
        "empty = no authentication, and then only a loopback `FLEAD_API_BIND`.",
        secret=True,
    ),
    Setting("FLEAD_API_BIND", "127.0.0.1:8000", _bind, "Where the API listens, `host:port`."),
    Setting(
        "FLEAD_DATABASE_URL",
        "",
        _database_url,
        "The PostgreSQL/TimescaleDB the dataflow writes to; the API only reads it.",
        secret=True,
    ),
)


MODEL_SETTINGS = (
    *("FLEAD_FIELDS", "FLEAD_LABEL_COLUMN", "FLEAD_LABEL_DELAY"),
    *("FLEAD_WINDOW", "FLEAD_SHORT_WINDOW", "FLEAD_WARMUP", "FLEAD_Z_WARNING", "FLEAD_Z_CRITICAL"),
    *("FLEAD_DETECTOR", "FLEAD_LEARNING_RATE", "FLEAD_POSITIVE_WEIGHT", "FLEAD_NORMAL_PRIOR_READINGS"),
    *("FLEAD_SCORE_THRESHOLD", "FLEAD_TARGET_FALSE_ALARM_RATE"),
    *("FLEAD_ROUND_ROWS", "FLEAD_ROUND_SECONDS", "FLEAD_FEDAVG_UPDATES", "FLEAD_FEDAVG_SECONDS"),
    *("FLEAD_AGGREGATION", "FLEAD_TRIM_FRACTION", "FLEAD_WEIGHT_CAP", "FLEAD_CLIP_NORM", "FLEAD_CLIP_MULTIPLE"),
    *("FLEAD_DP_NOISE_MULTIPLIER", "FLEAD_DP_DELTA"),
)
"""The dataflow's settings that shape a global model: a model file records those of the exporter's
environment (the API's, typically the dataflow's ConfigMap; the export command's shell)."""


def model_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings of :data:`MODEL_SETTINGS` that ``environ`` sets, as it sets them.

    >>> model_settings({"FLEAD_WINDOW": "100", "FLEAD_INPUT": "kafka", "FLEAD_DATABASE_URL": "postgresql://db/f"})
    {'FLEAD_WINDOW': '100'}
    """
    return {name: environ[name] for name in MODEL_SETTINGS if name in environ}


@dataclass(frozen=True)
class ApiSettings:
    database_url: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    tokens: tuple[str, ...] = field(default=(), repr=False)
    model_settings: dict[str, str] = field(default_factory=dict)
    """The :data:`MODEL_SETTINGS` of the API's environment, for the model files it serves."""

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only.

    >>> [is_loopback(host) for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost", "0.0.0.0", "::", "db")]
    [True, True, True, True, False, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def load_database_url(environ: Mapping[str, str] | None = None) -> str:
    """``FLEAD_DATABASE_URL`` alone (for a command that only reads the database); :class:`ConfigError`
    naming it, without its value, when it is missing or wrong."""
    environ = os.environ if environ is None else environ
    try:
        return _database_url(environ.get("FLEAD_DATABASE_URL", ""))
    except ValueError as exc:
        raise ConfigError(f"FLEAD_DATABASE_URL: {exc}") from None


def load_api_settings(environ: Mapping[str, str] | None = None) -> ApiSettings:
    """Parse the API's variables; a wrong one raises :class:`ConfigError` naming it."""
    environ = os.environ if environ is None else environ
    known = {setting.name for setting in SETTINGS}
    unknown = sorted(name for name in environ if name.startswith("FLEAD_API_") and name not in known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (known: {', '.join(sorted(known))})")
    raw: dict[str, Any] = {}
    for setting in SETTINGS:
        text = environ.get(setting.name, setting.default)
        try:
            raw[setting.name] = setting.parse(text)
        except ValueError as exc:
            shown = setting.name if setting.secret else f"{setting.name}={text!r}"
            raise ConfigError(f"{shown}: {exc}") from None
    host, port = raw["FLEAD_API_BIND"]
    tokens = raw["FLEAD_API_TOKENS"]
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"FLEAD_API_BIND={environ['FLEAD_API_BIND']!r}: without FLEAD_API_TOKENS the API listens on a "
            "loopback address only (127.0.0.1, ::1 or localhost)"
        )
    return ApiSettings(
        database_url=raw["FLEAD_DATABASE_URL"],
        host=host,
        port=port,
        tokens=tokens,
        model_settings=model_settings(environ),
    )
