"""The FLEAD dashboard: its SQL runs on the real schema, its PromQL names metrics that exist.

- Static checks (no server): the panels are there, every query's data source is provisioned,
  the SQL needs nothing TimescaleDB-only, panels do not overlap.
- Against a real database filled by a replay run with the database sink, once on plain
  PostgreSQL and once on PostgreSQL with TimescaleDB (there with the data source's TimescaleDB
  option on, so that ``$__timeGroup`` becomes ``time_bucket``): every SQL query of the
  dashboard (panels and the ``device`` variable), expanded as Grafana expands it
  (``tests/deploy/grafana_macros.py``), runs as the read-only Grafana login that
  ``deploy/compose/initdb/10-grafana-reader.sh`` creates, and returns rows.
- Against a scrape of ``/metrics`` of a Kafka-mode run: every PromQL expression names metrics,
  and labels, that the dataflow exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from glob import glob
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.deploy.grafana_macros import MacroError, Query, expand
from tests.flead_runs import REPO, environment, flead_command
from tests.integration.test_kafka import scrape_kafka_run

GRAFANA = REPO / "grafana"
READER_SCRIPT = REPO / "deploy" / "compose" / "initdb" / "10-grafana-reader.sh"
# The bundled NAB data's years: the time range a user picks to see a replay.
TIME_FROM, TIME_TO = datetime(2013, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC)
ALL = "'__all'"  # the device variable's custom "All" value


def load(path):
    """A provisioning file: JSON syntax (which is YAML) after its comment lines."""
    return json.loads("\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")))


DASHBOARD = json.loads((GRAFANA / "dashboards" / "flead.json").read_text())
DATASOURCES = {
    source["uid"]: source for source in load(GRAFANA / "provisioning" / "datasources" / "flead.yaml")["datasources"]
}
PG_TYPE = "grafana-postgresql-datasource"
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
VARIABLES = DASHBOARD["templating"]["list"]


@dataclass(frozen=True)
class SqlQuery:
    where: str
    sql: str
    min_interval: str
    stat: bool

    def __str__(self) -> str:
        return self.where


def sql_queries() -> list[SqlQuery]:
    """Every SQL query of the dashboard: panel targets, then query variables."""
    default_min = DATASOURCES["flead-postgres"]["jsonData"].get("timeInterval", "")
    found = [
        SqlQuery(panel["title"], target["rawSql"], panel.get("interval", default_min), panel["type"] == "stat")
        for panel in PANELS
        for target in panel["targets"]
        if target["datasource"]["type"] == PG_TYPE
    ]
    found += [
        SqlQuery(f"variable {variable['name']}", variable["query"], default_min, False)
        for variable in VARIABLES
        if variable["type"] == "query" and variable["datasource"]["type"] == PG_TYPE
    ]
    return found


def promql_targets() -> list[tuple[str, dict]]:
    return [
        (panel["title"], target)
        for panel in PANELS
        for target in panel["targets"]
        if target["datasource"]["type"] == "prometheus"
    ]


def grafana_query(query: SqlQuery, device: str | list[str] = ALL, timescaledb: bool | None = None) -> Query:
    """What Grafana knows for ``query``; ``timescaledb``: the data source's option (by default
    as provisioned)."""
    if timescaledb is None:
        timescaledb = DATASOURCES["flead-postgres"]["jsonData"].get("timescaledb", False)
    return Query(
        TIME_FROM,
        TIME_TO,
        timescaledb=timescaledb,
        min_interval=query.min_interval,
        variables={"device": device},
        multi_value=frozenset({"device"}),
    )


# --- static checks -------------------------------------------------------------------------


def test_the_dashboard_has_the_reference_panels_and_the_operator_panels():
    titles = {panel["title"] for panel in PANELS}
    reference = {
        "Total local models",
        "Global models created",
        "Active devices in the last hour",
        "Latest global accuracy",
        "Model training rate per minute",
        "Global accuracy trend",
        "Top devices by training count",
        "Recent federated models",
    }
    operator = {
        "Anomalies over time by severity",
        "Most anomalous devices",
        "Latest critical anomalies",
        "Live evaluation per hour",
        "Events per second",
        "Processing latency percentiles",
        "Kafka consumer lag",
        "Dead letters by reason",
    }
    assert reference | operator <= titles
    critical = next(panel for panel in PANELS if panel["title"] == "Latest critical anomalies")
    assert "explanation" in critical["targets"][0]["rawSql"]


def test_the_trend_panels_read_the_hourly_trends_not_the_raw_rows():
    trends = {
        "Model training rate per minute": "training_hourly",
        "Top devices by training count": "training_hourly",
        "Anomalies over time by severity": "anomalies_hourly",
        "Most anomalous devices": "anomalies_hourly",
        "Live evaluation per hour": "evaluation_hourly",
    }
    for title, relation in trends.items():
        sql = next(panel for panel in PANELS if panel["title"] == title)["targets"][0]["rawSql"]
        assert f"FROM {relation} " in sql, title
    evaluation = next(panel for panel in PANELS if panel["title"] == "Live evaluation per hour")
    assert all(column in evaluation["targets"][0]["rawSql"] for column in ("precision", "recall", "f1"))


def test_every_query_uses_a_provisioned_data_source_of_its_type():
    assert {source["type"] for source in DATASOURCES.values()} == {PG_TYPE, "prometheus"}
    used = [target["datasource"] for panel in PANELS for target in panel["targets"]]
    used += [panel["datasource"] for panel in PANELS] + [variable["datasource"] for variable in VARIABLES]
    for source in used:
        assert source["uid"] in DATASOURCES and DATASOURCES[source["uid"]]["type"] == source["type"], source
    assert {source["uid"] for source in used} == set(DATASOURCES)


def test_the_sql_uses_no_timescaledb_function_and_grafana_expands_it_for_plain_postgresql():
    """Static: no TimescaleDB-only function, and Grafana's TimescaleDB option off as provisioned.

    With the option on, Grafana expands $__timeGroup to time_bucket(), which plain
    PostgreSQL lacks; off, it expands to arithmetic that runs on both. The tests below run
    every query on both servers, with the option on for TimescaleDB.
    """
    timescale_only = re.compile(
        r"\b(time_bucket|time_bucket_gapfill|locf|interpolate|first|last|histogram|approximate_row_count|"
        r"hypertable_\w+|chunks_\w+)\s*\(",
        re.IGNORECASE,
    )
    queries = sql_queries()
    assert queries, "the dashboard has no SQL query"
    for query in queries:
        assert not timescale_only.search(query.sql), f"{query}: uses a TimescaleDB-only function"
        assert "time_bucket" not in expand(query.sql, grafana_query(query)), f"{query}: expands to time_bucket"
    assert DATASOURCES["flead-postgres"]["jsonData"]["timescaledb"] is False
    grouped = [query for query in queries if "$__timeGroup" in query.sql]
    assert grouped and all("time_bucket(" in expand(q.sql, grafana_query(q, timescaledb=True)) for q in grouped)


def test_every_sql_query_expands_completely():
    queries = sql_queries()
    assert queries, "the dashboard has no SQL query"  # else the parametrized tests below would not run at all
    assert [q for q in queries if "$device" in q.sql], "no SQL query uses $device"
    for query in queries:
        try:
            expand(query.sql, grafana_query(query))
        except MacroError as error:
            pytest.fail(f"{query}: {error}")


def test_panels_do_not_overlap_and_ids_are_unique():
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


# --- SQL against the real schema -----------------------------------------------------------


@dataclass(frozen=True)
class FilledDatabase:
    owner_url: str
    reader_url: str
    timescaledb: bool
    """The server has TimescaleDB, and the data source's TimescaleDB option is on."""

    def query(self, query: SqlQuery, device: str | list[str] = ALL) -> str:
        """The panel's SQL as Grafana sends it to this database."""
        return expand(query.sql, grafana_query(query, device, self.timescaledb))


def psql_on_path() -> dict[str, str]:
    """PATH with a psql on it (Debian's wrapper in /usr/bin, or the server's own bin folder)."""
    path = os.environ.get("PATH", "")
    if shutil.which("psql"):
        return {"PATH": path}
    found = sorted(glob("/usr/lib/postgresql/*/bin/psql"))
    if not found:  # a failure, not a skip: .ci/run installs PostgreSQL, which brings psql
        pytest.fail(
            "psql (to run deploy/compose/initdb/10-grafana-reader.sh) is neither on PATH nor in"
            " /usr/lib/postgresql/*/bin: install PostgreSQL's client (apt-get install postgresql-client)"
        )
    return {"PATH": f"{found[-1].rsplit('/', 1)[0]}:{path}"}


@pytest.fixture(scope="module", params=["postgresql", "timescaledb"])
def filled_database(request, nab_sample, tmp_path_factory) -> FilledDatabase:
    """A fresh database: the Grafana login's script first, then a replay of three NAB series."""
    postgres = request.getfixturevalue("postgres" if request.param == "postgresql" else "timescaledb")
    name = f"grafana_{uuid.uuid4().hex[:8]}"
    reader = f"grafana_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(postgres.url)
    owner_url = urlunsplit(parts._replace(path=f"/{name}"))
    reader_url = urlunsplit(parts._replace(path=f"/{name}", netloc=f"{reader}@{parts.hostname}:{parts.port}"))
    script_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        **psql_on_path(),
        "PGHOST": parts.hostname,
        "PGPORT": str(parts.port),
        "POSTGRES_USER": parts.username,
        "POSTGRES_DB": name,
        "GRAFANA_DB_USER": reader,
        "GRAFANA_DB_PASSWORD": "not-checked-by-a-trust-server",
    }
    subprocess.run(["sh", str(READER_SCRIPT)], env=script_env, check=True, capture_output=True, timeout=60)
    out = tmp_path_factory.mktemp("grafana-replay")
    subprocess.run(
        flead_command(),
        cwd=REPO,
        env=environment(nab_sample, out, FLEAD_DATABASE_URL=owner_url),
        check=True,
        capture_output=True,
        timeout=300,
    )
    with psycopg.connect(owner_url) as conn:
        extension = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]
    assert extension == (request.param == "timescaledb"), "the replay did not run in the expected mode"
    return FilledDatabase(owner_url, reader_url, request.param == "timescaledb")


@pytest.fixture(scope="module")
def one_device(filled_database) -> str:
    """The device with the most critical anomalies: a value a user would pick for $device."""
    with psycopg.connect(filled_database.owner_url) as conn:
        row = conn.execute(
            "SELECT device_id FROM anomalies WHERE severity = 'critical' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    assert row, "the replay wrote no critical anomalies"
    return row[0]


@pytest.mark.integration
@pytest.mark.parametrize("query", sql_queries(), ids=str)
def test_every_sql_query_runs_on_the_real_schema_and_returns_rows(filled_database, query):
    with psycopg.connect(filled_database.reader_url) as conn:
        rows = conn.execute(filled_database.query(query)).fetchall()
    assert rows, f"{query}: no rows"
    assert rows[0][0] is not None, f"{query}: {rows[0]}"
    if query.stat:
        assert rows[0][0] > 0, f"{query}: {rows[0]}"


@pytest.mark.integration
@pytest.mark.parametrize("query", [q for q in sql_queries() if "$device" in q.sql], ids=str)
def test_the_device_variable_filters(filled_database, one_device, query):
    """One device selected: the per-device panels show that device only, and still rows."""
    with psycopg.connect(filled_database.reader_url) as conn:
        cursor = conn.execute(filled_database.query(query, [one_device]))
        chosen, columns = cursor.fetchall(), [column.name for column in cursor.description]
        every = conn.execute(filled_database.query(query)).fetchall()
    assert chosen, f"{query}: no rows for {one_device}"
    if "device_id" in columns:
        assert {row[columns.index("device_id")] for row in chosen} == {one_device}
    assert chosen != every, f"{query}: the same rows with one device as with all"


@pytest.mark.integration
def test_the_device_variable_lists_the_devices(filled_database):
    query = next(q for q in sql_queries() if q.where == "variable device")
    with psycopg.connect(filled_database.reader_url) as conn:
        devices = [row[0] for row in conn.execute(filled_database.query(query)).fetchall()]
    assert len(devices) == 3 and devices == sorted(devices)


@pytest.mark.integration
def test_grafanas_login_can_read_and_nothing_else(filled_database):
    with psycopg.connect(filled_database.reader_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM anomalies").fetchone()[0] > 0
        for statement in (
            "DELETE FROM anomalies",
            "UPDATE federated_models SET accuracy = 0",
            "DROP TABLE dead_letters",
            "CREATE TABLE scratch (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "30s"


# --- PromQL against a scrape ---------------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or"}
PROMQL_WORDS |= {"unless", "inf", "nan"}


def metric_names(expression: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers that are not functions, labels or keywords."""
    stripped = re.sub(r"\[[^\]]*\]|\{[^}]*\}|\b(by|without|on|ignoring)\s*\([^)]*\)|\"[^\"]*\"", " ", expression)
    names = set(re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", stripped))
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def label_names(expression: str) -> set[str]:
    """Labels an expression groups by or matches on."""
    grouped = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expression)
    matched = re.findall(r"\{([^}]*)\}", expression)
    names = {name.strip() for group in grouped for name in group.split(",") if name.strip()}
    return names | {m for group in matched for m in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", group)}


def test_metric_and_label_names_are_read_from_promql():
    expression = 'histogram_quantile(0.5, sum by (le) (rate(flead_event_latency_seconds_bucket{job="x"}[5m])))'
    assert metric_names(expression) == {"flead_event_latency_seconds_bucket"}
    assert label_names(expression) == {"le", "job"}
    assert metric_names("sum by (sink) (increase(flead_sink_dropped_rows_total[$__rate_interval]))") == {
        "flead_sink_dropped_rows_total"
    }


def test_legends_name_labels_the_expression_keeps():
    targets = promql_targets()
    assert [target for _, target in targets if target.get("legendFormat")], "no PromQL target with a legend"
    for title, target in targets:
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend_labels <= label_names(target["expr"]), f"{title}: {target['legendFormat']}"


@pytest.mark.integration
def test_every_promql_expression_names_metrics_and_labels_the_dataflow_exports(kafka, nab_sample, tmp_path):
    """A Kafka-mode run: the consumer lag exists only there."""
    metrics, _ = scrape_kafka_run(
        kafka,
        nab_sample,
        tmp_path,
        lambda m: (
            m.get('flead_events_total{outcome="processed"}', 0) >= 9946
            and any(name.startswith("flead_kafka_consumer_lag") for name in m)
        ),
    )
    exported: dict[str, set[str]] = {}
    for series in metrics:
        name, _, labels = series.partition("{")
        exported.setdefault(name, set()).update(re.findall(r'(\w+)="', labels))
    targets = promql_targets()
    assert targets
    for title, target in targets:
        names = metric_names(target["expr"])
        assert names, f"{title}: no metric in {target['expr']}"
        missing = names - set(exported)
        assert not missing, f"{title}: {target['expr']} names {missing}, which /metrics does not export"
        labels = set().union(*(exported[name] for name in names))
        assert label_names(target["expr"]) <= labels, f"{title}: {target['expr']} uses labels not in {labels}"
