"""The names the rules and dashboards select by are the names the stacks deploy.

A wrong job, namespace or object name would not fail anywhere else: every alert would just stay
silent and every panel empty. dashboards/generate/target.py holds them; this renders each stack.
"""

from __future__ import annotations

import pytest

from dashboards.generate.target import TARGET


@pytest.mark.parametrize("case", ["dev", "prod"])
def test_the_stacks_deploy_what_the_rules_select(render_case, case):
    rendered = render_case(case)
    service = rendered.one("Service", TARGET.job)  # the ServiceMonitor names the job after it
    assert service["metadata"]["namespace"] == TARGET.namespace
    (monitor,) = [m for m in rendered.find("ServiceMonitor")
                  if m["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()]
    assert "jobLabel" not in monitor["spec"]  # otherwise the job would come from a label
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [TARGET.namespace]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]

    deployment = rendered.one("Rollout", TARGET.deployment)  # the app's pods, released as a canary
    assert deployment["metadata"]["namespace"] == TARGET.namespace
    containers = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert containers == [TARGET.container]
    hpa = rendered.one("HorizontalPodAutoscaler", TARGET.hpa)
    assert hpa["metadata"]["namespace"] == TARGET.namespace
    assert hpa["spec"]["scaleTargetRef"]["name"] == TARGET.deployment


def test_exemplars_link_to_the_trace_data_source(render_case):
    """The latency panel's exemplars carry trace_id; Grafana's Prometheus data source links it."""
    from infra.components.monitoring import RELEASE
    from infra.components.monitoring_values import TRACES_DATASOURCE_UID

    (stack,) = [r for r in render_case("dev").releases if r["name"] == RELEASE]
    assert stack["values"]["grafana"]["sidecar"]["datasources"]["exemplarTraceIdDestinations"] == {
        "datasourceUid": TRACES_DATASOURCE_UID, "traceIdLabelName": "trace_id"}
    assert "exemplar-storage" in stack["values"]["prometheus"]["prometheusSpec"]["enableFeatures"]
