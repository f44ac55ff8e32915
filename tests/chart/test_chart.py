"""The Helm chart (deploy/helm/collabnet), rendered offline with Helm's own library (helm-python-sdk).

Each rendering (the default values and the production example, for every supported Kubernetes version) is
linted strictly, every object in it is checked against Kubernetes' own schemas (kubernetes-validate), and the
objects are checked against the chart's rules: hardened non-root containers with resources and probes,
network policies around every pod, no Secret and no secret value, migrations as hooks that work on a first
install. The checks iterate over whatever the chart renders, so templates added later are covered too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from helm_python import _native

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/collabnet"
PRODUCTION = REPO / "deploy/helm/values-production.yaml"
RELEASE = "collabnet"
NAMESPACE = "commerce"
KUBE_VERSIONS = ("1.29.0", "1.30.0", "1.31.0")
SERVICES = ("identity", "community", "reviews", "supplychain", "improvement", "analytics", "gateway")
GRPC_SERVICES = tuple(name for name in SERVICES if name != "gateway")
CALLERS = {
    "identity": {"gateway", "reviews", "supplychain"},
    "community": {"gateway"},
    "reviews": {"gateway"},
    "supplychain": {"gateway"},
    "improvement": {"gateway"},
    "analytics": {"gateway"},
}
# Services that may open HTTPS connections outside the cluster: the gateway's webhooks, analytics' exports.
INTERNET_EGRESS = {"gateway", "analytics"}
# Custom resources kubernetes-validate has no schema for: checked by hand in check_custom_resource.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
SECRET_ENV = {
    "COLLABNET_DATABASE_URL",
    "COLLABNET_NATS_USER",
    "COLLABNET_NATS_PASSWORD",
    "COLLABNET_PRINCIPAL_SIGNING_KEY",
    "COLLABNET_PSEUDONYM_KEY",
}
WORKLOAD_KINDS = {"Deployment", "Job"}
SENTINEL = "s3ntinel-Secret-Value"

Obj = dict[str, Any]


def production_values() -> Obj:
    return helm.values_from_yaml(PRODUCTION.read_text())


VALUES: dict[str, Obj] = {"default": {}, "production": production_values()}


@functools.cache
def _render(values_json: str, kube_version: str) -> tuple[Obj, ...]:
    # Chart.render has no kube_version; the library's render options do (they set .Capabilities).
    options = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True, "kube_version": f"v{kube_version}"}
    with helm.Chart.load(CHART) as chart:
        rendered: dict[str, str] = json.loads(
            _native.call_string("helm_render", chart._raw(), values_json, json.dumps(options))
        )
    objects: list[Obj] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                assert isinstance(document, dict), f"{path}: not an object"
                document["__template__"] = path
                objects.append(document)
    return tuple(objects)


def render(values: Obj | None = None, kube_version: str = KUBE_VERSIONS[-1]) -> list[Obj]:
    return [dict(obj) for obj in _render(json.dumps(values or {}, sort_keys=True), kube_version)]


def merge(base: Obj, override: Obj) -> Obj:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def full(service: str) -> str:
    return f"{RELEASE}-{service}"


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    found: list[Obj] = spec["containers"] + spec.get("initContainers", [])
    return found


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes LabelSelector matches ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def env_names(workload: Obj, objects: list[Obj]) -> dict[str, dict[str, str]]:
    """Per container, every env var it gets (its env entries and the keys of ConfigMaps it takes whole),
    with the literal value where there is one ("<ref>" for a valueFrom)."""
    result: dict[str, dict[str, str]] = {}
    for container in containers(workload):
        names: dict[str, str] = {}
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, "a whole Secret as env hides which settings are secret"
            config_map = named(objects, "ConfigMap", source["configMapRef"]["name"])
            names.update(config_map.get("data", {}))
        for entry in container.get("env", []):
            names[entry["name"]] = entry.get("value", "<ref>")
        result[container["name"]] = names
    return result


def hook_events(obj: Obj) -> set[str]:
    hook = obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return {event.strip() for event in hook.split(",") if event.strip()}


def hook_weight(obj: Obj) -> int:
    return int(obj["metadata"].get("annotations", {}).get("helm.sh/hook-weight", "0"))


@pytest.fixture(params=[(name, version) for name in VALUES for version in KUBE_VERSIONS], ids=lambda p: "-".join(p))
def rendering(request: pytest.FixtureRequest) -> tuple[str, str, list[Obj]]:
    name, version = request.param
    return name, version, render(VALUES[name], version)


@pytest.fixture(params=list(VALUES))
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return render(VALUES[request.param])


# --- Helm -------------------------------------------------------------------------------------------


def test_chart_metadata() -> None:
    with helm.Chart.load(CHART) as chart:
        metadata = chart.metadata
        assert chart.schema is not None
    assert metadata["apiVersion"] == "v2"
    assert metadata["kubeVersion"] == ">=1.29.0-0"
    assert metadata["appVersion"] == "0.1.0"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_name", list(VALUES))
def test_helm_lint_strict_finds_no_error_or_warning(values_name: str, kube_version: str) -> None:
    report = helm.lint(CHART, VALUES[values_name], strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    assert report["errors"] == []
    # Severity 1 is information (e.g. "icon is recommended"); 2 warnings and 3 errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_kube_version_option_reaches_helm() -> None:
    # What the renderings per version rely on: Helm parses the option (and sets .Capabilities from it).
    options = json.dumps({"name": RELEASE, "kube_version": "not-a-version"})
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        _native.call_string("helm_render", chart._raw(), "{}", options)


# --- Kubernetes schemas -----------------------------------------------------------------------------


def check_custom_resource(obj: Obj) -> None:
    assert obj["metadata"]["name"]
    assert isinstance(obj.get("spec"), dict) and obj["spec"], f"{obj['kind']}: no spec"
    if obj["kind"] == "ServiceMonitor":
        assert obj["spec"]["selector"]
        assert obj["spec"]["endpoints"]
    if obj["kind"] == "PrometheusRule":
        for group in obj["spec"]["groups"]:
            assert group["name"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule)
                assert isinstance(rule["expr"], str) and rule["expr"].strip()


def test_every_object_is_valid_for_its_kubernetes_version(rendering: tuple[str, str, list[Obj]]) -> None:
    _, version, objects = rendering
    assert objects
    for obj in objects:
        obj = {key: value for key, value in obj.items() if key != "__template__"}
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            check_custom_resource(obj)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message} at {list(exc.path)}")


def test_every_object_has_the_release_labels_and_a_name_of_the_release(objects: list[Obj]) -> None:
    for obj in objects:
        metadata = obj["metadata"]
        assert metadata["name"].startswith(RELEASE), metadata["name"]
        assert len(metadata["name"]) <= 63
        labels = metadata.get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "collabnet", metadata["name"]
        assert labels.get("app.kubernetes.io/instance") == RELEASE, metadata["name"]
        assert labels.get("app.kubernetes.io/version"), metadata["name"]
        assert labels.get("helm.sh/chart", "").startswith("collabnet-"), metadata["name"]


# --- the services -----------------------------------------------------------------------------------


def test_each_service_gets_its_objects_from_the_one_template(objects: list[Obj]) -> None:
    for service in SERVICES:
        for kind in ("ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"):
            obj = named(objects, kind, full(service))
            assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == service
            assert obj["__template__"].endswith("templates/services.yaml")
        deployment = named(objects, "Deployment", full(service))
        assert selects(deployment["spec"]["selector"], pod_labels(deployment))
        assert pod_labels(deployment)["app.kubernetes.io/component"] == service
        (container,) = pod_spec(deployment)["containers"]
        assert container["command"] == ["python", "-m", f"collabnet_{service}", "serve"]
        assert container["image"].endswith(":0.1.0")
        service_obj = named(objects, "Service", full(service))
        assert service_obj["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_every_container_is_hardened_and_has_resources(objects: list[Obj]) -> None:
    workloads = [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]
    assert len(of_kind(workloads, "Deployment")) == len(SERVICES)
    assert len(of_kind(workloads, "Job")) == len(SERVICES)
    for workload in workloads:
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = pod_spec(workload)
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 10001, where
        assert pod["securityContext"]["runAsGroup"] == 10001, where
        assert pod["securityContext"]["fsGroup"] == 10001, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for container in containers(workload):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context.get("runAsUser", 10001) != 0, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert not context["capabilities"].get("add"), where
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, f"{where}: {bound}"
            # The root filesystem is read-only: the state dir and /tmp are emptyDirs.
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            state_dir = env_names(workload, objects)[container["name"]]["COLLABNET_STATE_DIR"]
            assert "emptyDir" in volumes[mounts[state_dir]], where


def test_every_deployment_has_startup_readiness_and_liveness_probes(objects: list[Obj]) -> None:
    for deployment in of_kind(objects, "Deployment"):
        service = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        (container,) = containers(deployment)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            handler = container[probe]
            if service == "gateway":
                assert handler["httpGet"]["port"] in ("http", ports["http"])
                expected = "/readyz" if probe == "readinessProbe" else "/healthz"
                assert handler["httpGet"]["path"] == expected
            else:
                assert handler["grpc"]["port"] == ports["grpc"]
                # Readiness follows the database and NATS; startup and liveness only the process.
                expected = "" if probe == "readinessProbe" else "liveness"
                assert handler["grpc"].get("service", "") == expected, (service, probe)
        assert container["livenessProbe"]["failureThreshold"] * container["livenessProbe"]["periodSeconds"] >= 30


def test_every_service_port_targets_a_container_port(objects: list[Obj]) -> None:
    for service_obj in of_kind(objects, "Service"):
        deployments = [
            d
            for d in of_kind(objects, "Deployment")
            if selects({"matchLabels": service_obj["spec"]["selector"]}, pod_labels(d))
        ]
        assert len(deployments) == 1
        container_ports = {port["name"] for container in containers(deployments[0]) for port in container["ports"]}
        for port in service_obj["spec"]["ports"]:
            assert port["targetPort"] in container_ports


def test_settings_production_requires_are_given_and_secrets_come_from_secret_refs(objects: list[Obj]) -> None:
    for workload in [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]:
        for container in containers(workload):
            env = env_names(workload, objects)[container["name"]]
            assert env["COLLABNET_ENV"] == "production"
            assert env["COLLABNET_MIGRATE_ON_START"] == "false"
            assert env["COLLABNET_LOG_FORMAT"] == "json"
            assert {"COLLABNET_DATABASE_URL", "COLLABNET_NATS_URL", "COLLABNET_PRINCIPAL_SIGNING_KEY"} <= set(env)
            for entry in container.get("env", []):
                if entry["name"] in SECRET_ENV:
                    assert set(entry) == {"name", "valueFrom"}, entry
                    assert set(entry["valueFrom"]) == {"secretKeyRef"}, entry
    for config_map in of_kind(objects, "ConfigMap"):
        assert not SECRET_ENV & set(config_map.get("data", {})), config_map["metadata"]["name"]


def test_analytics_alone_reads_the_pseudonym_key_from_its_secret(objects: list[Obj]) -> None:
    workloads = [(d["metadata"]["labels"]["app.kubernetes.io/component"], d) for d in of_kind(objects, "Deployment")]
    workloads += list(_jobs_by_service(objects).items())
    for service, workload in workloads:
        (container,) = containers(workload)
        refs = {e["name"]: e["valueFrom"].get("secretKeyRef") for e in container.get("env", []) if "valueFrom" in e}
        if service == "analytics":
            assert refs["COLLABNET_PSEUDONYM_KEY"] == {"name": "collabnet-analytics", "key": "analytics-pseudonym-key"}
        else:
            assert "COLLABNET_PSEUDONYM_KEY" not in refs, (workload["kind"], service)
    chosen = render({"analytics": {"pseudonymKey": {"existingSecret": "pseudonyms", "key": "current"}}})
    (container,) = containers(named(chosen, "Deployment", full("analytics")))
    (entry,) = [e for e in container["env"] if e["name"] == "COLLABNET_PSEUDONYM_KEY"]
    assert entry["valueFrom"]["secretKeyRef"] == {"name": "pseudonyms", "key": "current"}


def test_grpc_services_listen_on_one_port_and_callers_know_their_addresses(objects: list[Obj]) -> None:
    configs = {service: named(objects, "ConfigMap", full(service))["data"] for service in SERVICES}
    for service in GRPC_SERVICES:
        assert configs[service]["COLLABNET_GRPC_HOST"] == "0.0.0.0"
        assert configs[service]["COLLABNET_GRPC_PORT"] == "50051"
    assert configs["gateway"]["COLLABNET_HTTP_HOST"] == "0.0.0.0"
    assert configs["gateway"]["COLLABNET_HTTP_PORT"] == "8080"
    json.loads(configs["gateway"]["COLLABNET_TRUSTED_PARTNERS"])
    float(configs["gateway"]["COLLABNET_RATE_LIMIT_PER_SECOND"])
    for callee, callers in CALLERS.items():
        for service in SERVICES:
            address = configs[service].get(f"COLLABNET_{callee.upper()}_ADDRESS")
            if service not in callers:
                assert address is None, (service, callee)
                continue
            assert address == f"{full(callee)}:50051"
            target = named(objects, "Service", full(callee))
            assert 50051 in [port["port"] for port in target["spec"]["ports"]]


def test_pods_restart_when_their_configuration_changes(objects: list[Obj]) -> None:
    for deployment in of_kind(objects, "Deployment"):
        annotation = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotation)
    before = render({})
    after = render({"services": {"reviews": {"config": {"COLLABNET_OUTBOX_BATCH_SIZE": "50"}}}})
    changed = {
        service
        for service in SERVICES
        if named(before, "Deployment", full(service))["spec"]["template"]["metadata"]["annotations"]
        != named(after, "Deployment", full(service))["spec"]["template"]["metadata"]["annotations"]
    }
    assert changed == {"reviews"}
    assert named(after, "ConfigMap", full("reviews"))["data"]["COLLABNET_OUTBOX_BATCH_SIZE"] == "50"


def test_telemetry_settings_come_from_values() -> None:
    production = named(render(VALUES["production"]), "ConfigMap", full("reviews"))["data"]
    telemetry = VALUES["production"]["telemetry"]
    assert production["OTEL_EXPORTER_OTLP_ENDPOINT"] == telemetry["otlpEndpoint"]
    assert production["OTEL_EXPORTER_OTLP_PROTOCOL"] == telemetry["otlpProtocol"]
    assert production["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert float(production["OTEL_TRACES_SAMPLER_ARG"]) == telemetry["samplingRatio"]
    # Without a collector no spans are recorded (the kit would otherwise write them to the emptyDir).
    default = named(render({}), "ConfigMap", full("reviews"))["data"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in default
    assert default["OTEL_TRACES_SAMPLER"] == "always_off"


def test_every_service_keeps_its_streams_with_the_replicas_of_the_values() -> None:
    for values, replicas in ((VALUES["default"], "3"), ({"nats": {"streamReplicas": 1}}, "1")):
        objects = render(values)
        for config_map in of_kind(objects, "ConfigMap"):
            if "COLLABNET_NATS_URL" in config_map["data"]:
                assert config_map["data"]["COLLABNET_STREAM_REPLICAS"] == replicas


# --- scaling and disruption -------------------------------------------------------------------------


def test_autoscaling_and_disruption_budgets(objects: list[Obj]) -> None:
    autoscalers = {hpa["spec"]["scaleTargetRef"]["name"]: hpa for hpa in of_kind(objects, "HorizontalPodAutoscaler")}
    budgets = of_kind(objects, "PodDisruptionBudget")
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        hpa = autoscalers.get(name)
        if hpa is None:
            assert deployment["spec"]["replicas"] >= 1
        else:
            # The HPA owns the replica count: a fixed one would fight it on every upgrade.
            assert "replicas" not in deployment["spec"]
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
            assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        matching = [pdb for pdb in budgets if selects(pdb["spec"]["selector"], pod_labels(deployment))]
        assert len(matching) == 1, name
        assert len({"minAvailable", "maxUnavailable"} & set(matching[0]["spec"])) == 1
        constraints = pod_spec(deployment)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert all(selects(c["labelSelector"], pod_labels(deployment)) for c in constraints)


def test_production_scales_every_service_with_an_autoscaler() -> None:
    objects = render(VALUES["production"])
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(objects, "HorizontalPodAutoscaler")} == {
        full(service) for service in SERVICES
    }
    assert all(hpa["spec"]["minReplicas"] >= 3 for hpa in of_kind(objects, "HorizontalPodAutoscaler"))


def test_a_service_can_turn_off_what_defaults_turn_on() -> None:
    # A plain mergeOverwrite would keep the default's true here.
    objects = render(
        {
            "defaults": {"autoscaling": {"enabled": True}},
            "services": {
                "gateway": {"podDisruptionBudget": {"enabled": False}, "autoscaling": {"enabled": False}},
                "reviews": {"podDisruptionBudget": {"minAvailable": "50%"}, "replicas": 0},
            },
        }
    )
    assert full("gateway") not in {pdb["metadata"]["name"] for pdb in of_kind(objects, "PodDisruptionBudget")}
    assert named(objects, "Deployment", full("gateway"))["spec"]["replicas"] == 2
    assert full("gateway") not in {h["metadata"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    reviews_pdb = named(objects, "PodDisruptionBudget", full("reviews"))["spec"]
    assert reviews_pdb["minAvailable"] == "50%" and "maxUnavailable" not in reviews_pdb


def test_a_disabled_service_is_gone_and_no_longer_called() -> None:
    objects = render({"services": {"reviews": {"enabled": False}}})
    assert not [obj for obj in objects if obj["metadata"]["name"].startswith(full("reviews"))]
    assert "COLLABNET_REVIEWS_ADDRESS" not in named(objects, "ConfigMap", full("gateway"))["data"]
    for policy in of_kind(objects, "NetworkPolicy"):
        assert "reviews" not in json.dumps(policy["spec"])


# --- network policies -------------------------------------------------------------------------------


def _policies_for(objects: list[Obj], labels: dict[str, str]) -> list[Obj]:
    return [np for np in of_kind(objects, "NetworkPolicy") if selects(np["spec"]["podSelector"], labels)]


def _port_numbers(rule: Obj, container_ports: dict[str, int]) -> set[int]:
    return {port["port"] if isinstance(port["port"], int) else container_ports[port["port"]] for port in rule["ports"]}


def test_every_pod_is_behind_a_default_deny_and_a_policy_of_its_own(objects: list[Obj]) -> None:
    for workload in [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]:
        policies = _policies_for(objects, pod_labels(workload))
        where = workload["metadata"]["name"]
        assert policies, where
        deny = [np for np in policies if not np["spec"].get("ingress") and not np["spec"].get("egress")]
        assert any(set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"} for np in deny), where
        assert any(np["spec"].get("egress") for np in policies), where


def test_grpc_ports_are_open_to_their_callers_only(objects: list[Obj]) -> None:
    for service, callers in CALLERS.items():
        deployment = named(objects, "Deployment", full(service))
        ports = {p["name"]: p["containerPort"] for c in containers(deployment) for p in c["ports"]}
        allowed: set[str] = set()
        for policy in _policies_for(objects, pod_labels(deployment)):
            for rule in policy["spec"].get("ingress", []):
                if ports["grpc"] not in _port_numbers(rule, ports):
                    continue
                assert rule.get("from"), f"{service}: gRPC port open to anyone"
                for peer in rule["from"]:
                    assert set(peer) == {"podSelector"}, f"{service}: gRPC port open beyond the release"
                    for caller in SERVICES:
                        caller_labels = pod_labels(named(objects, "Deployment", full(caller)))
                        if selects(peer["podSelector"], caller_labels):
                            allowed.add(caller)
                    assert not selects(peer["podSelector"], pod_labels(of_kind(objects, "Job")[0]))
        assert allowed == callers, service


def test_callers_may_reach_their_callees_and_everyone_dns_nats_and_the_database(objects: list[Obj]) -> None:
    for service in SERVICES:
        deployment = named(objects, "Deployment", full(service))
        egress = [
            rule for np in _policies_for(objects, pod_labels(deployment)) for rule in np["spec"].get("egress", [])
        ]
        reachable_ports = {port["port"] for rule in egress for port in rule["ports"]}
        assert {53, 4222, 5432} <= reachable_ports, service
        assert any({"port": 53, "protocol": "UDP"} in rule["ports"] for rule in egress)
        for callee, callers in CALLERS.items():
            callee_labels = pod_labels(named(objects, "Deployment", full(callee)))
            reaches = any(
                50051 in {p["port"] for p in rule["ports"]}
                and (
                    "to" not in rule
                    or any(
                        set(peer) == {"podSelector"} and selects(peer["podSelector"], callee_labels)
                        for peer in rule["to"]
                    )
                )
                for rule in egress
            )
            assert reaches == (service in callers), (service, callee)
        internet = [r for r in egress for peer in r.get("to", []) if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"]
        if service in INTERNET_EGRESS:
            assert internet and all({p["port"] for p in r["ports"]} == {443} for r in internet)
        else:
            assert not internet, service


def test_the_gateway_is_the_only_way_in() -> None:
    production = render(VALUES["production"])
    (ingress,) = of_kind(production, "Ingress")
    backends = {
        path["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]
    }
    assert backends == {full("gateway")}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"]
    for values in VALUES.values():
        objects = render(values)
        assert all(s["spec"]["type"] == "ClusterIP" for s in of_kind(objects, "Service"))
        # gRPC services are headless, so callers see every pod and balance calls over them.
        for service_obj in of_kind(objects, "Service"):
            headless = service_obj["spec"].get("clusterIP") == "None"
            assert headless == (service_obj["metadata"]["labels"]["app.kubernetes.io/component"] != "gateway")
        gateway = named(objects, "NetworkPolicy", full("gateway"))
        http_rules = [r for r in gateway["spec"]["ingress"] if 8080 in {p["port"] for p in r["ports"]}]
        assert len(http_rules) == 1
        selector = values.get("networkPolicy", {}).get("ingressController")
        if selector:
            assert http_rules[0]["from"] == [selector]
        else:
            assert "from" not in http_rules[0]  # no selector set: anyone on the HTTP port
    assert not of_kind(render({}), "Ingress")  # off by default


def test_metrics_ports_are_open_to_monitoring_only(objects: list[Obj]) -> None:
    for deployment in of_kind(objects, "Deployment"):
        ports = {p["name"]: p["containerPort"] for c in containers(deployment) for p in c["ports"]}
        rules = [
            rule
            for np in _policies_for(objects, pod_labels(deployment))
            for rule in np["spec"].get("ingress", [])
            if ports["metrics"] in _port_numbers(rule, ports)
        ]
        assert len(rules) == 1
        assert rules[0]["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]


# --- secrets ----------------------------------------------------------------------------------------


def test_no_secret_is_rendered_and_no_url_carries_a_password(objects: list[Obj]) -> None:
    assert not of_kind(objects, "Secret")
    text = json.dumps(objects)
    assert not re.search(r"://[^/\s\"@]+:[^@\s\"]+@", text)
    assert SENTINEL not in text
    referenced = {
        ref["secretKeyRef"]["name"]
        for workload in objects
        if workload["kind"] in WORKLOAD_KINDS
        for container in containers(workload)
        for entry in container.get("env", [])
        if (ref := entry.get("valueFrom")) and "secretKeyRef" in ref
    }
    assert referenced  # secrets by reference only, to Secrets made outside the chart


@pytest.mark.parametrize(
    "expression",
    [
        f"database.url=postgresql+asyncpg://app:{SENTINEL}@db:5432/identity",
        f"database.password={SENTINEL}",
        f"services.identity.database.url=postgresql+asyncpg://app:{SENTINEL}@db:5432/identity",
        f"services.identity.config.COLLABNET_DATABASE_URL=postgresql://app:{SENTINEL}@db/identity",
        f"nats.password={SENTINEL}",
        f"nats.url=nats://app:{SENTINEL}@nats:4222",
        f"principalSigning.value={SENTINEL}",
        f"analytics.pseudonymKey.value={SENTINEL}",
        f"services.analytics.config.COLLABNET_PSEUDONYM_KEY={SENTINEL}",
        f"services.analytics.extraEnv[0].name=COLLABNET_PSEUDONYM_KEY,services.analytics.extraEnv[0].value={SENTINEL}",
        f"telemetry.otlpEndpoint=https://app:{SENTINEL}@otel:4318",
        f"defaults.extraEnv[0].name=COLLABNET_PRINCIPAL_SIGNING_KEY,defaults.extraEnv[0].value={SENTINEL}",
        f"services.gateway.extraEnv[0].name=COLLABNET_NATS_PASSWORD,services.gateway.extraEnv[0].value={SENTINEL}",
    ],
)
def test_the_values_have_no_place_for_a_secret(expression: str) -> None:
    values = helm.parse_set_string(expression)
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError):
        render(values)


@pytest.mark.parametrize(
    "expression",
    [
        "services.reviews.replicas=three",
        "monitoring.prometheus.port=x",
        "services.reviews.replica=3",
        "monitoring.prometheus.enable=true",
        "services.search.enabled=true",
        "services.reviews.kind=rest",
        "services.reviews.callers={gateway,nobody}",
        "defaults.autoscaling.enabled=yes",
        "defaults.podDisruptionBudget.maxUnavailable=half",
        "ingress.hosts[0].paths[0].pathType=Anything",
        "telemetry.samplingRatio=2",
        "image.pullPolicy=Sometimes",
    ],
)
def test_the_schema_rejects_typos_and_wrong_types(expression: str) -> None:
    values = helm.parse_set_string(expression)
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(chart.merge_values(values))
        chart.validate_schema(chart.merge_values({}))
        chart.validate_schema(chart.merge_values(VALUES["production"]))


# --- service accounts -------------------------------------------------------------------------------


def test_no_service_account_token_is_mounted(objects: list[Obj]) -> None:
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind(objects, "ServiceAccount")}
    assert all(sa["automountServiceAccountToken"] is False for sa in accounts.values())
    for workload in [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]:
        pod = pod_spec(workload)
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] in accounts
    for service in SERVICES:
        assert pod_spec(named(objects, "Deployment", full(service)))["serviceAccountName"] == full(service)


# --- migrations -------------------------------------------------------------------------------------


def _jobs_by_service(objects: list[Obj]) -> dict[str, Obj]:
    jobs: dict[str, Obj] = {}
    for job in of_kind(objects, "Job"):
        (container,) = containers(job)
        assert container["command"][:2] == ["python", "-m"] and container["command"][-1] == "migrate"
        jobs[container["command"][2].removeprefix("collabnet_")] = job
    return jobs


def test_each_service_with_a_database_is_migrated_by_a_hook_before_it_starts(objects: list[Obj]) -> None:
    jobs = _jobs_by_service(objects)
    assert set(jobs) == set(SERVICES)
    for service, job in jobs.items():
        annotations = job["metadata"]["annotations"]
        assert hook_events(job) == {"pre-install", "pre-upgrade"}
        assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}
        assert job["spec"]["backoffLimit"] >= 1
        assert job["spec"]["activeDeadlineSeconds"] > 0
        assert pod_spec(job)["restartPolicy"] == "Never"
        # Not selected by the Deployment or Service of its service (it would count as one of their pods).
        assert not selects(named(objects, "Deployment", full(service))["spec"]["selector"], pod_labels(job))
        assert not selects(
            {"matchLabels": named(objects, "Service", full(service))["spec"]["selector"]}, pod_labels(job)
        )
        (container,) = containers(job)
        assert container["image"] == containers(named(objects, "Deployment", full(service)))[0]["image"]


def test_a_migration_gets_every_setting_its_service_gets(objects: list[Obj]) -> None:
    jobs = _jobs_by_service(objects)
    for service, job in jobs.items():
        deployment = named(objects, "Deployment", full(service))
        (service_env,) = env_names(deployment, objects).values()
        (job_env,) = env_names(job, objects).values()
        missing = set(service_env) - set(job_env)
        assert not missing, f"{service}: {sorted(missing)}"
        assert {name: value for name, value in job_env.items() if name in service_env} == service_env


def test_a_first_install_works_hooks_need_only_earlier_hooks_or_outside_secrets(objects: list[Obj]) -> None:
    """A pre-install hook runs before the release's ordinary objects exist: whatever it refers to must be a
    hook of the same event with a lower weight (or something the chart does not make, like the Secrets)."""
    made = {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}
    for hook in [obj for obj in objects if "pre-install" in hook_events(obj)]:
        if hook["kind"] not in WORKLOAD_KINDS:
            continue
        pod = pod_spec(hook)
        needs = [("ServiceAccount", pod.get("serviceAccountName", "default"))]
        for container in containers(hook):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    needs.append(("ConfigMap", source["configMapRef"]["name"]))
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    needs.append(("ConfigMap", ref["name"]))
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                needs.append(("ConfigMap", volume["configMap"]["name"]))
        for kind, name in needs:
            if (kind, name) == ("ServiceAccount", "default"):
                continue
            dependency = made.get((kind, name))
            assert dependency is not None, f"{hook['metadata']['name']} needs {kind}/{name}"
            assert "pre-install" in hook_events(dependency), f"{kind}/{name} does not exist yet at pre-install"
            assert "pre-upgrade" in hook_events(dependency), f"{kind}/{name} is gone at pre-upgrade"
            assert hook_weight(dependency) < hook_weight(hook)


# --- monitoring -------------------------------------------------------------------------------------


def test_every_service_exposes_metrics_and_the_service_monitor_scrapes_them_all() -> None:
    objects = render(VALUES["production"])
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/component"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    services = of_kind(objects, "Service")
    assert len(services) == len(SERVICES)
    for service_obj in services:
        assert selects(monitor["spec"]["selector"], service_obj["metadata"]["labels"])
        assert "metrics" in {port["name"] for port in service_obj["spec"]["ports"]}
        assert service_obj["metadata"]["labels"]["app.kubernetes.io/component"] in SERVICES
    for config_map in [named(objects, "ConfigMap", full(service)) for service in SERVICES]:
        assert config_map["data"]["COLLABNET_METRICS_PORT"] == "9464"
        assert config_map["data"]["COLLABNET_METRICS_HOST"] == "0.0.0.0"
    assert not of_kind(render({}), "ServiceMonitor")  # off by default


def test_prometheus_off_removes_every_metrics_port_and_setting() -> None:
    values = merge(
        VALUES["production"],
        {"monitoring": {"prometheus": {"enabled": False}, "serviceMonitor": {"enabled": False}}},
    )
    objects = render(values)
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            for container in containers(obj):
                assert not [p for p in container.get("ports", []) if p["name"] == "metrics"]
                assert not [name for name in env_names(obj, objects)[container["name"]] if "METRICS" in name]
        if obj["kind"] == "Service":
            assert [p["name"] for p in obj["spec"]["ports"]] in (["grpc"], ["http"])
        if obj["kind"] == "NetworkPolicy":
            assert "9464" not in json.dumps(obj["spec"])
    with pytest.raises(helm.HelmError, match="prometheus"):
        render(merge(values, {"monitoring": {"serviceMonitor": {"enabled": True}}}))


def test_the_rendering_is_stable() -> None:
    first = hashlib.sha256(json.dumps(render(VALUES["production"]), sort_keys=True).encode()).hexdigest()
    _render.cache_clear()
    second = hashlib.sha256(json.dumps(render(VALUES["production"]), sort_keys=True).encode()).hexdigest()
    assert first == second


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def test_no_value_renders_as_a_float_or_in_exponent_form(objects: list[Obj]) -> None:
    # Helm reads numbers as floats; a port or a count printed as 5e+04 or 3.0 would not parse back.
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS or obj["kind"] == "ConfigMap":
            continue
        for value in _walk(obj):
            assert not isinstance(value, float), obj["metadata"]["name"]
            if isinstance(value, str):
                assert not re.fullmatch(r"\d+(\.\d+)?e[+-]\d+", value), obj["metadata"]["name"]


# --- the README's install steps ------------------------------------------------------------------


def _deployment_section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme[readme.index("\n## Deployment") :]


def test_the_readme_creates_every_secret_the_production_rendering_reads() -> None:
    steps = _deployment_section()
    (services,) = re.findall(r'^SERVICES="([^"]+)"', steps, flags=re.MULTILINE)
    created = set(re.findall(r"kubectl -n collabnet create secret generic (\S+)", steps))
    keys: set[str] = set()
    for key in re.findall(r"--from-literal=([$\w-]+)=", steps):  # $s: once for each of $SERVICES
        keys.update({key.replace("$s", service) for service in services.split()})
    read = {
        (ref["name"], ref["key"])
        for workload in render(VALUES["production"])
        if workload["kind"] in WORKLOAD_KINDS
        for container in containers(workload)
        for env in container.get("env", [])
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    }
    assert read, "the production rendering reads no Secret"
    assert {name for name, _ in read} <= created, sorted({name for name, _ in read} - created)
    assert {key for _, key in read} <= keys, sorted({key for _, key in read} - keys)
    assert set(services.split()) == {
        workload["metadata"]["labels"]["app.kubernetes.io/component"]
        for workload in of_kind(render(VALUES["production"]), "Deployment")
    }


def test_the_readme_installs_the_chart_and_nats_where_the_production_values_expect_them() -> None:
    steps = _deployment_section()
    assert (
        "helm install collabnet deploy/helm/collabnet -n collabnet \\\n  -f deploy/helm/values-production.yaml" in steps
    )
    (release, namespace) = re.findall(r"helm install (\S+) nats/nats -n (\S+)", steps)[0]
    assert VALUES["production"]["nats"]["url"] == f"nats://{release}.{namespace}.svc:4222"
