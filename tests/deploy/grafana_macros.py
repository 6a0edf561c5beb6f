"""Grafana's PostgreSQL query expansion, redone in Python so tests can run the dashboards' SQL.

Grafana (11.x) turns a panel's raw SQL into the SQL it sends in three steps, and
:func:`expand` does the same, in the same order:

1. Template variables (frontend). ``$name``, ``${name}`` and ``[[name]]`` become the
   selected values. The PostgreSQL data source quotes each value of a multi-value or
   "include All" variable as a string literal (``'a','b'``); a single-value variable is
   inserted as it is, with ``'`` doubled. "All" with a custom *all value* is inserted raw,
   unquoted (so a dashboard writes the quotes into the all value itself).
2. Global substitutions (backend, ``sqleng.Interpolate``): ``$__interval_ms``,
   ``$__interval``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``. The interval is the time
   range divided by the panel's max data points, rounded to a "nice" duration
   (:func:`round_interval`), and never below the panel's minimum interval.
3. The data source's macros (backend, ``postgresMacroEngine``), matched with Grafana's own
   pattern ``\\$(\\w+)\\(([^)]*)\\)`` and comma-split arguments:

   ====================================  ===================================================
   ``$__time(c)``                        ``c AS "time"``
   ``$__timeEpoch(c)``                   ``extract(epoch from c) as "time"``
   ``$__timeFilter(c)``                  ``c BETWEEN '2013-01-01T00:00:00Z' AND '…'``
   ``$__timeFrom()``, ``$__timeTo()``    ``'2013-01-01T00:00:00Z'``
   ``$__timeGroup(c, 5m[, fill])``       ``floor(extract(epoch from c)/300)*300``, or with the
                                         data source's TimescaleDB option on,
                                         ``time_bucket('300.000s',c)``
   ``$__timeGroupAlias(c, 5m)``          the same ``AS "time"``
   ``$__unixEpochFilter(c)``             ``c >= 1356998400 AND c <= 1451606400``
   ``$__unixEpochGroup(c, 5m)``          ``floor((c)/300)*300`` (``…Alias``: ``AS "time"``)
   ====================================  ===================================================

   As in Grafana, ``$__timeGroup(…)`` directly followed by a comma gets ``AS "time"`` too
   (compatibility with dashboards older than Grafana 5.3), and an unknown macro is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")

# Grafana's roundInterval: (an interval up to this many ms, becomes this many ms).
ROUNDING = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000),
    (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000),
    (45_000, 30_000), (90_000, 60_000), (210_000, 120_000), (450_000, 300_000), (750_000, 600_000),
    (1_050_000, 900_000), (1_500_000, 1_200_000), (2_700_000, 1_800_000), (5_400_000, 3_600_000),
    (9_000_000, 7_200_000), (16_200_000, 10_800_000), (32_400_000, 21_600_000), (86_400_000, 43_200_000),
    (172_800_000, 86_400_000), (604_800_000, 86_400_000), (1_814_400_000, 604_800_000),
    (3_628_800_000, 2_592_000_000),
)  # fmt: skip


class MacroError(ValueError):
    """Grafana would answer this query with an error instead of running it."""


def parse_interval(text: str) -> int:
    """Milliseconds of a Grafana interval (``'5m'``, ``1d``, ``30s``; a bare number is seconds).

    >>> parse_interval("'5m'"), parse_interval("1d"), parse_interval("15")
    (300000, 86400000, 15000)
    """
    text = text.strip().strip("'")
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)?", text)
    if not match:
        raise MacroError(f"error parsing interval {text}")
    return int(match[1]) * MS[match[2] or "s"]


def format_interval(ms: int) -> str:
    """Grafana's FormatInterval: the largest whole unit.

    >>> format_interval(86_400_000), format_interval(300_000), format_interval(1_500)
    ('1d', '5m', '1s')
    """
    for unit in ("y", "d", "h", "m", "s", "ms"):
        if ms >= MS[unit]:
            return f"{ms // MS[unit]}{unit}"
    return "1ms"


def round_interval(ms: float) -> int:
    """Grafana's roundInterval: a lower, rounder interval.

    >>> round_interval(94_608_000), round_interval(1_000_000)
    (86400000, 900000)
    """
    for limit, rounded in ROUNDING:
        if ms <= limit:
            return rounded
    return MS["y"]


def seconds_text(ms: int) -> str:
    """How Go's ``%v`` prints ``interval.Seconds()``: ``300``, ``0.5``."""
    return f"{ms / 1000:g}" if ms % 1000 else str(ms // 1000)


@dataclass
class Query:
    """What Grafana knows when it runs a panel's query."""

    time_from: datetime
    time_to: datetime
    timescaledb: bool = False
    """The data source's TimescaleDB option (``jsonData.timescaledb``)."""
    max_data_points: int = 1000
    min_interval: str = ""
    """The panel's minimum interval (``interval`` in the panel JSON)."""
    variables: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    multi_value: frozenset[str] = frozenset()
    """Variables that are multi-value or include All: their values are quoted."""

    @property
    def interval_ms(self) -> int:
        span = (self.time_to - self.time_from).total_seconds() * 1000
        calculated = span / self.max_data_points
        minimum = parse_interval(self.min_interval) if self.min_interval else 1
        return minimum if calculated < minimum else round_interval(calculated)

    @staticmethod
    def stamp(moment: datetime) -> str:
        """RFC 3339 in UTC, as Go's ``time.RFC3339Nano`` prints it."""
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def substitute_variables(sql: str, query: Query) -> str:
    """Step 1: template variables."""

    def value(match: re.Match) -> str:
        name = match[1] or match[2] or match[3]
        if name.startswith("__") or name not in query.variables:
            return match[0]
        selected = query.variables[name]
        if isinstance(selected, str):
            if selected.startswith("'") or name not in query.multi_value:  # a custom all value, or a single value
                return selected if selected.startswith("'") else selected.replace("'", "''")
            return quote(selected)
        return ",".join(quote(item) for item in selected)

    return re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)\b(?!\()", value, sql)


def interpolate_globals(sql: str, query: Query) -> str:
    """Step 2: Grafana's ``sqleng.Interpolate``."""
    sql = sql.replace("$__interval_ms", str(query.interval_ms))
    sql = sql.replace("$__interval", format_interval(query.interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(int(query.time_from.timestamp())))
    return sql.replace("$__unixEpochTo()", str(int(query.time_to.timestamp())))


def evaluate_macro(name: str, args: list[str], query: Query) -> str:
    """One macro of Grafana's ``postgresMacroEngine``."""
    column = args[0] if args and args[0] else None
    needs_column = name in {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter", "__unixEpochNanoFilter"}
    if needs_column and column is None:
        raise MacroError(f"missing time column argument for macro {name}")
    frm, to = query.time_from, query.time_to
    if name == "__time":
        return f'{column} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {column}) as "time"'
    if name == "__timeFilter":
        return f"{column} BETWEEN '{query.stamp(frm)}' AND '{query.stamp(to)}'"
    if name == "__timeFrom":
        return f"'{query.stamp(frm)}'"
    if name == "__timeTo":
        return f"'{query.stamp(to)}'"
    if name in ("__timeGroup", "__unixEpochGroup", "__timeGroupAlias", "__unixEpochGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        seconds = seconds_text(parse_interval(args[1]))
        if name.startswith("__unixEpoch"):
            group = f"floor(({column})/{seconds})*{seconds}"
        elif query.timescaledb:
            group = f"time_bucket('{parse_interval(args[1]) / 1000:.3f}s',{column})"
        else:
            group = f"floor(extract(epoch from {column})/{seconds})*{seconds}"
        return group + (' AS "time"' if name.endswith("Alias") else "")
    if name == "__unixEpochFilter":
        return f"{column} >= {int(frm.timestamp())} AND {column} <= {int(to.timestamp())}"
    if name == "__unixEpochNanoFilter":
        return f"{column} >= {int(frm.timestamp()) * 10**9} AND {column} <= {int(to.timestamp()) * 10**9}"
    if name == "__unixEpochNanoFrom":
        return str(int(frm.timestamp()) * 10**9)
    if name == "__unixEpochNanoTo":
        return str(int(to.timestamp()) * 10**9)
    raise MacroError(f"unknown macro {name!r}")


def expand_macros(sql: str, query: Query) -> str:
    """Step 3: the PostgreSQL data source's macros."""
    out, position = [], 0
    for match in MACRO.finditer(sql):
        name = match[1]
        if name == "__timeGroup" and sql[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"  # Grafana < 5.3 compatibility, kept by Grafana
        args = [arg.strip() for arg in match[2].split(",")]
        out += [sql[position : match.start()], evaluate_macro(name, args, query)]
        position = match.end()
    return "".join([*out, sql[position:]])


def expand(sql: str, query: Query) -> str:
    """The SQL Grafana sends to PostgreSQL for ``sql``.

    >>> q = Query(datetime(2013, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC))
    >>> print(expand("SELECT $__timeGroupAlias(c, $__interval)", q))
    SELECT floor(extract(epoch from c)/86400)*86400 AS "time"
    >>> print(expand("WHERE $__timeFilter(c)", q))
    WHERE c BETWEEN '2013-01-01T00:00:00Z' AND '2016-01-01T00:00:00Z'
    >>> print(expand("SELECT $__timeGroup(t, '5m'), 1", Query(q.time_from, q.time_to, timescaledb=True)))
    SELECT time_bucket('300.000s',t) AS "time", 1
    >>> v = Query(q.time_from, q.time_to, variables={"device": ["a", "o'b"]}, multi_value=frozenset({"device"}))
    >>> print(expand("device_id IN ($device) AND ${device} <> ''", v))
    device_id IN ('a','o''b') AND 'a','o''b' <> ''
    """
    sql = interpolate_globals(substitute_variables(sql, query), query)
    sql = expand_macros(sql, query)
    outside_literals = re.sub(r"'(?:[^']|'')*'", "''", sql)  # a value may hold a $ (a device id '$1')
    if "$" in outside_literals.replace("$$", ""):
        raise MacroError(f"something is left unexpanded: {sql}")
    return sql
