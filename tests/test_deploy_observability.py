"""deploy/prometheus and deploy/grafana: rules and dashboard refer only to metrics the server exports;
promtool checks and unit-tests the rules and lints a real scrape (skipped where promtool is missing:
`make container-test` installs it and runs these again)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml
from deploy_support import DEPLOY, SCRAPE_SERIES, exported_series, promql_metric_names
from seqserve.v1 import sentiment_pb2

RULES = DEPLOY / "prometheus" / "seqserve.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "seqserve.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "seqserve.json"
GRPC_CODES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
              "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
              "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; make container-test does)")
    return found


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text("utf-8"))["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def test_rules_select_only_exported_or_recorded_series() -> None:
    known = exported_series() | recorded_names() | SCRAPE_SERIES
    for rule in rules():
        names = promql_metric_names(rule["expr"])
        assert names, f"no metric found in {rule['expr']!r}"
        assert names <= known, f"{rule.get('record') or rule.get('alert')}: unknown {sorted(names - known)}"


def test_the_issue_s_alerts_exist_and_say_what_to_do() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert {"SeqserveHighErrorRate", "SeqserveHighLatencyP99", "SeqserveSlowStage", "SeqserveModelLoadFailed",
            "SeqserveTargetDown", "SeqserveQueueTimeHigh", "SeqserveShedding"} <= set(alerts)
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
    assert "seqserve_request_duration_seconds_bucket" in " ".join(rule["expr"] for rule in rules())
    assert "seqserve_model_load_failures_total" in alerts["SeqserveModelLoadFailed"]["expr"]


# A request metric is labelled by model and answering version; a query that does not sum them away
# would draw one line per version (or, in a rule, record one series per version) where it meant one per method.
REQUEST_METRIC = r"seqserve_requests_total|seqserve_request_duration_seconds_bucket"
SUMMED_REQUEST_METRIC = re.compile(r"sum(?: by \(([\w, ]*)\))?\s*\(\s*rate\((?:" + REQUEST_METRIC + r")\b")


def summed_by(expr: str) -> list[set[str]]:
    """The `by` labels of every sum over a request metric in `expr`; fails if one is used without a sum."""
    uses = re.findall(REQUEST_METRIC, expr)
    sums = SUMMED_REQUEST_METRIC.findall(expr)
    assert len(sums) == len(uses), f"a request metric not summed: {expr!r}"
    return [{label.strip() for label in by.split(",") if label.strip()} for by in sums]


def test_rules_sum_the_request_metrics_by_method_across_versions() -> None:
    request_rules = [rule for rule in rules() if re.search(REQUEST_METRIC, rule["expr"])]
    assert request_rules
    for rule in request_rules:
        for labels in summed_by(rule["expr"]):
            assert labels - {"le", "code"} == {"job", "service", "method"}, rule.get("record") or rule.get("alert")


def test_the_dashboard_sums_the_request_metrics_and_splits_by_version_once(dashboard: dict) -> None:
    groupings = [labels for panel in panels(dashboard) for target in panel["targets"]
                 for labels in summed_by(target["expr"])]
    assert groupings
    by_version = [labels for labels in groupings if "version" in labels]
    assert by_version, "no panel splits the calls by model version"
    assert {"model", "version"} <= set.intersection(*by_version)  # a version means nothing without its model
    assert any("version" not in labels for labels in groupings)


def test_error_codes_in_the_rules_are_grpc_codes() -> None:
    for rule in rules():
        for alternatives in re.findall(r'code=~"([^"]+)"', rule["expr"]):
            assert set(alternatives.split("|")) <= GRPC_CODES


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_a_real_scrape(server, sentiment) -> None:
    binary = promtool()
    sentiment.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=["Grand."]), timeout=30)
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        exposition = response.read()
    result = subprocess.run([binary, "check", "metrics"], input=exposition, capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


# -- the Grafana dashboard -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text("utf-8"))


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_dashboard_panels_query_exported_metrics(dashboard: dict) -> None:
    known = exported_series() | recorded_names()
    for panel in panels(dashboard):
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"].replace("vector(0)", ""))
            assert names and names <= known, f"{panel['title']}: unknown {sorted(names - known)}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(METRIC{...}, label)
            metric = re.fullmatch(r"label_values\((\w+)[^,]*, *\w+\)", variable["query"]["query"])
            assert metric and metric.group(1) in known, variable["query"]["query"]


def test_dashboard_shows_the_main_signals(dashboard: dict) -> None:
    queried = " ".join(target["expr"] for panel in panels(dashboard) for target in panel["targets"])
    for metric in ("seqserve_requests_total", "seqserve_request_duration_seconds_bucket",
                   "seqserve_stage_duration_seconds_bucket", "seqserve_requests_in_flight", "seqserve_model_info",
                   "seqserve_model_load_failures_total", "seqserve_queue_duration_seconds_bucket",
                   "seqserve_batch_rejects_total", "process_resident_memory_bytes"):
        assert metric in queried


def test_dashboard_is_well_formed(dashboard: dict) -> None:
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            if "rate(" in target["expr"]:
                assert "$__rate_interval" in target["expr"], panel["title"]
