"""The read-only HTTP API over the dataflow's tables: :func:`create_app` makes the FastAPI app.

A connection pool opens with the app (lifespan) and closes with it; its sessions are read-only
and time out, so a request can neither write nor hold a connection for long. Every route but
``/health`` and the OpenAPI docs needs ``Authorization: Bearer <token>`` with a token of
``FLEAD_API_TOKENS`` when there are any. Errors are JSON (``{"detail": ...}``): 400 for a cursor
this API did not give, 401 without a valid token, 404 for an unknown version or device, 422 for
a parameter of the wrong kind, 503 while the database is unreachable or has no tables yet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.convertors import PathConvertor, register_url_convertor

from api import models, queries
from api.export_model import document_bytes, file_name, global_model_document
from api.settings import ApiSettings
from sinks.database_schema import first_line

log = logging.getLogger("flead.api")

MAX_LIMIT = 1000
"""The most rows one page holds; a larger ``limit`` is cut to it."""
RECENT_ANOMALIES = 20
MAX_VERSION = 2**31 - 1  # the integer column's largest value
STATEMENT_TIMEOUT_MS = 10_000
POOL_SIZE = 8
POOL_TIMEOUT = 3.0


class Json(JSONResponse):
    """A JSON answer made by orjson from the queries' dicts as they are.

    The routes' ``response_model`` documents the shape (OpenAPI); returning a response
    skips FastAPI's validation of it against that model, which cost more than the query
    (``bench/api_latency.py``). The tests hold the answers to the shapes.
    """

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


_PROBLEMS = {status: {"model": models.Problem} for status in (400, 401, 404, 422, 503)}
_bearer = HTTPBearer(auto_error=False, description="A token of FLEAD_API_TOKENS.")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless the request has a token of ``FLEAD_API_TOKENS`` (none configured: anyone on loopback).

    Every configured token is compared, each in constant time on SHA-256 digests (of equal
    length whatever was sent), so the time taken says nothing about how much of a token matched.
    """
    digests: tuple[bytes, ...] = request.app.state.token_digests
    if not digests:
        return
    given = _digest(credentials.credentials) if credentials is not None else b""
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(given, digest)
    if not matched:
        raise HTTPException(401, "a bearer token of FLEAD_API_TOKENS is needed", {"WWW-Authenticate": "Bearer"})


def _connection(request: Request) -> Iterator[psycopg.Connection]:
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn


Connection = Annotated[psycopg.Connection, Depends(_connection)]
Limit = Annotated[int, Query(ge=1, description=f"Rows per page; above {MAX_LIMIT} is cut to {MAX_LIMIT}.")]


def encode_cursor(timestamp: datetime, device_id: str) -> str:
    """An anomaly's key as an opaque ``after`` value: base64url of ``[timestamp, device_id]``.

    >>> cursor = encode_cursor(datetime(2014, 3, 11, 19, 26, 0, 5, tzinfo=UTC), "pump/7")
    >>> cursor
    'WyIyMDE0LTAzLTExVDE5OjI2OjAwLjAwMDAwNSswMDowMCIsInB1bXAvNyJd'
    >>> decode_cursor(cursor)
    (datetime.datetime(2014, 3, 11, 19, 26, 0, 5, tzinfo=datetime.timezone.utc), 'pump/7')
    """
    return base64.urlsafe_b64encode(orjson.dumps([timestamp.isoformat(), device_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The key an ``after`` value holds; ``ValueError`` for anything :func:`encode_cursor` did not make."""
    try:
        timestamp, device_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(timestamp)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise ValueError("not a cursor of this API") from None
    if not isinstance(device_id, str) or when.tzinfo is None:
        raise ValueError("not a cursor of this API")
    return when, device_id


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


class DeviceIdConvertor(PathConvertor):
    """The rest of the path, slashes and line breaks too (Starlette's ``path`` stops at a newline)."""

    regex = r"[\s\S]*"


register_url_convertor("device_id", DeviceIdConvertor())


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no {what}")


router = APIRouter(dependencies=[Depends(require_token)], responses=_PROBLEMS)


@router.get("/models/global", response_model=models.VersionPage, tags=["models"])
def list_global_models(
    conn: Connection,
    limit: Limit = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Versions below this one.")] = None,
) -> Json:
    """Global versions, newest first, with their counts and live evaluation (no weights)."""
    limit = min(limit, MAX_LIMIT)
    rows = queries.global_versions(conn, limit + 1, before)
    more = len(rows) > limit
    return Json({"items": rows[:limit], "next_before": rows[limit - 1]["global_version"] if more else None})


@router.get("/models/global/latest", response_model=models.GlobalModel, tags=["models"])
def latest_global_model(conn: Connection) -> Json:
    """The newest global version in full: weights, intercept, threshold, lineage, evaluation."""
    found = queries.global_model(conn)
    if found is None:
        raise _not_found("global version yet")
    return Json(found)


@router.get("/models/global/{version}", response_model=models.GlobalModel, tags=["models"])
def global_model(conn: Connection, version: Annotated[int, Path(ge=0, le=MAX_VERSION)]) -> Json:
    """One global version in full."""
    found = queries.global_model(conn, version)
    if found is None:
        raise _not_found(f"global version {version}")
    return Json(found)


_MODEL_FILE = {
    200: {
        "description": "The model file (`operators/model_file.py`) as an attachment `flead-global-v{N}.json`.",
        "content": {"application/json": {}},
    }
}


def _model_file(request: Request, conn: psycopg.Connection, version: int | None) -> Response:
    document = global_model_document(conn, version, request.app.state.model_settings)
    if document is None:
        raise _not_found("global version yet" if version is None else f"global version {version}")
    name = file_name(document["model"]["global_version"])
    return Response(
        document_bytes(document),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/models/global/latest/download", response_class=Response, responses=_MODEL_FILE, tags=["models"])
def download_latest_global_model(request: Request, conn: Connection) -> Response:
    """The newest global version as a model file, what `FLEAD_INITIAL_MODEL` starts a deployment from."""
    return _model_file(request, conn, None)


@router.get("/models/global/{version}/download", response_class=Response, responses=_MODEL_FILE, tags=["models"])
def download_global_model(
    request: Request, conn: Connection, version: Annotated[int, Path(ge=0, le=MAX_VERSION)]
) -> Response:
    """One global version as a model file: format, feature names, the version's row (weights,
    intercept, threshold, normal model), its lineage, and the model-shaping `FLEAD_*` settings of
    the API's environment."""
    return _model_file(request, conn, version)


@router.get("/devices", response_model=models.DevicePage, tags=["devices"])
def list_devices(
    conn: Connection,
    limit: Limit = 100,
    after: Annotated[str | None, Query(description="Devices after this id (the last of the page before).")] = None,
) -> Json:
    """Devices in id order: when last seen, local rounds, anomalies by severity."""
    limit = min(limit, MAX_LIMIT)
    if after is not None and "\x00" in after:
        raise HTTPException(400, "after: a device id cannot hold NUL (PostgreSQL text cannot)")
    rows = queries.devices(conn, limit + 1, after)
    more = len(rows) > limit
    return Json({"items": rows[:limit], "next_after": rows[limit - 1]["device_id"] if more else None})


@router.get("/devices/{device_id:device_id}", response_model=models.Device, tags=["devices"])
def get_device(conn: Connection, device_id: str) -> Json:
    """One device: its latest local model, round statistics, anomaly counts and newest anomalies.

    The id may hold slashes, as such or as ``%2F``.
    """
    found = queries.device(conn, device_id, RECENT_ANOMALIES)
    if found is None:
        raise _not_found("device with this id")
    return Json(found)


@router.get("/anomalies", response_model=models.AnomalyPage, tags=["anomalies"])
def list_anomalies(
    conn: Connection,
    device_id: str | None = None,
    severity: Literal["warning", "critical"] | None = None,
    since: Annotated[datetime | None, Query(description="From this time on (ISO 8601; UTC without a zone).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time.")] = None,
    limit: Limit = 100,
    after: Annotated[
        str | None, Query(max_length=4096, description="`next_after` of the page before (same filters).")
    ] = None,
) -> Json:
    """Anomalies newest first (by time, then device id), filtered, a page at a time."""
    limit = min(limit, MAX_LIMIT)
    key = None
    if after is not None:
        try:
            key = decode_cursor(after)
        except ValueError:
            raise HTTPException(400, "after: not a cursor of this API (give next_after of the page before)") from None
    rows = queries.anomalies(
        conn,
        limit + 1,
        device_id=device_id,
        severity=severity,
        since=_utc(since),
        until=_utc(until),
        after=key,
    )
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return Json(
        {"items": rows[:limit], "next_after": encode_cursor(last["timestamp"], last["device_id"]) if last else None}
    )


def _configure(conn: psycopg.Connection) -> None:
    """Each pooled connection parses jsonb with orjson (several times faster than ``json``)."""
    set_json_loads(orjson.loads, conn)


def create_app(settings: ApiSettings) -> FastAPI:
    """The API over ``settings.database_url``; the pool opens when the app starts (lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = ConnectionPool(
            settings.database_url,
            configure=_configure,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=POOL_TIMEOUT,
            open=False,
            name="flead-api",
            kwargs={
                "autocommit": True,
                "connect_timeout": 5,
                "application_name": "flead-api",
                "options": (
                    f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS} -c TimeZone=UTC"
                ),
            },
        )
        pool.open(wait=False)  # a database that is away at start-up makes 503s, not a dead API
        app.state.pool = pool
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="FLEAD API",
        version="1",
        summary="Read-only: global model versions, devices and anomalies from FLEAD's tables.",
        lifespan=lifespan,
    )
    app.state.token_digests = tuple(_digest(token) for token in settings.tokens)
    app.state.model_settings = dict(settings.model_settings)

    @app.get("/health", response_model=models.Health, tags=["health"], responses={503: {"model": models.Health}})
    def health(request: Request):
        """Whether the database answers, and the newest global version with its age (no token needed)."""
        try:
            with request.app.state.pool.connection(timeout=2.0) as conn:
                newest = queries.newest_version(conn)
        except psycopg.errors.UndefinedTable:  # reachable; no dataflow has made the tables yet
            newest = None
        except (PoolTimeout, psycopg.OperationalError):
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        newest = newest or {"global_version": None, "created_at": None, "age_seconds": None}
        return Json(
            {
                "status": "ok",
                "database": "reachable",
                "newest_global_version": newest["global_version"],
                "created_at": newest["created_at"],
                "age_seconds": newest["age_seconds"],
            }
        )

    app.include_router(router)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, first_line(exc))
        return JSONResponse({"detail": "the database is unavailable; try again later"}, status_code=503)

    @app.exception_handler(psycopg.errors.UndefinedTable)
    async def no_tables(request: Request, exc: Exception) -> JSONResponse:
        detail = "the database has no FLEAD tables yet: no dataflow has written to it"
        return JSONResponse({"detail": detail}, status_code=503)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app
