"""A real Prometheus (``deploy/local/prometheus.py``) against the deploy's config, rules and a running FLEAD.

- Offline: the rule files the config loads are the ones shipped, compose mounts them, and the
  Kubernetes monitoring manifests carry the same alerts for the job the alerts expect.
- promtool: ``check config`` on ``deploy/prometheus/prometheus.yml`` (which checks the rule
  files it loads), ``check rules`` on each of them, and ``test rules`` on
  ``alerts_test.yml``: each alert fires on the series that should raise it, and only then.
- Live: FLEAD runs as two processes on a two-partition Kafka topic fed by a looping producer,
  writing the database too, each process serving ``/metrics`` on its own port. Prometheus
  scrapes both every second, as job ``flead`` with the deploy's rule files. Both targets are
  up; every PromQL expression of the Grafana dashboard, and the query of every alert (its
  expression without the threshold), returns a series with a value through the HTTP API.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from deploy.local.prometheus import MODULE, VERSION, PrometheusServer, PrometheusUnavailable, ensure_prometheus
from deploy.local.servers import free_port
from tests.flead_runs import REPO, environment, flead_command
from tests.integration.test_kafka import topics_env

DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
CONFIG_PATH = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD_PATH = REPO / "grafana" / "dashboards" / "flead.json"
ALERTS_TEST = Path(__file__).with_name("alerts_test.yml")
# What Grafana's range variables become here: 30 scrapes at 1 s, as $__rate_interval is
# 4 scrapes or more.
RANGE = "30s"
WAIT = 120.0  # seconds a query may take to return data (start-up included) on 2 busy cores


def load(path: Path) -> dict:
    """A deploy file: JSON syntax (which is YAML) after its comment lines."""
    return json.loads("\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")))


CONFIG = load(CONFIG_PATH)
RULE_FILES = [PROMETHEUS_DIR / name for name in CONFIG.get("rule_files", [])]
RULES = [rule for path in RULE_FILES for group in load(path)["groups"] for rule in group["rules"]]
THRESHOLD = re.compile(r"^(?P<query>.+?)\s+(?P<op>==|!=|>=|<=|>|<)\s+(?P<threshold>-?[\d.]+)$")


@dataclass(frozen=True)
class Expression:
    where: str
    promql: str

    def __str__(self) -> str:
        return self.where


def dashboard_expressions() -> list[Expression]:
    """Every PromQL expression of the dashboard, with Grafana's range variables made concrete."""
    dashboard = json.loads(DASHBOARD_PATH.read_text())
    found = []
    for panel in dashboard["panels"]:
        targets = [t for t in panel.get("targets", []) if t.get("datasource", {}).get("type") == "prometheus"]
        for target in targets:
            promql = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", RANGE, target["expr"])
            assert "$" not in promql, f"{panel['title']}: a Grafana variable left in {promql}"
            found.append(Expression(f"{panel['title']} [{target.get('refId', '?')}]", promql))
    return found


def alert_queries() -> list[Expression]:
    """The query of each alert: its expression without the comparison with its threshold."""
    queries = []
    for rule in RULES:
        match = THRESHOLD.match(rule["expr"])  # not one: the offline test below says so
        queries.append(Expression(rule["alert"], match["query"] if match else rule["expr"]))
    return queries


# --- offline ---------------------------------------------------------------------------------


def test_the_config_loads_every_rule_file_shipped_and_each_alert_compares_a_query_with_a_threshold():
    shipped = sorted(path for path in PROMETHEUS_DIR.iterdir() if path != CONFIG_PATH)
    assert sorted(RULE_FILES) == shipped
    assert RULES, "no alerting rules"
    for rule in RULES:
        assert THRESHOLD.match(rule["expr"]), f"{rule['alert']}: {rule['expr']} is not `query op threshold`"
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))


def test_compose_mounts_the_rule_files_next_to_the_config():
    compose = load(DEPLOY / "compose.yaml")
    mounts = compose["services"]["prometheus"]["volumes"]
    config_mount = next(m for m in mounts if m.startswith("./prometheus/prometheus.yml:"))
    config_dir = Path(config_mount.split(":")[1]).parent
    for path in RULE_FILES:
        assert f"./prometheus/{path.name}:{config_dir / path.name}:ro" in mounts, path.name


def test_kubernetes_monitoring_scrapes_the_pods_as_the_job_the_alerts_expect_and_has_the_same_alerts():
    """For the Prometheus Operator: a PodMonitor and a PrometheusRule next to the StatefulSet."""
    statefulset = load(DEPLOY / "k8s" / "07-statefulset.yaml")
    pod = statefulset["spec"]["template"]
    monitor = load(DEPLOY / "k8s" / "monitoring" / "podmonitor.yaml")
    rule = load(DEPLOY / "k8s" / "monitoring" / "prometheusrule.yaml")
    assert (monitor["kind"], rule["kind"]) == ("PodMonitor", "PrometheusRule")
    namespace = statefulset["metadata"]["namespace"]
    assert monitor["metadata"]["namespace"] == rule["metadata"]["namespace"] == namespace
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {port["name"]: port["containerPort"] for port in pod["spec"]["containers"][0]["ports"]}
    assert str(ports[endpoint["port"]]) == pod["metadata"]["annotations"]["prometheus.io/port"]
    assert endpoint["path"] == pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    # the job label: the pods' label that jobLabel names, the compose job, the alerts' job
    (job,) = [scrape["job_name"] for scrape in CONFIG["scrape_configs"]]
    assert pod["metadata"]["labels"][monitor["spec"]["jobLabel"]] == job
    assert {m for r in RULES for m in re.findall(r'\bjob="([^"]*)"', r["expr"])} == {job}
    assert [rule["spec"]] == [load(path) for path in RULE_FILES]


def fake_go(folder: Path, exit_code: int = 0) -> Path:
    """A ``go`` that logs its arguments and, for ``install``, writes a script per package into GOBIN."""
    folder.mkdir()
    go = folder / "go"
    go.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {folder}/calls\n'
        f"[ {exit_code} -eq 0 ] || {{ echo 'cannot find module' >&2; exit {exit_code}; }}\n"
        'for package in "$@"; do\n'
        '  case "$package" in */cmd/*@*) name=${package##*/cmd/}; name=${name%@*};'
        ' printf "#!/bin/sh\\necho %s\\n" "$name" > "$GOBIN/$name"; chmod +x "$GOBIN/$name";; esac\n'
        "done\n"
    )
    go.chmod(0o755)
    return folder


def test_ensure_prometheus_builds_into_the_cache_once_and_says_why_it_cannot(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "prometheus-test"
    monkeypatch.setenv("FLEAD_PROMETHEUS_CACHE", str(cache))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(PrometheusUnavailable, match="no Go to build it"):
        ensure_prometheus()

    monkeypatch.setenv("PATH", f"{fake_go(tmp_path / 'failing', exit_code=1)}:/usr/bin:/bin")
    with pytest.raises(RuntimeError, match="cannot find module"):
        ensure_prometheus()
    assert not cache.exists()

    go = fake_go(tmp_path / "go")
    monkeypatch.setenv("PATH", f"{go}:/usr/bin:/bin")
    assert ensure_prometheus() == cache
    assert ensure_prometheus() == cache  # the second call finds the build
    (call,) = (go / "calls").read_text().splitlines()
    assert call == f"install {MODULE}/cmd/prometheus@{VERSION} {MODULE}/cmd/promtool@{VERSION}"
    for name in ("prometheus", "promtool"):
        assert subprocess.run([cache / name], capture_output=True, text=True, check=True).stdout == f"{name}\n"
    assert sorted(path.name for path in cache.parent.iterdir()) == ["prometheus-test", "prometheus-test.lock"]


# --- promtool --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_bin() -> Path:
    try:
        return ensure_prometheus()
    except PrometheusUnavailable as exc:
        pytest.skip(f"no Prometheus: {exc}")


def promtool(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [str(folder / "promtool"), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.integration
def test_promtool_checks_the_config_and_the_rules_it_loads(prometheus_bin):
    printed = promtool(prometheus_bin, "check", "config", str(CONFIG_PATH))
    assert f"SUCCESS: {len(RULES)} rules found" in printed


@pytest.mark.integration
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_checks_each_rule_file(prometheus_bin, path):
    promtool(prometheus_bin, "check", "rules", str(path))


@pytest.mark.integration
def test_each_alert_fires_when_it_should_and_only_then(prometheus_bin):
    tested = set(re.findall(r'"alertname": "(\w+)"', ALERTS_TEST.read_text()))
    assert tested == {rule["alert"] for rule in RULES}, "every alert needs a case in alerts_test.yml"
    promtool(prometheus_bin, "test", "rules", str(ALERTS_TEST))


# --- a live FLEAD, scraped -------------------------------------------------------------------


@dataclass
class ScrapedFlead:
    prometheus: PrometheusServer
    targets: list[str]
    logs: list[Path]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def explain(self) -> str:
        """What the processes said, and whether they still run: for a failure message."""
        lines = []
        for process, log in zip(self.processes, self.logs, strict=False):
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
            lines.append(f"--- {log.name} ({state})\n{tail}")
        return "\n".join(lines)

    def wait_for(self, expression: str, ready: Callable[[list[dict]], bool], timeout: float = WAIT) -> list[dict]:
        """Query ``expression`` until its result is ``ready``; fail with the last result otherwise."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while True:
            stopped = [p.args for p in self.processes if p.poll() is not None]
            if stopped:
                pytest.fail(f"stopped while waiting for {expression}: {stopped}\n{self.explain()}")
            result = self.prometheus.query(expression)
            if ready(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{expression} after {timeout:.0f} s: {result}\n{self.explain()}")
            time.sleep(0.5)


def has_a_value(result: list[dict]) -> bool:
    """At least one series, and one with a number (a rate or quantile over no data is NaN)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.fixture(scope="module")
def scraped_flead(prometheus_bin, nab_sample, tmp_path_factory, request) -> Iterator[ScrapedFlead]:
    """FLEAD in two processes reading Kafka and writing a database and the result topics, a
    producer looping over the sample at 500 messages/s, and Prometheus scraping both processes.
    (The servers are asked for once Prometheus is there: a skip then starts none.)"""
    kafka = request.getfixturevalue("kafka")
    postgres = request.getfixturevalue("postgres")
    out = tmp_path_factory.mktemp("prometheus-flead")
    suffix = uuid.uuid4().hex[:8]
    topics = topics_env(kafka)  # the run follows its topics: FLEAD_KAFKA_IDLE_SECONDS does not apply
    kafka.create_topic(topics["FLEAD_TOPIC_TELEMETRY"], partitions=2)  # one per process
    database = f"prometheus_{suffix}"
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    database_url = postgres.url.rsplit("/", 1)[0] + f"/{database}"

    ports: list[int] = []
    while len(ports) < 4:  # two for /metrics, two for the Bytewax cluster
        port = free_port()
        if port not in ports:
            ports.append(port)
    api_ports = ports[:2]
    addresses = f"127.0.0.1:{ports[2]};127.0.0.1:{ports[3]}"
    targets = [f"127.0.0.1:{port}" for port in api_ports]
    (scrape,) = CONFIG["scrape_configs"]
    logs = [out / "flead-0.log", out / "flead-1.log", out / "producer.log"]
    with PrometheusServer(targets, scrape["job_name"], scrape["metrics_path"], RULE_FILES) as prometheus:
        run = ScrapedFlead(prometheus, targets, logs)
        try:
            for index, port in enumerate(api_ports):
                env = environment(
                    "kafka",
                    out / "flead",
                    FLEAD_DATABASE_URL=database_url,
                    BYTEWAX_DATAFLOW_API_ENABLED="true",
                    BYTEWAX_DATAFLOW_API_PORT=str(port),
                    **topics,
                )
                with logs[index].open("w") as log:
                    run.processes.append(
                        subprocess.Popen(
                            flead_command("-i", str(index), "-a", addresses),
                            cwd=REPO,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            producer_env = environment(nab_sample, out / "producer", FLEAD_RATE="500", FLEAD_LOOP="true", **topics)
            with logs[2].open("w") as log:
                run.processes.append(
                    subprocess.Popen(
                        flead_command(dataflow="dataflows.producer"),
                        cwd=REPO,
                        env=producer_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            yield run
        finally:  # Ctrl-C to every process at once (Bytewax stops on it), SIGKILL what is left after 15 s
            for process in run.processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 15
            for process in run.processes:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.mark.integration
def test_prometheus_scrapes_both_processes_and_sees_readings_processed(scraped_flead):
    job = CONFIG["scrape_configs"][0]["job_name"]
    up = scraped_flead.wait_for(
        f'up{{job="{job}"}}', lambda result: len(result) == 2 and all(s["value"][1] == "1" for s in result)
    )
    assert sorted(series["metric"]["instance"] for series in up) == sorted(scraped_flead.targets)
    active = scraped_flead.prometheus.api("targets")["activeTargets"]
    assert sorted((t["scrapeUrl"], t["health"]) for t in active) == sorted(
        (f"http://{target}/metrics", "up") for target in scraped_flead.targets
    )
    processed = f'sum(rate(flead_events_total{{outcome="processed"}}[{RANGE}]))'
    scraped_flead.wait_for(processed, lambda result: bool(result) and float(result[0]["value"][1]) > 0)


@pytest.mark.integration
@pytest.mark.parametrize("expression", dashboard_expressions(), ids=str)
def test_every_dashboard_query_returns_series(scraped_flead, expression):
    scraped_flead.wait_for(expression.promql, has_a_value)


@pytest.mark.integration
@pytest.mark.parametrize("expression", alert_queries(), ids=str)
def test_every_alert_query_returns_series_and_prometheus_evaluates_the_rule(scraped_flead, expression):
    scraped_flead.wait_for(expression.promql, has_a_value)
    deadline = time.monotonic() + WAIT
    while True:  # "unknown" until its first evaluation, every second
        groups = scraped_flead.prometheus.api("rules", type="alert")["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert set(loaded) == {rule["alert"] for rule in RULES}
        rule = loaded[expression.where]
        if rule["health"] != "unknown" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rule["health"] == "ok" and not rule.get("lastError"), rule
