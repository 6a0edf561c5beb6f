"""Throw-away TLS material for the local servers: a CA, a server certificate, a PKCS12 keystore.

Everything is made with ``openssl`` at the moment it is needed, in a folder the caller owns,
and is good for a day: enough for a test session, useless once it has leaked. The server
certificate names ``127.0.0.1`` and ``localhost`` (subjectAltName), so a client that
checks host names (libpq's ``sslmode=verify-full``, librdkafka's default) accepts it for
either, and for no other name.

    ca = make_ca(folder)
    server = make_server_certificate(ca, folder)
    keystore = make_pkcs12_keystore(server, folder / "server.p12", "changeit")
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_NAMES = ("IP:127.0.0.1", "DNS:localhost")
"""The subjectAltName of every server certificate: the only address the local servers bind."""

DAYS = 1


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


def _openssl(*args: str, password: str = "") -> None:
    """Run ``openssl``; ``password`` reaches it as ``env:FLEAD_TLS_PASSWORD``, not on its command line."""
    env = {**os.environ, "FLEAD_TLS_PASSWORD": password}
    done = subprocess.run(["openssl", *args], check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{done.stderr}")


def make_ca(folder: Path, name: str = "FLEAD test CA") -> KeyPair:
    """A self-signed certificate authority ``name`` in ``folder`` (``<stem>.pem``, ``<stem>-key.pem``)."""
    stem = name.lower().replace(" ", "-")
    ca = KeyPair(folder / f"{stem}.pem", folder / f"{stem}-key.pem")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(DAYS), "-subj", f"/CN={name}",
        "-keyout", str(ca.key), "-out", str(ca.cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    ca.key.chmod(0o600)
    return ca


def make_server_certificate(ca: KeyPair, folder: Path, names: tuple[str, ...] = SERVER_NAMES) -> KeyPair:
    """A server certificate for ``names`` (subjectAltName entries) signed by ``ca``, in ``folder``."""
    server = KeyPair(folder / "server.pem", folder / "server-key.pem")
    request = folder / "server.csr"
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(server.key), "-out", str(request),
    )  # fmt: skip
    extensions = folder / "server.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(names)}\n"
    )
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-days", str(DAYS), "-extfile", str(extensions), "-out", str(server.cert),
    )  # fmt: skip
    request.unlink()
    server.key.chmod(0o600)
    return server


def make_pkcs12_keystore(server: KeyPair, path: Path, password: str) -> Path:
    """``server``'s key and certificate as a PKCS12 keystore at ``path`` (a JVM reads it as
    ``ssl.keystore.type=PKCS12``), locked with ``password``."""
    _openssl(
        "pkcs12", "-export", "-in", str(server.cert), "-inkey", str(server.key), "-name", "server",
        "-out", str(path), "-passout", "env:FLEAD_TLS_PASSWORD", password=password,
    )  # fmt: skip
    path.chmod(0o600)
    return path
