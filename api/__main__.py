"""``python -m api``: the read-only HTTP API on ``FLEAD_API_BIND``, until SIGTERM or SIGINT.

A bad setting stops start-up with one line naming it. Uvicorn handles both signals: it stops
taking connections, finishes the requests under way, closes the pool and returns, and the
process exits with 0.
"""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from api.app import create_app
from api.settings import ConfigError, load_api_settings

log = logging.getLogger("flead.api")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="flead: %(name)s: %(message)s")
    try:
        settings = load_api_settings()
    except ConfigError as exc:
        sys.exit(f"flead api: bad setting: {exc}")
    if settings.tokens:
        log.info("listening on %s; %d bearer token(s) accepted", settings.bind, len(settings.tokens))
    else:
        log.warning("no FLEAD_API_TOKENS: anyone on this machine may read; listening on %s only", settings.bind)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=False,
            lifespan="on",
            log_config=None,  # our logging: one format for every line
        )
    )
    # Uvicorn catches SIGTERM/SIGINT while it serves and, once stopped, raises the signal again
    # to the handler that was there before; this one lets the process end with 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    server.run()
    if not server.started:
        sys.exit(f"flead api: cannot start on {settings.bind}")


if __name__ == "__main__":
    main()
