"""The dashboards' queries run against the real schema, and their metrics really exist."""

from __future__ import annotations

import json
import re
import subprocess

import psycopg
import pytest

from deploy.local.servers import free_port
from tests.flead_runs import REPO, environment, flead_command
from tests.integration.test_kafka import produce, scrape_until, topics_env

pytestmark = pytest.mark.integration

GRAFANA = REPO / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "flead.json").read_text())
TIME_FROM, TIME_TO = "2013-01-01T00:00:00Z", "2016-01-01T00:00:00Z"  # the bundled data's years
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def targets(datasource_type: str) -> list[tuple[str, dict]]:
    return [
        (panel["title"], target)
        for panel in DASHBOARD["panels"]
        for target in panel["targets"]
        if target["datasource"]["type"] == datasource_type
    ]


def seconds(interval: str) -> int:
    return int(interval[:-1]) * UNITS[interval[-1]]


def expand_macros(sql: str) -> str:
    """Grafana's PostgreSQL macros, expanded as Grafana expands them for a fixed time range."""
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{TIME_FROM}' AND '{TIME_TO}'", sql)
    sql = re.sub(
        r"\$__timeGroupAlias\(([^,]+),\s*'?(\w+)'?\)",
        lambda m: f'floor(extract(epoch from {m[1]})/{seconds(m[2])})*{seconds(m[2])} AS "time"',
        sql,
    )
    sql = re.sub(
        r"\$__timeGroup\(([^,]+),\s*'?(\w+)'?\)",
        lambda m: f"floor(extract(epoch from {m[1]})/{seconds(m[2])})*{seconds(m[2])}",
        sql,
    )
    sql = sql.replace("$__timeFrom()", f"'{TIME_FROM}'").replace("$__timeTo()", f"'{TIME_TO}'")
    assert "$" not in sql, f"a macro is left unexpanded: {sql}"
    return sql


def test_macro_expansion_matches_grafanas_form():
    assert expand_macros("WHERE $__timeFilter(created_at)") == (
        f"WHERE created_at BETWEEN '{TIME_FROM}' AND '{TIME_TO}'"
    )
    assert expand_macros("SELECT $__timeGroupAlias(created_at, 5m)") == (
        'SELECT floor(extract(epoch from created_at)/300)*300 AS "time"'
    )


def test_the_dashboard_has_the_reference_panels_and_the_operator_panels():
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {
        "Total local models",
        "Global models created",
        "Active devices in the last hour",
        "Latest global accuracy",
        "Model training rate per minute",
        "Global accuracy trend",
        "Top devices by training count",
        "Recent federated models",
        "Anomalies over time by severity",
        "Most anomalous devices",
        "Latest critical anomalies",
        "Live evaluation per global version",
        "Events per second",
        "Processing latency percentiles",
        "Kafka consumer lag",
        "Dead letters by reason",
    } <= titles


def test_the_provisioning_names_both_data_sources_the_dashboard_uses():
    provisioned = json.loads(
        "".join(
            line
            for line in (GRAFANA / "provisioning" / "datasources" / "flead.yaml").read_text().splitlines()
            if not line.startswith("#")
        )
    )
    uids = {source["uid"] for source in provisioned["datasources"]}
    used = {target["datasource"]["uid"] for panel in DASHBOARD["panels"] for target in panel["targets"]}
    assert used == uids == {"flead-postgres", "flead-prometheus"}


@pytest.fixture(scope="module")
def filled_database(postgres, nab_sample, tmp_path_factory):
    """The schema, filled by a replay run of three NAB series."""
    import uuid

    name = f"grafana_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    out = tmp_path_factory.mktemp("grafana-replay")
    subprocess.run(
        flead_command(),
        cwd=REPO,
        env=environment(nab_sample, out, FLEAD_DATABASE_URL=url),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return url


@pytest.mark.parametrize(("title", "target"), targets("grafana-postgresql-datasource"), ids=lambda v: str(v)[:40])
def test_every_sql_query_runs_on_the_real_schema_and_returns_rows(filled_database, title, target):
    with psycopg.connect(filled_database) as conn:
        rows = conn.execute(expand_macros(target["rawSql"])).fetchall()
    assert rows, f"{title}: no rows"
    assert all(value is not None for value in rows[0][:1]), f"{title}: {rows[0]}"


def metric_names(expression: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers that are not functions, labels or ranges."""
    stripped = re.sub(r"\[[^\]]*\]|\{[^}]*\}|\b(by|without)\s*\([^)]*\)", " ", expression)
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", stripped))


def test_metric_names_are_read_from_promql():
    assert metric_names("histogram_quantile(0.5, sum by (le) (rate(flead_event_latency_seconds_bucket[5m])))") == {
        "flead_event_latency_seconds_bucket"
    }


def test_every_promql_expression_names_metrics_the_dataflow_exports(kafka, nab_sample, tmp_path):
    topics = topics_env(kafka)
    produce(nab_sample, tmp_path / "producer", topics)
    port = free_port()
    env = environment(
        "kafka", tmp_path / "flead", BYTEWAX_DATAFLOW_API_ENABLED="1", BYTEWAX_DATAFLOW_API_PORT=str(port), **topics
    )
    process = subprocess.Popen(flead_command(), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics = scrape_until(
            port,
            lambda m: (
                m.get('flead_events_total{outcome="processed"}', 0) >= 9946
                and any(name.startswith("bytewax_kafka_consumer_lag") for name in m)
            ),
        )
    finally:
        process.terminate()
        process.wait(30)
    exported = {name.split("{")[0] for name in metrics}
    expressions = [target["expr"] for _, target in targets("prometheus")]
    assert expressions
    for expression in expressions:
        missing = metric_names(expression) - exported
        assert not missing, f"{expression} names {missing}, which /metrics does not export"
