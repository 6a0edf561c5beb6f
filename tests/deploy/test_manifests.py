"""Offline checks of deploy/: everything parses, has what it must, is pinned and runs as non-root.

The manifests are written in JSON syntax (which is YAML) so that these tests need no YAML
library. No Docker engine or cluster runs here, so images are neither built nor pulled and
nothing is applied: the checks are what can be read from the files.
"""

from __future__ import annotations

import json
import re
import tomllib
from itertools import pairwise
from pathlib import Path

import pytest

from api.settings import SETTINGS as API_SETTINGS
from api.settings import load_api_settings
from dataflows.config import SETTINGS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KNOWN_SETTINGS = {setting.name for setting in SETTINGS} | {setting.name for setting in API_SETTINGS}


def load(path: Path) -> dict:
    return json.loads("\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")))


K8S_DOCS = [load(path) for path in sorted((DEPLOY / "k8s").glob("*.yaml"))]
SECRETS = {doc["metadata"]["name"]: doc for doc in K8S_DOCS if doc["kind"] == "Secret"}


def component(doc: dict) -> str:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


# The dataflow's: one of each kind, and its Secret (the schema owner's is for the migrate).
K8S = {doc["kind"]: doc for doc in K8S_DOCS if doc["kind"] != "Secret" and component(doc) != "api"} | {
    "Secret": SECRETS.get("flead-secrets", {})
}
# The HTTP API's: a Deployment, a Service, a NetworkPolicy and a Secret of its own.
API = {doc["kind"]: doc for doc in K8S_DOCS if component(doc) == "api"}
COMPOSE = load(DEPLOY / "compose.yaml")
SERVICES = COMPOSE["services"]
PROCESSES = sorted((name for name in SERVICES if re.fullmatch(r"flead-\d+", name)), key=lambda n: int(n[6:]))
STATEFULSET = K8S.get("StatefulSet", {})
POD = STATEFULSET.get("spec", {}).get("template", {}).get("spec", {})
CONTAINER = POD.get("containers", [{}])[0]
API_POD = API.get("Deployment", {}).get("spec", {}).get("template", {}).get("spec", {})
API_CONTAINER = API_POD.get("containers", [{}])[0]
PODS = [POD, API_POD]
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
# Every file that configures the deployment (and may name FLEAD settings).
DEPLOYMENT_FILES = [
    DEPLOY / "Dockerfile",
    DEPLOY / "compose.yaml",
    *sorted((DEPLOY / "k8s").glob("*.yaml")),
    *sorted((DEPLOY / "prometheus").glob("*")),
    *sorted((DEPLOY / "compose").rglob("*.*")),
    *sorted((REPO / "grafana" / "provisioning").rglob("*.yaml")),
]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def compose_default(value: str) -> str:
    """The value of ``${NAME:-default}`` when NAME is not set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


# --- Kubernetes ----------------------------------------------------------------------------


def test_every_kubernetes_manifest_parses_and_the_expected_kinds_are_there():
    assert set(K8S) == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "StatefulSet",
        "NetworkPolicy",
    }
    assert set(SECRETS) == {"flead-secrets", "flead-db-owner", "flead-api"}
    assert set(API) == {"Deployment", "Service", "NetworkPolicy", "Secret"}
    namespace = K8S["Namespace"]["metadata"]["name"]
    for doc in K8S_DOCS:
        kind = doc["kind"]
        assert doc["apiVersion"] and doc["metadata"]["name"], kind
        if kind != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, kind
    assert K8S["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_statefulset_lets_bytewax_processes_find_each_other():
    service = K8S["Service"]
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    assert service["spec"]["publishNotReadyAddresses"] is True  # peers resolve before they are ready
    assert STATEFULSET["spec"]["serviceName"] == service["metadata"]["name"]
    assert STATEFULSET["spec"]["podManagementPolicy"] == "Parallel"  # all processes start together
    selector = STATEFULSET["spec"]["selector"]["matchLabels"]
    assert selector.items() <= STATEFULSET["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    env = env_of(CONTAINER)
    # bytewax.run: process id = BYTEWAX_POD_NAME without "BYTEWAX_STATEFULSET_NAME-"
    assert env["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["BYTEWAX_STATEFULSET_NAME"]["value"] == STATEFULSET["metadata"]["name"]
    assert "-i" not in CONTAINER["args"] and "-a" not in CONTAINER["args"]
    # the init container writes one address per replica, pod.service.namespace, into the hostfile
    init = POD["initContainers"][0]
    hostfile = env["BYTEWAX_HOSTFILE_PATH"]["value"]
    script = " ".join(init["command"])
    assert hostfile in script
    dns = f"{STATEFULSET['metadata']['name']}-$i.{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert dns in script
    assert int(env_of(init)["BYTEWAX_REPLICAS"]["value"]) == STATEFULSET["spec"]["replicas"]
    mount = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    shared = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    assert any(hostfile.startswith(path + "/") and shared.get(name) == path for name, path in mount.items())
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "workers")
    assert f":{port}" in script
    assert {"containerPort": port, "name": "workers"} in CONTAINER["ports"]


def test_recovery_state_lives_on_a_volume_per_process():
    claims = [claim["metadata"]["name"] for claim in STATEFULSET["spec"]["volumeClaimTemplates"]]
    args = CONTAINER["args"]
    mounts = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    recovery = args[args.index("-r") + 1]
    assert recovery.startswith(mounts[claims[0]])
    assert {"-s", "-b"} <= set(args)  # bytewax.run needs both with -r
    init = " ".join(POD["initContainers"][0]["command"])
    assert f"bytewax.recovery {recovery}" in init  # initialised once, on the volume


def test_configuration_and_secrets_come_from_a_configmap_and_a_secret():
    sources = CONTAINER["envFrom"]
    assert {"configMapRef": {"name": K8S["ConfigMap"]["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": K8S["Secret"]["metadata"]["name"]}} in sources
    secret, config = K8S["Secret"]["stringData"], K8S["ConfigMap"]["data"]
    assert {"FLEAD_DATABASE_URL", "FLEAD_KAFKA_CONFIG"} <= set(secret)
    assert not set(secret) & set(config)
    assert not any(re.search(r"password|secret|token|://[^/]*:[^/]*@", value, re.I) for value in config.values())
    assert not any(item["name"].startswith("FLEAD_") for item in CONTAINER["env"])  # settings: ConfigMap only


def database_user(url: str) -> str:
    return re.fullmatch(r"postgresql://([^:@/]+)(:[^@]*)?@.*", compose_default(url))[1]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def flags(command: list[str], name: str) -> list[str]:
    """Every value of a repeated option."""
    return [value for option, value in pairwise(command) if option == name]


def test_the_schema_is_migrated_by_its_owner_before_the_dataflow_starts_as_a_writer():
    """An init container runs the migrate with the owner's Secret; the dataflow has only the writer's URL."""
    migrate = next(c for c in POD["initContainers"] if c["name"] == "migrate")
    assert POD["initContainers"][-1] is migrate  # after the hostfile and recovery, before the dataflow
    assert migrate["command"][:3] == ["python", "-m", "sinks.migrate"]
    owner = SECRETS["flead-db-owner"]["stringData"]["FLEAD_DATABASE_URL"]
    writer = K8S["Secret"]["stringData"]["FLEAD_DATABASE_URL"]
    assert flag(migrate["command"], "--writer") == database_user(writer) != database_user(owner)
    assert flag(migrate["command"], "--reader") not in (database_user(writer), database_user(owner))
    # the same FLEAD_DB_* settings as the dataflow: its ConfigMap; the owner's URL, and only there
    assert migrate["envFrom"] == [
        {"configMapRef": {"name": K8S["ConfigMap"]["metadata"]["name"]}},
        {"secretRef": {"name": "flead-db-owner"}},
    ]
    assert set(SECRETS["flead-db-owner"]["stringData"]) == {"FLEAD_DATABASE_URL"}
    assert not [c for c in POD["containers"] if "flead-db-owner" in json.dumps(c)]


def test_probes_resources_and_scrape_annotations():
    assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(CONTAINER)
    for container in POD["containers"] + POD["initContainers"] + API_POD["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]
    annotations = STATEFULSET["spec"]["template"]["metadata"]["annotations"]
    env = env_of(CONTAINER)
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == env["BYTEWAX_DATAFLOW_API_PORT"]["value"]
    assert "BYTEWAX_DATAFLOW_API_ENABLED" in env
    api = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}["api"]
    assert str(api) == annotations["prometheus.io/port"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert CONTAINER[probe]["httpGet"] == {"path": "/metrics", "port": "api"}


def test_network_policy_and_least_privilege_rbac():
    policy = K8S["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["podSelector"]["matchLabels"] == STATEFULSET["spec"]["selector"]["matchLabels"]
    ingress_ports = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert ingress_ports == {9999, 3030}  # workers from each other, /metrics for Prometheus
    egress_ports = {port["port"] for rule in policy["egress"] for port in rule["ports"]}
    assert {9999, 9092, 5432, 53} == egress_ports
    assert K8S["Role"]["rules"] == []  # the dataflow needs nothing from the Kubernetes API
    binding = K8S["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "flead"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flead", "namespace": "flead"}]
    assert K8S["ServiceAccount"]["automountServiceAccountToken"] is False
    assert POD["automountServiceAccountToken"] is False
    assert POD["serviceAccountName"] == K8S["ServiceAccount"]["metadata"]["name"]


# --- settings, images, users ---------------------------------------------------------------


def flead_variables() -> list[tuple[str, str]]:
    """Every FLEAD_* name in any deployment file: set, substituted or merely mentioned."""
    return sorted(
        {
            (str(path.relative_to(REPO)), name)
            for path in DEPLOYMENT_FILES
            for name in re.findall(r"\b(FLEAD_[A-Z0-9_]+)", path.read_text())
        }
    )


def test_the_manifests_set_flead_settings_at_all():
    names = {name for _, name in flead_variables()}
    assert {"FLEAD_INPUT", "FLEAD_KAFKA_BROKERS", "FLEAD_DATABASE_URL", "FLEAD_OUT_DIR"} <= names


@pytest.mark.parametrize(("where", "variable"), flead_variables())
def test_every_flead_variable_a_manifest_names_is_one_the_dataflow_or_the_api_reads(where, variable):
    assert variable in KNOWN_SETTINGS, f"{where} names {variable}, which FLEAD does not read"


def dockerfile_images() -> list[str]:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE, re.M))
    images = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image) for image in images]


def images() -> list[tuple[str, str]]:
    found = [(f"compose {name}", service["image"]) for name, service in SERVICES.items()]
    found += [
        (f"k8s {c['name']}", c["image"]) for pod in PODS for c in pod["containers"] + pod.get("initContainers", [])
    ]
    found += [("Dockerfile", image) for image in dockerfile_images()]
    return found


@pytest.mark.parametrize(("where", "image"), images())
def test_every_image_is_pinned_to_a_version(where, image):
    reference = image.split("@")[0]
    name, _, tag = reference.rpartition(":")
    assert name and "/" not in tag, f"{where}: {image} has no tag"
    assert tag != "latest" and re.fullmatch(r"v?\d+(\.\d+)+[\w.-]*", tag), f"{where}: {image} is not a version"
    if "@" in image:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.split("@")[1]), f"{where}: {image}"


def test_the_image_holds_the_project_and_runs_it_as_a_user():
    stages = DOCKERFILE.split("\nFROM ")
    final = stages[-1]
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root"), "the final stage must end as a non-root user"
    assert re.fullmatch(r"\d+(:\d+)?", user[-1]), "a numeric USER lets Kubernetes check runAsNonRoot"
    assert user[-1].split(":")[0] == str(POD["securityContext"]["runAsUser"])
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {
        source
        for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M)
        for source in [word for word in line.split() if not word.startswith("--")][:-1]
    }
    assert set(packages) <= copied, f"the image must contain the packages {packages}"
    assert re.search(r'^ENTRYPOINT \["python", "-m", "bytewax.run"\]', final, re.M)
    assert re.search(r'^CMD \["dataflows.flead"\]', final, re.M)
    assert "EXPOSE 3030 9999" in final
    # The build context is the repository: its ignore file lets through only what is copied.
    ignore = [line.rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()]
    patterns = [line for line in ignore if line and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {f"!{path}" for path in copied} <= set(patterns)


def test_nothing_runs_as_root():
    containers = [c for pod in PODS for c in pod["containers"] + pod.get("initContainers", [])]
    for scope in (*(pod["securityContext"] for pod in PODS), *(c["securityContext"] for c in containers)):
        assert scope["runAsNonRoot"] is True
        assert scope.get("runAsUser", 1) != 0
    for container in containers:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
    for name, service in SERVICES.items():
        user = service.get("user", "")
        assert user and user.split(":")[0] not in ("0", "root"), f"compose {name} runs as root"
        assert not service.get("privileged"), name


# --- Docker Compose ------------------------------------------------------------------------


def test_compose_brings_up_the_whole_stack_with_several_processes():
    assert {"kafka", "kafka-topics", "timescaledb", "prometheus", "grafana", "producer", "api"} <= set(SERVICES)
    assert len(PROCESSES) >= 2
    addresses = ";".join(f"{name}:9999" for name in PROCESSES)
    for index, name in enumerate(PROCESSES):
        service = SERVICES[name]
        command = " ".join(service["entrypoint"])
        assert f"-i {index} -a '{addresses}'" in command, name  # process id and every peer, in order
        assert f"{name}:/var/lib/flead" in service["volumes"]  # its own recovery state
        assert "-r /var/lib/flead/recovery" in command and "bytewax.recovery /var/lib/flead/recovery" in command
        env = service["environment"]
        assert env["FLEAD_INPUT"] == "kafka" and env["FLEAD_KAFKA_BROKERS"] == "kafka:9092"
        assert "@timescaledb:5432/" in env["FLEAD_DATABASE_URL"]
        assert database_user(env["FLEAD_DATABASE_URL"]) == SERVICES["timescaledb"]["environment"]["WRITER_DB_USER"]
        assert "BYTEWAX_DATAFLOW_API_ENABLED" in env
        assert service["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["producer"]["command"] == ["dataflows.producer"]
    assert SERVICES["producer"]["environment"]["FLEAD_KAFKA_BROKERS"] == "kafka:9092"
    for name in ("producer", *PROCESSES):
        assert SERVICES[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_kafka_runs_kraft_and_the_telemetry_topic_has_a_partition_per_process_at_least():
    env = SERVICES["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env).upper()
    command = SERVICES["kafka-topics"]["command"]
    assert command[command.index("--topic") + 1] == "edge-iiot-stream"
    assert int(compose_default(command[command.index("--partitions") + 1])) >= len(PROCESSES)
    assert SERVICES["kafka-topics"]["image"] == SERVICES["kafka"]["image"]


def test_prometheus_scrapes_every_process():
    config = load(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"{name}:3030" for name in PROCESSES]
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_gets_its_provisioning_and_a_read_only_login():
    grafana = SERVICES["grafana"]
    binds = [m for m in grafana["volumes"] if m.startswith(".")]
    assert all((DEPLOY / m.split(":")[0]).resolve().exists() for m in binds)
    targets = {m.split(":")[1]: m.split(":")[0] for m in binds}
    assert targets["/etc/grafana/provisioning"] == "../grafana/provisioning"
    provider = load(REPO / "grafana" / "provisioning" / "dashboards" / "flead.yaml")["providers"][0]
    assert targets[provider["options"]["path"]] == "../grafana/dashboards"
    # every ${VAR} the provisioning reads is set on the Grafana service
    provisioning = "".join(p.read_text() for p in (REPO / "grafana" / "provisioning").rglob("*.yaml"))
    assert set(re.findall(r"\$\{(\w+)\}", provisioning)) <= set(grafana["environment"])
    # Grafana logs in as the reader that the database's init script creates, not as the owner
    database = SERVICES["timescaledb"]
    assert grafana["environment"]["GRAFANA_DB_USER"] == database["environment"]["GRAFANA_DB_USER"]
    assert grafana["environment"]["GRAFANA_DB_USER"] != database["environment"]["POSTGRES_USER"]
    assert grafana["environment"]["GRAFANA_DB_PASSWORD"] == database["environment"]["GRAFANA_DB_PASSWORD"]
    initdb = next(m for m in database["volumes"] if m.endswith(":/docker-entrypoint-initdb.d:ro"))
    assert (DEPLOY / initdb.split(":")[0] / "10-grafana-reader.sh").exists()


def test_compose_migrates_as_the_owner_and_the_dataflow_writes_as_a_login_that_only_inserts():
    migrate, database = SERVICES["migrate"], SERVICES["timescaledb"]["environment"]
    command = migrate["entrypoint"]
    assert command[:3] == ["python", "-m", "sinks.migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    owner_url = migrate["environment"]["FLEAD_DATABASE_URL"]
    assert database_user(owner_url) == database["POSTGRES_USER"] and "${POSTGRES_PASSWORD" in owner_url
    assert flag(command, "--writer") == database["WRITER_DB_USER"] != database["POSTGRES_USER"]
    assert (
        flag(command, "--reader")
        == database["GRAFANA_DB_USER"]
        == SERVICES["grafana"]["environment"]["GRAFANA_DB_USER"]
    )
    for name in PROCESSES:  # the writer's password, and the same database settings as the migrate
        env = SERVICES[name]["environment"]
        assert "${WRITER_DB_PASSWORD" in env["FLEAD_DATABASE_URL"] and database["WRITER_DB_PASSWORD"].startswith(
            "${WRITER_DB_PASSWORD"
        )
        db_settings = {key: value for key, value in env.items() if key.startswith("FLEAD_DB_")}
        assert db_settings == {
            key: value for key, value in migrate["environment"].items() if key.startswith("FLEAD_DB_")
        }
    assert SERVICES["grafana"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    initdb = next(m for m in SERVICES["timescaledb"]["volumes"] if m.endswith(":/docker-entrypoint-initdb.d:ro"))
    script = (DEPLOY / initdb.split(":")[0] / "20-flead-writer.sh").read_text()
    assert "WRITER_DB_USER" in script and "NOSUPERUSER NOCREATEDB NOCREATEROLE" in script


# --- the HTTP API --------------------------------------------------------------------------

MIGRATE = next((c for c in POD.get("initContainers", []) if c["name"] == "migrate"), {})


def test_kubernetes_runs_the_api_as_a_deployment_with_its_own_read_only_login_and_tokens():
    deployment = API["Deployment"]
    assert API_CONTAINER["command"] == ["python", "-m", "api"]
    assert API_CONTAINER["image"] == CONTAINER["image"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert selector != STATEFULSET["spec"]["selector"]["matchLabels"]  # neither selects the other's pods
    # the dataflow's ConfigMap (the settings the model files record) and the API's own Secret
    assert API_CONTAINER["envFrom"] == [
        {"configMapRef": {"name": K8S["ConfigMap"]["metadata"]["name"]}},
        {"secretRef": {"name": "flead-api"}},
    ]
    secret = API["Secret"]["stringData"]
    assert API["Secret"]["metadata"]["name"] == "flead-api"
    assert set(secret) == {"FLEAD_DATABASE_URL", "FLEAD_API_TOKENS"}
    assert all("CHANGE-ME" in value for value in secret.values())
    bind = env_of(API_CONTAINER)["FLEAD_API_BIND"]["value"]
    settings = load_api_settings({**secret, "FLEAD_API_BIND": bind})  # the API would start with these
    assert settings.tokens and settings.host == "0.0.0.0"
    assert {"name": "http", "containerPort": settings.port} in API_CONTAINER["ports"]
    # its own login: neither the dataflow's writer nor the owner, and granted SELECT by the migrate
    login = database_user(secret["FLEAD_DATABASE_URL"])
    assert login not in (
        database_user(K8S["Secret"]["stringData"]["FLEAD_DATABASE_URL"]),
        database_user(SECRETS["flead-db-owner"]["stringData"]["FLEAD_DATABASE_URL"]),
    )
    assert login in flags(MIGRATE["command"], "--reader")
    # the API's Secret reaches the API only; the dataflow's and the owner's do not reach the API
    assert "flead-api" not in json.dumps(STATEFULSET)
    assert not {"flead-secrets", "flead-db-owner"} & set(re.findall(r'"name": "([^"]+)"', json.dumps(API_POD)))
    assert API_POD["automountServiceAccountToken"] is False


def test_the_api_s_probes_ask_health_and_its_service_reaches_port_8000():
    # ready while /health answers (it says 503 while the database is away); alive while it listens,
    # so that a database outage takes the pods out of the Service without restarting them
    assert API_CONTAINER["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert API_CONTAINER["livenessProbe"]["tcpSocket"] == {"port": "http"}
    service = API["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["selector"] == API["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert any(mount["mountPath"] == "/tmp" for mount in API_CONTAINER["volumeMounts"])  # read-only root


def test_the_api_s_network_policy_lets_in_port_8000_only_and_out_to_the_database_and_dns():
    policy = API["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == API["Deployment"]["spec"]["selector"]["matchLabels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert [port for rule in policy["ingress"] for port in rule["ports"]] == [{"port": 8000, "protocol": "TCP"}]
    assert {port["port"] for rule in policy["egress"] for port in rule["ports"]} == {5432, 53}
    database = next(rule for rule in policy["egress"] if rule["ports"] == [{"port": 5432, "protocol": "TCP"}])
    dataflow_database = next(
        rule for rule in K8S["NetworkPolicy"]["spec"]["egress"] if rule["ports"][0]["port"] == 5432
    )
    assert database["to"] == dataflow_database["to"]  # the same database as the dataflow's


def test_compose_runs_the_api_from_the_image_as_its_own_read_only_login_on_loopback():
    api, database = SERVICES["api"], SERVICES["timescaledb"]["environment"]
    assert api["entrypoint"] == ["python", "-m", "api"]
    assert (api["image"], api["build"]) == (SERVICES["flead-0"]["image"], SERVICES["flead-0"]["build"])
    assert api["ports"] == ["127.0.0.1:8000:8000"]  # published on the host's loopback only
    env = api["environment"]
    assert "${API_TOKENS" in env["FLEAD_API_TOKENS"] and "CHANGE-ME" in env["FLEAD_API_TOKENS"]
    settings = load_api_settings({name: compose_default(value) for name, value in env.items()})
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert database_user(env["FLEAD_DATABASE_URL"]) == database["API_DB_USER"]
    assert database["API_DB_USER"] not in (database["POSTGRES_USER"], database["WRITER_DB_USER"])
    assert "${API_DB_PASSWORD" in env["FLEAD_DATABASE_URL"] and database["API_DB_PASSWORD"].startswith(
        "${API_DB_PASSWORD"
    )
    assert "@timescaledb:5432/" in env["FLEAD_DATABASE_URL"]
    assert flags(SERVICES["migrate"]["entrypoint"], "--reader") == [
        database["GRAFANA_DB_USER"],
        database["API_DB_USER"],
    ]
    assert api["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    initdb = next(m for m in SERVICES["timescaledb"]["volumes"] if m.endswith(":/docker-entrypoint-initdb.d:ro"))
    script = (DEPLOY / initdb.split(":")[0] / "30-flead-api.sh").read_text()
    assert "API_DB_USER" in script and "NOSUPERUSER NOCREATEDB NOCREATEROLE" in script
