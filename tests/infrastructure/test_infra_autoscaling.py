"""Autoscaling on request rate: prometheus-adapter serves the metric the API's HPA asks for.

Cross-object checks over the rendered stacks: the HPA's Pods metric is the adapter rule's output,
the rule reads the counter the app exposes, the adapter asks the Prometheus the stack installs,
only the custom metrics API is registered, and the NetworkPolicy lets the API server in and the
adapter out to Prometheus. The rule's query itself runs against a real Prometheus in
tests/test_autoscaling_live.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from app import create_app
from infra.checks import schema_problems
from infra.components.autoscaling import (
    ADAPTER,
    ADAPTER_CHART,
    ADAPTER_PORT,
    REQUESTS_COUNTER,
    REQUESTS_METRIC,
    rate_window,
)
from infra.components.monitoring_values import PROMETHEUS_POD_LABELS, PROMETHEUS_SERVICE
from infra.mockrun import Rendered, render
from infra.stack_config import stack_values

STACKS = ["dev", "staging", "prod"]


@pytest.fixture(scope="module")
def stacks() -> dict[str, Rendered]:
    return {name: render(name) for name in STACKS}


def adapter_release(rendered: Rendered) -> dict[str, Any]:
    (release,) = [r for r in rendered.releases if r["name"] == ADAPTER]
    return release


def pods_metrics(rendered: Rendered) -> list[dict[str, Any]]:
    hpa = rendered.one("HorizontalPodAutoscaler", "lookout")["spec"]
    return [m for m in hpa["metrics"] if m["type"] == "Pods"]


@pytest.mark.parametrize("stack", STACKS)
def test_the_hpa_scales_on_cpu_and_the_rate_the_adapter_serves(stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    hpa = rendered.one("HorizontalPodAutoscaler", "lookout")["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Resource", "Pods"]
    (pods,) = pods_metrics(rendered)
    target = stack_values(stack, fake_secrets=True)["targetRequestsPerSecond"]
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": str(target)}
    release = adapter_release(rendered)
    (rule,) = release["values"]["rules"]["custom"]
    assert pods["pods"]["metric"]["name"] == rule["name"]["as"] == REQUESTS_METRIC
    # The HPA follows whatever runs the pods: a Rollout when progressive delivery is on.
    workload = rendered.find("Rollout", "lookout") or rendered.find("Deployment", "lookout")
    (kind,) = {o["kind"] for o in workload}
    assert hpa["scaleTargetRef"]["kind"] == kind


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_custom_metrics_api_is_registered(stacks: dict[str, Rendered], stack: str):
    """KEDA will own external.metrics and metrics-server owns metrics.k8s.io: the chart registers
    each only when rules.external or rules.resource is set (templates/*-apiservice.yaml)."""
    release = adapter_release(stacks[stack])
    assert (release["chart"], release["version"], release["repositoryOpts"]["repo"]) == ADAPTER_CHART
    rules = release["values"]["rules"]
    assert rules["default"] is False, "the chart's default rules overlap the custom one"
    assert rules["external"] == [] and "resource" not in rules and "existing" not in rules
    assert len(rules["custom"]) == 1


def test_the_rule_reads_the_counter_the_app_exposes(stacks: dict[str, Rendered]):
    (rule,) = adapter_release(stacks["prod"])["values"]["rules"]["custom"]
    exposition = create_app({"DATABASE_URL": "sqlite://"}).test_client().get("/metrics").get_data(as_text=True)
    assert f"# TYPE {REQUESTS_COUNTER} counter" in exposition
    assert rule["seriesQuery"].startswith(f"{REQUESTS_COUNTER}{{")
    assert rule["name"]["matches"] == f"^{REQUESTS_COUNTER}$"
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                              "pod": {"resource": "pod"}}
    query = rule["metricsQuery"]
    assert "<<.Series>>{<<.LabelMatchers>>," in query and query.endswith("by (<<.GroupBy>>)")


def test_the_rate_window_and_relisting_follow_the_scrape_interval(stacks: dict[str, Rendered]):
    rendered = stacks["prod"]
    (monitor,) = [o for o in rendered.find("ServiceMonitor") if o["metadata"]["name"] == "lookout"]
    interval = monitor["spec"]["endpoints"][0]["interval"]
    values = adapter_release(rendered)["values"]
    (rule,) = values["rules"]["custom"]
    assert f"[{rate_window(interval)}]" in rule["metricsQuery"]
    assert rate_window("15s") == "60s" and rate_window("1m") == "240s"
    assert int(values["metricsRelistInterval"].removesuffix("s")) >= 15


def test_the_adapter_asks_the_prometheus_the_stack_installs(stacks: dict[str, Rendered]):
    rendered = stacks["prod"]
    release = adapter_release(rendered)
    monitoring = next(r for r in rendered.releases if r["name"] == "kube-prometheus-stack")
    assert release["namespace"] == monitoring["namespace"]
    prometheus = release["values"]["prometheus"]
    assert prometheus["url"] == f"http://{PROMETHEUS_SERVICE}.{monitoring['namespace']}.svc"
    assert prometheus["port"] == 9090


def test_the_network_policy_lets_the_api_server_in_and_the_adapter_out(stacks: dict[str, Rendered]):
    rendered = stacks["prod"]
    policy = rendered.one("NetworkPolicy", ADAPTER)
    release = adapter_release(rendered)
    assert policy["metadata"]["namespace"] == release["namespace"]
    spec = policy["spec"]
    # The chart's selector labels: app.kubernetes.io/name and instance (templates/_helpers.tpl).
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": ADAPTER,
                                                  "app.kubernetes.io/instance": release["name"]}
    assert release["values"]["fullnameOverride"] == ADAPTER
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": ADAPTER_PORT}]}]
    to_prometheus = [e for e in spec["egress"] if e["ports"] == [{"protocol": "TCP", "port": 9090}]]
    (rule,) = to_prometheus
    assert rule["to"][0]["podSelector"]["matchLabels"] == PROMETHEUS_POD_LABELS
    ports = {p["port"] for e in spec["egress"] for p in e["ports"]}
    assert {53, 443, 6443, 9090} == ports
    assert schema_problems([policy]) == []


def test_without_a_rate_target_there_is_no_adapter_and_no_pods_metric():
    rendered = render("dev", {"targetRequestsPerSecond": 0})
    assert ADAPTER not in {r["name"] for r in rendered.releases}
    assert not rendered.find("NetworkPolicy", ADAPTER)
    assert pods_metrics(rendered) == []
