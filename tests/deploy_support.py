"""Helpers for the deployment tests: rendering deploy/k8s with kustomize, and the metric names the
server really exports (for the Prometheus rules and the Grafana dashboard).

Rendering uses `kubectl kustomize` when kubectl is on PATH (it is on our machines' image), and
otherwise a small built-in renderer that implements exactly the kustomize features deploy/k8s uses
(resources, components, configMapGenerator with merge and the name hash, strategic-merge patches,
namespace, images). Where kubectl exists the tests check that both render the same
documents, so the fallback stays honest.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import pathlib
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
# Every kustomization a user may apply; each is rendered and checked by tests/test_deploy_k8s.py.
TARGETS = ("base", "overlays/dev", "overlays/production", "overlays/production-in-flight")
KUBERNETES_VERSION = "1.33.0"

Doc = dict[str, Any]

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass",
                  "CustomResourceDefinition", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "components", "namespace", "configMapGenerator",
                      "patches", "images"}
# Strategic-merge patch: lists merged item by item on these keys (as Kubernetes' patchMergeKey says),
# lists that Kubernetes replaces as a whole, and anything else is refused rather than guessed.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}
REPLACED_LISTS = {"metrics", "args", "command"}


def read_docs(path: pathlib.Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]


# -- rendering with kubectl ------------------------------------------------------------------------

def kubectl() -> str | None:
    return shutil.which("kubectl")


def render_kubectl(target: str) -> list[Doc]:
    binary = kubectl()
    if binary is None:
        raise RuntimeError("kubectl is not installed")
    result = subprocess.run([binary, "kustomize", str(K8S / target)], capture_output=True, text=True,
                            timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {target} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# -- the built-in renderer -------------------------------------------------------------------------

def _configmap_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix for a generated ConfigMap (api/hasher): sha256 of a JSON encoding,
    the first 10 hex digits, with 0 1 3 a e swapped for letters so it never reads as a number."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def _merge(target: Any, patch: Any, key: str = "") -> Any:
    if isinstance(patch, dict) and isinstance(target, dict):
        merged = dict(target)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = _merge(merged[name], value, name)
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(target, list):
        if key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            merged_list = [copy.deepcopy(item) for item in target]
            for item in patch:
                for index, existing in enumerate(merged_list):
                    if existing.get(merge_key) == item.get(merge_key):
                        merged_list[index] = _merge(existing, item)
                        break
                else:
                    merged_list.append(copy.deepcopy(item))
            return merged_list
        if key in REPLACED_LISTS or not any(isinstance(item, dict) for item in target + patch):
            return copy.deepcopy(patch)
        raise NotImplementedError(f"built-in renderer: no strategic-merge rule for list {key!r}")
    return copy.deepcopy(patch)


def _pod_specs(doc: Doc) -> Iterator[Doc]:
    if doc.get("kind") in WORKLOADS:
        yield doc["spec"]["template"]["spec"]


def _containers(doc: Doc) -> Iterator[Doc]:
    for spec in _pod_specs(doc):
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


def _find(resources: list[Doc], kind: str, name: str) -> Doc:
    for doc in resources:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name!r} to patch or merge into")


def _accumulate(directory: pathlib.Path, resources: list[Doc]) -> list[Doc]:
    """One kustomization or component, in kustomize's order: resources, components, generators,
    then the transformers (patches, namespace, images)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    unsupported = set(kustomization) - KUSTOMIZATION_KEYS
    if unsupported:
        raise NotImplementedError(f"built-in renderer does not support {sorted(unsupported)} ({directory})")
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(_accumulate(path, []))
        else:
            resources.extend(read_docs(path))
    for entry in kustomization.get("components", []):
        resources = _accumulate((directory / entry).resolve(), resources)

    for generator in kustomization.get("configMapGenerator", []):
        if set(generator) - {"name", "behavior", "literals"}:
            raise NotImplementedError(f"built-in renderer: configMapGenerator fields {sorted(generator)}")
        data = dict(literal.split("=", 1) for literal in generator.get("literals", []))
        behavior = generator.get("behavior", "create")
        if behavior == "create":
            resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                              "data": data, "_generated": True})
        else:
            existing = _find(resources, "ConfigMap", generator["name"])
            existing["data"] = {**existing["data"], **data} if behavior == "merge" else data

    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise NotImplementedError(f"built-in renderer: only `patches: - path:` ({patch_entry})")
        for patch in read_docs(directory / patch_entry["path"]):
            target = _find(resources, patch["kind"], patch["metadata"]["name"])
            resources[resources.index(target)] = _merge(target, patch)
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in resources:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for doc in resources:
            for container in _containers(doc):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    tag = image.get("newTag", tag)
                    container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    return resources


def render_builtin(target: str) -> list[Doc]:
    resources = _accumulate(K8S / target, [])
    renamed: dict[str, str] = {}
    for doc in resources:
        if doc.pop("_generated", False):
            name = doc["metadata"]["name"]
            renamed[name] = doc["metadata"]["name"] = f"{name}-{_configmap_hash(doc['data'])}"
    for doc in resources:
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref and ref["name"] in renamed:
                    ref["name"] = renamed[ref["name"]]
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["name"] in renamed:
                    ref["name"] = renamed[ref["name"]]
        for spec in _pod_specs(doc):
            for volume in spec.get("volumes", []):
                if "configMap" in volume and volume["configMap"]["name"] in renamed:
                    volume["configMap"]["name"] = renamed[volume["configMap"]["name"]]
    return resources


@functools.cache
def _render_cached(target: str) -> str:
    docs = render_kubectl(target) if kubectl() else render_builtin(target)
    return json.dumps(docs)


def render(target: str) -> list[Doc]:
    """The documents `kubectl apply -k deploy/k8s/<target>` would send (a fresh copy each call)."""
    return json.loads(_render_cached(target))


def normalized(docs: Iterable[Doc]) -> list[str]:
    return sorted(json.dumps(doc, sort_keys=True) for doc in docs)


def kustomize_files(target: str) -> set[pathlib.Path]:
    """Every file a kustomization reads, following resources, components and patches."""
    directory = (K8S / target).resolve()
    kustomization_file = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_file.read_text("utf-8"))
    files = {kustomization_file}
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        path = (directory / entry).resolve()
        files |= kustomize_files(str(path.relative_to(K8S))) if path.is_dir() else {path}
    files |= {(directory / patch["path"]).resolve() for patch in kustomization.get("patches", [])}
    return files


# -- selecting from rendered documents -------------------------------------------------------------

def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: Iterable[Doc], kind: str) -> Doc:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels/matchExpressions, or a Service's plain map) against labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- metric names ----------------------------------------------------------------------------------

SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Series every Prometheus scrape adds, whatever the target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def exported_series() -> set[str]:
    """Every series name the server's metrics registry can expose (labelled series included)."""
    from service.metrics.registry import ServingMetrics

    names: set[str] = set()
    for family in ServingMetrics().registry.collect():
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
    return names


_PROMQL_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_PROMQL_RANGES = re.compile(r"\[[^\]]*\]")
_PROMQL_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_PROMQL_LABEL_SETS = re.compile(r"\{[^}]*\}")
_PROMQL_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "abs", "absent",
    "absent_over_time", "clamp_min", "clamp_max", "ceil", "floor", "round", "time", "vector", "scalar",
    "label_replace", "label_join", "sort", "sort_desc", "changes", "resets", "max_over_time",
    "min_over_time", "avg_over_time", "sum_over_time", "count_over_time", "last_over_time", "timestamp",
    "inf", "nan", "e",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers left once strings, ranges, groupings, label
    matchers, numbers, keywords and functions are removed. Deliberately simple; our expressions are."""
    text = _PROMQL_STRINGS.sub(" ", expr)
    text = _PROMQL_RANGES.sub(" ", text)
    text = _PROMQL_GROUPING.sub(" ", text)
    text = _PROMQL_LABEL_SETS.sub(" ", text)
    text = re.sub(r"\$\{?[A-Za-z_]\w*\}?", " ", text)  # Grafana variables
    return {name for name in _PROMQL_IDENTIFIER.findall(text) if name.lower() not in PROMQL_WORDS}


# -- the Dockerfile --------------------------------------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"


def dockerfile_instructions() -> list[Doc]:
    """dockerfile-parse's view: one dict per instruction (instruction, value, startline, ...)."""
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(str(DOCKERFILE)).structure


def final_stage(instructions: list[Doc]) -> list[Doc]:
    starts = [index for index, item in enumerate(instructions) if item["instruction"] == "FROM"]
    return instructions[starts[-1]:]


def exposed_ports() -> set[int]:
    ports: set[int] = set()
    for item in final_stage(dockerfile_instructions()):
        if item["instruction"] == "EXPOSE":
            ports.update(int(port.split("/")[0]) for port in item["value"].split())
    return ports


def image_user() -> tuple[int, int]:
    """The runtime stage's USER as numeric uid and gid (the Dockerfile must give numbers)."""
    users = [item["value"] for item in final_stage(dockerfile_instructions()) if item["instruction"] == "USER"]
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid or uid)


def project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["version"]
