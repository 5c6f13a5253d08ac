"""deploy/kubernetes/: valid against the Kubernetes schemas, and consistent with the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from starlette.routing import Route

from backchannel.cli.server import hypercorn_config
from backchannel.endpoints.health import DATABASE_TIMEOUT, LIVENESS_PATH, READINESS_PATH
from backchannel.endpoints.routes import routes
from backchannel.settings import Settings, settings_fields

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
# The oldest Kubernetes release the manifests are checked against (schemas ship with
# kubernetes-validate, so the check runs offline).
KUBERNETES_VERSION = "1.30.0"
# The Dockerfile's final USER.
IMAGE_USER = 10001


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(MANIFESTS.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in documents(path.name)
    ]


def one(kind: str) -> dict[str, Any]:
    [found] = [doc for _, doc in resources() if doc["kind"] == kind]
    return found


def deployment_container() -> dict[str, Any]:
    [container] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(("name", "resource"), resources(), ids=lambda v: str(v)[:40])
def test_every_manifest_is_valid_for_kubernetes(name: str, resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    [kustomization] = documents("kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.yaml"}  # applying it would overwrite the real one


def test_the_deployment_runs_three_replicas_rolled_without_losing_capacity() -> None:
    spec = one("Deployment")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_probes_name_routes_the_service_answers() -> None:
    container = deployment_container()
    paths = {r.path for r in routes() if isinstance(r, Route) and "GET" in (r.methods or ())}
    assert container["livenessProbe"]["httpGet"]["path"] == LIVENESS_PATH
    assert container["startupProbe"]["httpGet"]["path"] == LIVENESS_PATH
    assert container["readinessProbe"]["httpGet"]["path"] == READINESS_PATH
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in paths
        assert container[probe]["httpGet"]["port"] == "http"
    # /readyz allows the database DATABASE_TIMEOUT seconds: the probe must wait longer.
    assert container["readinessProbe"]["timeoutSeconds"] > DATABASE_TIMEOUT


def test_the_grace_period_covers_the_shutdown_delay_and_the_graceful_timeout() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    settings = one("ConfigMap")["data"]
    config = hypercorn_config(DEPLOY / "hypercorn.toml")
    assert container_args_config() == "/etc/backchannel/hypercorn.toml"
    needed = int(settings["BACKCHANNEL_SHUTDOWN_DELAY"]) + config.graceful_timeout
    assert pod["terminationGracePeriodSeconds"] > needed


def container_args_config() -> str:
    args = deployment_container()["args"]
    assert args[:2] == ["backchannel", "serve"]
    return str(args[args.index("--hypercorn-config") + 1])


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_image_user_without_privileges_on_a_read_only_root(kind: str) -> None:
    pod = one(kind)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_USER
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert {"requests", "limits"} <= set(container["resources"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_the_migration_job_runs_migrate_from_the_same_image_and_settings() -> None:
    job = one("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["backchannel", "migrate"]
    assert container["image"] == deployment_container()["image"]
    assert container["envFrom"] == deployment_container()["envFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_service_and_disruption_budget_select_the_server_pods_only() -> None:
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    for selector in (
        one("Service")["spec"]["selector"],
        one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one("Deployment")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
        assert not selector.items() <= job_labels.items()
    assert one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    [port] = one("Service")["spec"]["ports"]
    assert port["targetPort"] == deployment_container()["ports"][0]["name"]


def test_the_network_policy_allows_egress_only_to_dns_postgresql_and_https() -> None:
    policy = one("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= job_labels.items()  # the Job too
    egress_ports = {
        (port["protocol"], port["port"]) for rule in policy["egress"] for port in rule["ports"]
    }
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 443)}
    assert all(rule.get("to") for rule in policy["egress"])  # no rule open to everything
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_configmap_and_secret_name_only_real_settings_and_read_as_valid_settings() -> None:
    settings = one("ConfigMap")["data"]
    secret = one("Secret")["stringData"]
    names = {"BACKCHANNEL_" + f.name.upper() for f in settings_fields()}
    assert set(settings) <= names
    assert set(secret) <= names
    assert set(secret) >= {"BACKCHANNEL_DATABASE_URL", "BACKCHANNEL_KEY_ENCRYPTION_KEY"}
    assert not set(settings) & {"BACKCHANNEL_DATABASE_URL", "BACKCHANNEL_KEY_ENCRYPTION_KEY"}
    parsed = Settings.from_env(settings)  # the placeholders in the Secret are not valid
    assert str(parsed.port) == str(deployment_container()["ports"][0]["containerPort"])
    assert parsed.access_log is True
