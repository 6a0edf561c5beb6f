"""Offline checks of deploy/: everything parses, has what it must, is pinned and runs as non-root.

The manifests are written in JSON syntax (which is YAML) so that these tests need no YAML
library. No Docker engine runs here, so images are neither built nor pulled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dataflows.config import SETTINGS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KNOWN_SETTINGS = {setting.name for setting in SETTINGS}


def load(path: Path) -> dict:
    return json.loads("\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")))


K8S = {load(path)["kind"]: load(path) for path in sorted((DEPLOY / "k8s").glob("*.yaml"))}
COMPOSE = load(DEPLOY / "compose.yaml")
STATEFULSET = K8S.get("StatefulSet", {})
POD = STATEFULSET.get("spec", {}).get("template", {}).get("spec", {})


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
    assert all(doc["apiVersion"] and doc["metadata"]["name"] for doc in K8S.values())


def test_the_statefulset_lets_bytewax_processes_find_each_other():
    service = K8S["Service"]
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    assert STATEFULSET["spec"]["serviceName"] == service["metadata"]["name"]
    env = {item["name"]: item for item in POD["containers"][0]["env"]}
    assert env["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["BYTEWAX_STATEFULSET_NAME"]["value"] == STATEFULSET["metadata"]["name"]
    hostfile = env["BYTEWAX_HOSTFILE_PATH"]["value"]
    init = " ".join(POD["initContainers"][0]["command"])
    assert hostfile in init and f".{service['metadata']['name']}." in init  # writes one address per pod


def test_recovery_state_lives_on_a_volume_per_process():
    claims = [claim["metadata"]["name"] for claim in STATEFULSET["spec"]["volumeClaimTemplates"]]
    args = POD["containers"][0]["args"]
    mounts = {m["name"]: m["mountPath"] for m in POD["containers"][0]["volumeMounts"]}
    assert args[args.index("-r") + 1].startswith(mounts[claims[0]])


def test_configuration_and_secrets_come_from_a_configmap_and_a_secret():
    sources = POD["containers"][0]["envFrom"]
    assert {"configMapRef": {"name": K8S["ConfigMap"]["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": K8S["Secret"]["metadata"]["name"]}} in sources
    assert "FLEAD_DATABASE_URL" in K8S["Secret"]["stringData"]
    assert not any("password" in value.lower() for value in K8S["ConfigMap"]["data"].values())


def test_probes_resources_and_scrape_annotations():
    container = POD["containers"][0]
    assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(container)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    annotations = STATEFULSET["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert annotations["prometheus.io/port"] == env["BYTEWAX_DATAFLOW_API_PORT"]


def test_network_policy_and_least_privilege_rbac():
    policy = K8S["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert K8S["Role"]["rules"] == []  # the dataflow needs nothing from the Kubernetes API
    assert K8S["ServiceAccount"]["automountServiceAccountToken"] is False
    assert POD["serviceAccountName"] == K8S["ServiceAccount"]["metadata"]["name"]


def flead_variables() -> list[tuple[str, str]]:
    found = []
    for kind, doc in K8S.items():
        found += [(kind, name) for name in doc.get("data", {}) | doc.get("stringData", {})]
    for container in POD["containers"] + POD["initContainers"]:
        found += [("StatefulSet", item["name"]) for item in container.get("env", [])]
    for name, service in COMPOSE["services"].items():
        found += [(f"compose {name}", variable) for variable in service.get("environment", {})]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    found += [("Dockerfile", variable) for variable in re.findall(r"\b(FLEAD_[A-Z_]+)=", dockerfile)]
    return [(where, name) for where, name in found if name.startswith("FLEAD_")]


@pytest.mark.parametrize(("where", "variable"), flead_variables())
def test_every_flead_variable_a_manifest_sets_is_one_the_dataflow_reads(where, variable):
    grafana_only = {
        "FLEAD_DB_HOST",
        "FLEAD_DB_PORT",
        "FLEAD_DB_USER",
        "FLEAD_DB_NAME",
        "FLEAD_DB_SSLMODE",
        "FLEAD_DB_PASSWORD",
        "FLEAD_PROMETHEUS_URL",
    }  # read by grafana's provisioning, not FLEAD
    if where == "compose grafana":
        assert variable in grafana_only
    else:
        assert variable in KNOWN_SETTINGS, f"{where} sets {variable}, which FLEAD does not read"


def images() -> list[tuple[str, str]]:
    found = [(f"compose {name}", service["image"]) for name, service in COMPOSE["services"].items()]
    found += [(c["name"], c["image"]) for c in POD["containers"] + POD["initContainers"]]
    found += [
        ("Dockerfile", line.split()[1])
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("FROM ")
    ]
    return found


@pytest.mark.parametrize(("where", "image"), images())
def test_every_image_is_pinned_to_a_version(where, image):
    name, _, tag = image.rpartition("@")[0].rpartition(":") if "@" in image else image.rpartition(":")
    assert name and tag and tag != "latest" and re.search(r"\d", tag), f"{where}: {image} is not pinned"


def test_nothing_runs_as_root():
    assert re.search(r"^USER (?!0\b|root\b)\d+", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert POD["securityContext"]["runAsNonRoot"] is True and POD["securityContext"]["runAsUser"] != 0
    for container in POD["containers"] + POD["initContainers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] and not context["allowPrivilegeEscalation"]
    for name, service in COMPOSE["services"].items():
        user = service.get("user", "")
        assert user and user.split(":")[0] not in ("0", "root"), f"compose {name} runs as root"


def test_compose_brings_up_the_whole_stack_with_several_processes():
    services = COMPOSE["services"]
    assert {"kafka", "timescaledb", "prometheus", "grafana", "producer"} <= set(services)
    processes = sorted(name for name in services if re.fullmatch(r"flead-\d+", name))
    assert len(processes) >= 2
    scrape = load(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"][0]["static_configs"][0]["targets"]
    assert scrape == [f"{name}:3030" for name in processes]
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "grafana/provisioning" in grafana_mounts and "grafana/dashboards" in grafana_mounts
    assert all((DEPLOY / mount.split(":")[0]).resolve().exists() for mount in services["grafana"]["volumes"])
