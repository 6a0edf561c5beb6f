"""What the API reads: parameterised SQL over the dataflow's tables, each query a function of a
psycopg connection that returns plain dicts (times as timezone-aware datetimes).

The statements are fixed strings; every value a caller gives is a query parameter, never part
of the SQL. Pages are keyset pages: a page starts strictly after the key of the last row of
the page before (``before``/``after``), so a row written meanwhile neither shifts nor repeats
the rows of later pages. Each function returns at most ``limit`` rows; asking for one more
than wanted tells the caller whether another page follows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

Row = dict[str, Any]

EVALUATION_COLUMNS = (
    *("n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1"),
    *("window_start", "window_end"),
)
ANOMALY_COLUMNS = 'device_id, "timestamp", "values", field, z_score, severity, score, global_version, explanation'
LOCAL_MODEL_COLUMNS = (
    "model_version, global_version, weights, intercept, samples_processed, labelled, accuracy, loss, normal_model, "
    "created_at"
)

# A version's row (its newest, should a version have been written twice) with its evaluation.
_EVALUATION_JOIN = """
LEFT JOIN LATERAL (
  SELECT e.global_version AS e_version, e.n AS e_n, e.tp AS e_tp, e.fp AS e_fp, e.tn AS e_tn, e.fn AS e_fn,
         e.accuracy AS e_accuracy, e."precision" AS e_precision, e.recall AS e_recall, e.f1 AS e_f1,
         e.window_start AS e_window_start, e.window_end AS e_window_end
  FROM model_evaluations e WHERE e.global_version = f.global_version ORDER BY e.window_start DESC LIMIT 1
) e ON true"""

_VERSION_SUMMARY = (
    """
SELECT f.*, e.*{extra} FROM (
  SELECT DISTINCT ON (global_version) global_version, aggregation_round, created_at, accuracy, num_devices,
         num_updates, samples, threshold{model_columns}
  FROM federated_models {where} ORDER BY global_version DESC, created_at DESC LIMIT %(limit)s
) f"""
    + _EVALUATION_JOIN
)

_VERSIONS = _VERSION_SUMMARY.format(extra="", model_columns="", where="{where}") + " ORDER BY f.global_version DESC"

_MODEL = (
    _VERSION_SUMMARY.format(
        extra=", prev.weights AS prev_weights, prev.intercept AS prev_intercept, prev.global_version AS prev_version",
        model_columns=", weights, intercept, normal_model",
        where="{where}",
    )
    + """
LEFT JOIN LATERAL (
  SELECT p.global_version, p.weights, p.intercept FROM federated_models p
  WHERE p.global_version = f.global_version - 1 ORDER BY p.created_at DESC LIMIT 1
) prev ON true"""
)


def _evaluation(row: Row) -> Row | None:
    """The ``e_*`` columns of a row as its evaluation (``None`` when the version has none)."""
    found = row.pop("e_version") is not None
    evaluation = {name: row.pop(f"e_{name}") for name in EVALUATION_COLUMNS}
    return evaluation if found else None


def _rows(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, params).fetchall()


def newest_version(conn: psycopg.Connection) -> Row | None:
    """The newest global version, its event time and that time's age in seconds (``None``: no version yet)."""
    rows = _rows(
        conn,
        "SELECT global_version, created_at, extract(epoch FROM now() - created_at)::float8 AS age_seconds "
        "FROM federated_models ORDER BY global_version DESC, created_at DESC LIMIT 1",
        {},
    )
    return rows[0] if rows else None


def global_versions(conn: psycopg.Connection, limit: int, before: int | None = None) -> list[Row]:
    """Global versions newest first, below ``before`` when given: each with its counts and evaluation."""
    where = "" if before is None else "WHERE global_version < %(before)s"
    rows = _rows(conn, _VERSIONS.format(where=where), {"limit": limit, "before": before})
    for row in rows:
        row["evaluation"] = _evaluation(row)
    return rows


def global_model(conn: psycopg.Connection, version: int | None = None) -> Row | None:
    """One global version in full (the newest when ``version`` is ``None``); ``None`` when there is none.

    ``lineage`` says what made it: the devices, updates and samples FedAvg averaged, and the
    version it moved (``version - 1``; 0 is the all-zeros model a fleet starts from), with the
    change of each weight and of the intercept when that version is in the table.
    """
    where = "" if version is None else "WHERE global_version = %(version)s"
    rows = _rows(conn, _MODEL.format(where=where), {"limit": 1, "version": version})
    if not rows:
        return None
    row = rows[0]
    row["evaluation"] = _evaluation(row)
    moved_from = row["global_version"] - 1
    previous_weights, previous_intercept = row.pop("prev_weights"), row.pop("prev_intercept")
    if row.pop("prev_version") is None and moved_from == 0:
        previous_weights, previous_intercept = {}, 0.0
    change = None
    if previous_weights is not None and isinstance(row["weights"], dict):
        names = sorted(row["weights"].keys() | previous_weights.keys())
        change = {name: row["weights"].get(name, 0.0) - previous_weights.get(name, 0.0) for name in names}
    intercept_change = None
    if previous_intercept is not None and row["intercept"] is not None:
        intercept_change = row["intercept"] - previous_intercept
    row["lineage"] = {
        "devices": row.pop("num_devices"),
        "updates": row.pop("num_updates"),
        "samples": row.pop("samples"),
        "aggregation_round": row.pop("aggregation_round"),
        "moved_from": moved_from,
        "weight_change": change,
        "intercept_change": intercept_change,
    }
    return row


def federated_row(conn: psycopg.Connection, version: int) -> Row | None:
    """The version's ``federated_models`` row, every column as the dataflow wrote it (its newest,
    should the version have been written twice); ``None`` when there is none."""
    rows = _rows(
        conn,
        "SELECT * FROM federated_models WHERE global_version = %(version)s ORDER BY created_at DESC LIMIT 1",
        {"version": version},
    )
    return rows[0] if rows else None


def _device_ids(after: str | None) -> str:
    """Distinct device ids above ``after`` in one table's primary key, one index probe each (a
    loose index scan: a table holds many rows per device)."""
    first = "" if after is None else "WHERE device_id > %(after)s"
    return f"""
  (SELECT device_id FROM {{table}} {first} ORDER BY device_id LIMIT 1)
  UNION ALL
  SELECT (SELECT t.device_id FROM {{table}} t WHERE t.device_id > ids.device_id ORDER BY t.device_id LIMIT 1)
  FROM {{ids}} ids WHERE ids.device_id IS NOT NULL"""


_DEVICE_STATS = """
LEFT JOIN LATERAL (
  SELECT count(*) AS rounds, max(created_at) AS last_round_at FROM local_models l WHERE l.device_id = d.device_id
) l ON true
LEFT JOIN LATERAL (
  SELECT coalesce(sum(n), 0)::bigint AS total, max("timestamp") AS last_anomaly_at,
         coalesce(jsonb_object_agg(severity, n) FILTER (WHERE severity IS NOT NULL), '{}') AS by_severity
  FROM (
    SELECT severity, count(*) AS n, max("timestamp") AS "timestamp" FROM anomalies a
    WHERE a.device_id = d.device_id GROUP BY severity
  ) s
) a ON true"""


def devices(conn: psycopg.Connection, limit: int, after: str | None = None) -> list[Row]:
    """Devices in ``device_id`` order above ``after``: when last seen, rounds, anomalies by severity.

    A device is one with a local model or an anomaly in the tables.
    """
    ids = _device_ids(after)
    query = f"""
WITH RECURSIVE model_ids(device_id) AS ({ids.format(table="local_models", ids="model_ids")}),
anomaly_ids(device_id) AS ({ids.format(table="anomalies", ids="anomaly_ids")}),
d AS (
  (SELECT device_id FROM model_ids WHERE device_id IS NOT NULL LIMIT %(limit)s)
  UNION
  (SELECT device_id FROM anomaly_ids WHERE device_id IS NOT NULL LIMIT %(limit)s)
  ORDER BY device_id LIMIT %(limit)s
)
SELECT d.device_id, l.rounds, l.last_round_at, a.total AS anomalies, a.by_severity, a.last_anomaly_at
FROM d {_DEVICE_STATS} ORDER BY d.device_id"""
    rows = _rows(conn, query, {"limit": limit, "after": after})
    return [_device_summary(row) for row in rows]


def _device_summary(row: Row) -> Row:
    seen = [time for time in (row["last_round_at"], row["last_anomaly_at"]) if time is not None]
    return {
        "device_id": row["device_id"],
        "last_seen": max(seen) if seen else None,
        "rounds": row["rounds"],
        "anomalies": {"total": row["anomalies"], "by_severity": row["by_severity"]},
    }


def device(conn: psycopg.Connection, device_id: str, recent: int = 20) -> Row | None:
    """One device: its latest local model, round statistics, anomaly counts and newest anomalies;
    ``None`` when no table has a row of it."""
    if "\x00" in device_id:  # PostgreSQL text cannot hold NUL: no device has one
        return None
    params = {"device_id": device_id, "recent": recent}
    stats = _rows(
        conn,
        f"SELECT d.device_id, l.rounds, l.last_round_at, a.total AS anomalies, a.by_severity, a.last_anomaly_at "
        f"FROM (SELECT %(device_id)s::text AS device_id) d {_DEVICE_STATS}",
        params,
    )[0]
    if not stats["rounds"] and not stats["anomalies"]:
        return None
    found = _device_summary(stats)
    rounds = _rows(
        conn,
        "SELECT count(*) AS count, min(created_at) AS first_at, max(created_at) AS last_at, "
        "sum(samples_processed) AS samples, sum(labelled) AS labelled, avg(accuracy) AS mean_accuracy, "
        "avg(loss) AS mean_loss FROM local_models WHERE device_id = %(device_id)s",
        params,
    )[0]
    latest = _rows(
        conn,
        f"SELECT {LOCAL_MODEL_COLUMNS} FROM local_models WHERE device_id = %(device_id)s "
        "ORDER BY created_at DESC, model_version DESC LIMIT 1",
        params,
    )
    recent_anomalies = _rows(
        conn,
        f'SELECT {ANOMALY_COLUMNS} FROM anomalies WHERE device_id = %(device_id)s ORDER BY "timestamp" DESC '
        "LIMIT %(recent)s",
        params,
    )
    rounds["samples"] = int(rounds["samples"]) if rounds["samples"] is not None else None
    rounds["labelled"] = int(rounds["labelled"]) if rounds["labelled"] is not None else None
    found["latest_local_model"] = latest[0] if latest else None
    found["round_statistics"] = rounds
    found["recent_anomalies"] = recent_anomalies
    return found


def anomalies(
    conn: psycopg.Connection,
    limit: int,
    *,
    device_id: str | None = None,
    severity: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, str] | None = None,
) -> list[Row]:
    """Anomalies newest first, ``(timestamp, device_id)`` descending, filtered, after a page's last key.

    ``since`` is inclusive and ``until`` exclusive; ``after`` is the ``(timestamp, device_id)``
    of the last row of the page before.
    """
    if device_id is not None and "\x00" in device_id:
        return []
    conditions = []
    if device_id is not None:
        conditions.append("device_id = %(device_id)s")
    if severity is not None:
        conditions.append("severity = %(severity)s")
    if since is not None:
        conditions.append('"timestamp" >= %(since)s')
    if until is not None:
        conditions.append('"timestamp" < %(until)s')
    after_time, after_device = after if after is not None else (None, None)
    if after is not None:
        # For one device its timestamps are unique (the primary key): the time alone is the key,
        # and the primary key's index serves the order.
        conditions.append(
            '"timestamp" < %(after_time)s'
            if device_id is not None
            else '("timestamp", device_id) < (%(after_time)s, %(after_device)s)'
        )
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    order = '"timestamp" DESC' if device_id is not None else '"timestamp" DESC, device_id DESC'
    return _rows(
        conn,
        f"SELECT {ANOMALY_COLUMNS} FROM anomalies {where} ORDER BY {order} LIMIT %(limit)s",
        {
            "limit": limit,
            "device_id": device_id,
            "severity": severity,
            "since": since,
            "until": until,
            "after_time": after_time,
            "after_device": after_device,
        },
    )
