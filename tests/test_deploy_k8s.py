"""deploy/k8s: every kustomization renders, passes the Kubernetes schema in strict mode, and holds
together in the ways a schema cannot see (selectors, ports, probes, the HPA target, the grace period,
the thread budget, the image and the server's own settings)."""

from __future__ import annotations

import copy
import pathlib
import re

import jsonschema
import kubernetes_validate
import pytest
from deploy_support import (
    K8S,
    KUBERNETES_VERSION,
    REPO,
    TARGETS,
    Doc,
    cpu_cores,
    exposed_ports,
    image_user,
    kubectl,
    kustomize_files,
    normalized,
    of_kind,
    one,
    project_version,
    render,
    render_builtin,
    render_kubectl,
    selects,
)

from service.config import parse_settings

# Time between the server's last in-flight call ending and the kubelet's SIGKILL: the process still
# shuts down its executor and metrics server after the gRPC server stops.
SHUTDOWN_MARGIN_SECONDS = 5
# Endpoint removal takes a few seconds to reach kube-proxy on every node and the clients' resolvers.
MIN_ENDPOINT_DELAY_SECONDS = 3

# The prometheus-operator ServiceMonitor CRD is not among kubernetes-validate's schemas, so it gets
# this one: the subset of monitoring.coreos.com/v1 that we use, with the CRD's own field names, types
# and duration pattern, and no unknown fields allowed (a misspelt field fails, as in --strict).
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"},
                           "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                           "namespace": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP},
        },
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": DURATION,
                        "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"},
                        "honorTimestamps": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": {"type": "object"}},
                        "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                    },
                }},
            },
        },
    },
}


def validate(doc: Doc) -> None:
    """Raise if `doc` is not a valid object of its kind (kubernetes-validate --strict, or ours)."""
    if doc["kind"] == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def docs(target: str) -> list[Doc]:
    return render(target)


def deployment_parts(docs: list[Doc]) -> tuple[Doc, Doc, Doc]:
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    return deployment, pod, containers[0]


def container_env(docs: list[Doc]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env."""
    _, _, container = deployment_parts(docs)
    configmaps = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names ConfigMap {name!r}, which is not in the manifests"
        env.update(configmaps[name]["data"])
    for variable in container.get("env", []):
        assert "value" in variable, f"{variable['name']}: only literal values are expected"
        env[variable["name"]] = variable["value"]
    return env


def named_ports(container: Doc) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


# -- rendering and schema --------------------------------------------------------------------------

def test_every_manifest_file_is_used_by_some_kustomization() -> None:
    used = set().union(*(kustomize_files(target) for target in TARGETS))
    on_disk = {path.resolve() for path in K8S.rglob("*.yaml")}
    not_k8s = {K8S / "components" / "hpa-in-flight" / "prometheus-adapter-rule.yaml"}  # adapter config
    assert on_disk - used == {path.resolve() for path in not_k8s}


def test_manifests_pass_the_kubernetes_schema_in_strict_mode(docs: list[Doc]) -> None:
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_strict_validation_rejects_a_misspelt_field() -> None:
    docs = render("base")
    deployment = copy.deepcopy(one(docs, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_unknown_kinds_are_not_silently_accepted() -> None:
    # The CLI only warns about a kind it has no schema for; the API raises, so a new CRD kind in
    # deploy/k8s fails here until it gets a schema of its own like ServiceMonitor.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
                                     KUBERNETES_VERSION, strict=True)


def test_the_builtin_renderer_matches_kustomize(target: str) -> None:
    if kubectl() is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed; tests use the built-in renderer")
    assert normalized(render_builtin(target)) == normalized(render_kubectl(target))


def test_every_kind_is_present(docs: list[Doc]) -> None:
    kinds = sorted(doc["kind"] for doc in docs)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget",
                "Service", "Service", "ServiceMonitor"]
    assert [kind for kind in kinds if kind != "Namespace"] == expected


def test_overlays_put_everything_in_their_namespace(target: str, docs: list[Doc]) -> None:
    if target == "base":
        assert all("namespace" not in doc["metadata"] for doc in docs)
        return
    namespaces = {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces
    for namespace in of_kind(docs, "Namespace"):
        assert namespace["metadata"]["name"] in namespaces


# -- labels and selectors --------------------------------------------------------------------------

def test_the_deployment_selects_its_own_pods(docs: list[Doc]) -> None:
    deployment, pod, _ = deployment_parts(docs)
    assert selects(deployment["spec"]["selector"], pod["metadata"]["labels"])


def test_services_pdb_networkpolicy_and_spread_select_the_pods(docs: list[Doc]) -> None:
    _, pod, _ = deployment_parts(docs)
    labels = pod["metadata"]["labels"]
    for service in of_kind(docs, "Service"):
        assert selects(service["spec"]["selector"], labels), service["metadata"]["name"]
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"], labels)
    assert selects(one(docs, "NetworkPolicy")["spec"]["podSelector"], labels)
    for constraint in pod["spec"].get("topologySpreadConstraints", []):
        assert selects(constraint["labelSelector"], labels)


def test_there_is_a_cluster_ip_and_a_headless_service(docs: list[Doc]) -> None:
    kinds = sorted(service["spec"].get("clusterIP", "ClusterIP") for service in of_kind(docs, "Service"))
    assert kinds == ["ClusterIP", "None"]
    for service in of_kind(docs, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_service_ports_target_container_ports(docs: list[Doc]) -> None:
    _, _, container = deployment_parts(docs)
    ports = named_ports(container)
    for service in of_kind(docs, "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: {port['targetPort']}"
            assert port["port"] == ports[port["targetPort"]]  # same number inside and out: less to remember


def test_the_service_monitor_scrapes_each_pod_once(docs: list[Doc]) -> None:
    monitor = one(docs, "ServiceMonitor")
    _, _, container = deployment_parts(docs)
    for endpoint in monitor["spec"]["endpoints"]:
        selected = [service for service in of_kind(docs, "Service")
                    if selects(monitor["spec"]["selector"], service["metadata"].get("labels", {}))]
        exposing = [service for service in selected
                    if endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}]
        # One Service with the port: two would make two targets per pod and double every rate.
        assert len(exposing) == 1, [service["metadata"]["name"] for service in exposing]
        port = next(port for port in exposing[0]["spec"]["ports"] if port["name"] == endpoint["port"])
        assert named_ports(container)[port["targetPort"]] == 9090
        seconds = {"s": 1, "m": 60}
        interval, timeout = endpoint["interval"], endpoint["scrapeTimeout"]
        assert int(timeout[:-1]) * seconds[timeout[-1]] <= int(interval[:-1]) * seconds[interval[-1]]
    # Our metrics carry a `service` label (the gRPC service), which the operator's target label of
    # the same name would otherwise rename to exported_service and break the rules and dashboard.
    assert all(endpoint.get("honorLabels") for endpoint in monitor["spec"]["endpoints"])
    assert monitor["spec"]["jobLabel"] in one(docs, "Deployment")["metadata"]["labels"]


def test_network_policy_ports_are_container_ports(docs: list[Doc]) -> None:
    _, _, container = deployment_parts(docs)
    policy = one(docs, "NetworkPolicy")
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in named_ports(container)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["egress"] == []  # the server calls nothing


# -- probes, lifecycle, autoscaling ----------------------------------------------------------------

def test_probes_are_native_grpc_health_checks_on_the_grpc_port(docs: list[Doc]) -> None:
    _, _, container = deployment_parts(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, probe
        assert container[probe]["grpc"]["port"] == named_ports(container)["grpc"], probe
        assert container[probe]["grpc"].get("service", "") == ""  # the server-wide status
    # Startup may take long; afterwards a hung server is restarted within ~30 s.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_the_grace_period_covers_the_drain_and_the_grace(docs: list[Doc]) -> None:
    # Pod deletion: the endpoint removal and the preStop hook (if any) start together; SIGTERM comes
    # after preStop; the server then drains (still answering) and stops with a grace period. The
    # kubelet's SIGKILL must come after all of it.
    _, pod, container = deployment_parts(docs)
    settings = parse_settings([], env=container_env(docs))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace_period = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace_period >= pre_stop + settings.drain_seconds + settings.grace_seconds + SHUTDOWN_MARGIN_SECONDS
    # Some delay must keep the pod answering while proxies and clients learn it is going.
    assert pre_stop + settings.drain_seconds >= MIN_ENDPOINT_DELAY_SECONDS


def test_the_hpa_scales_the_deployment(docs: list[Doc]) -> None:
    deployment, _, container = deployment_parts(docs)
    hpa = one(docs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The HPA owns the replica count; a count in the Deployment would be reset on every apply.
    assert "replicas" not in deployment["spec"]
    resource_metrics = [metric["resource"]["name"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Resource"]
    assert "cpu" in resource_metrics
    assert "cpu" in container["resources"]["requests"]  # utilization is measured against the request


def test_custom_metric_names_a_metric_the_server_exports(docs: list[Doc]) -> None:
    from deploy_support import exported_series

    for metric in one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]:
        if metric["type"] == "Pods":
            assert metric["pods"]["metric"]["name"] in exported_series()


def test_the_pdb_never_blocks_a_drain(docs: list[Doc]) -> None:
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    min_replicas = one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    if "maxUnavailable" in pdb:
        assert int(str(pdb["maxUnavailable"]).rstrip("%")) >= 1
    else:
        assert int(pdb["minAvailable"]) < min_replicas


def test_rolling_updates_keep_capacity(docs: list[Doc]) -> None:
    deployment, _, _ = deployment_parts(docs)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# -- settings, resources, security, image ----------------------------------------------------------

def test_env_names_are_server_settings_and_their_values_parse(docs: list[Doc]) -> None:
    env = container_env(docs)
    config_source = (REPO / "service" / "config.py").read_text("utf-8")
    known = set(re.findall(r'"(SEQSERVE_[A-Z0-9_]+)"', config_source))
    assert set(env) <= known, f"not settings of service/config.py: {sorted(set(env) - known)}"
    _, _, container = deployment_parts(docs)
    settings = parse_settings([], env=env)  # exits (SystemExit) on a value the server would refuse
    ports = named_ports(container)
    assert settings.port == ports["grpc"]
    assert settings.metrics_port == ports["metrics"]


def test_cpu_is_sized_to_the_onnxruntime_thread_budget(docs: list[Doc]) -> None:
    _, _, container = deployment_parts(docs)
    settings = parse_settings([], env=container_env(docs))
    # SEQSERVE_THREADS is the onnxruntime budget of all models together, split evenly over the
    # inference workers (each running batch gets threads // workers): no thread left over.
    assert settings.threads >= settings.inference_workers >= 1
    assert settings.threads % settings.inference_workers == 0
    resources = container["resources"]
    assert cpu_cores(resources["requests"]["cpu"]) == settings.threads
    # Guaranteed QoS: requests equal limits, for CPU and memory.
    assert resources["limits"] == resources["requests"]


def test_the_pod_meets_the_restricted_pod_security_standard(docs: list[Doc]) -> None:
    _, pod, container = deployment_parts(docs)
    pod_security = pod["spec"]["securityContext"]
    uid, gid = image_user()
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (uid, gid)
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert not any(volume.get("hostPath") for volume in pod["spec"].get("volumes", []))


def test_production_enforces_the_restricted_standard() -> None:
    namespace = one(render("overlays/production"), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_image_and_ports_match_the_dockerfile(docs: list[Doc]) -> None:
    _, _, container = deployment_parts(docs)
    image, _, tag = container["image"].rpartition(":")
    assert pathlib.PurePosixPath(image).name == "seqserve"
    assert tag == project_version()
    assert set(named_ports(container).values()) == exposed_ports()
