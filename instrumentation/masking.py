"""Secrets masked before they reach a log line or an error message.

The one place that decides what looks like a secret: librdkafka settings whose key names one
(``sasl.password``, ``ssl.key.password``, ...), the password of a PostgreSQL connection string,
and everything of a webhook URL but its scheme and host (its path often holds a token).

>>> masked_config({"security.protocol": "SASL_SSL", "sasl.password": "s3cret"})
{'security.protocol': 'SASL_SSL', 'sasl.password': '***'}
>>> masked_pair(" sasl.password = s3cret")
'sasl.password=***'
>>> masked_pair("sasl.password s3cret")
'sasl.password=***'
>>> masked_url("postgresql://flead:s3cret@db:5432/flead")
'postgresql://flead:***@db:5432/flead'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

SECRET_WORDS = ("password", "secret", "key", "token", "credential")


def is_secret(key: str) -> bool:
    """Whether a setting's value must not be shown, judged by its key."""
    return any(word in key.lower() for word in SECRET_WORDS)


def masked_config(config: Mapping[str, str]) -> dict[str, str]:
    """A librdkafka config fit for a log line: values of secret-looking keys masked."""
    return {key: "***" if is_secret(key) else value for key, value in config.items()}


def masked_pair(pair: str) -> str:
    """One ``key=value`` pair, its value masked when the key looks secret.

    Text without ``=`` that names a secret keeps only its first word: in ``sasl.password
    hunter2`` the value follows a space.
    """
    key, _, _ = pair.partition("=")
    if not is_secret(key):
        return pair.strip()
    return f"{key.split()[0]}=***"


_URL_PASSWORD = re.compile(r"(?i)(\bpassword=)[^&#]*")
_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
_USERINFO_PASSWORD = re.compile(r":[^:@/\s]*@")


def masked_url(url: str) -> str:
    """A connection string without its password.

    Handles URLs (password in the user info or as a ``password=`` parameter), libpq
    ``key=value`` strings, and, as well as it can, strings that are neither.
    """
    if "://" not in url:
        return _USERINFO_PASSWORD.sub(":***@", _KEYWORD_PASSWORD.sub(r"\1***", url))
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***{at}{hostinfo}")
    return urlunsplit(parts._replace(query=_URL_PASSWORD.sub(r"\1***", parts.query)))


def masked_webhook_url(url: str) -> str:
    """A webhook URL fit for a log line: its scheme and host; path, query and user info hidden.

    >>> masked_webhook_url("https://hooks.slack.com/services/T000/B000/XXXXXXXX")
    'https://hooks.slack.com/***'
    >>> masked_webhook_url("http://user:pw@127.0.0.1:8080/alerts?token=abc")
    'http://127.0.0.1:8080/***'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/***"
