"""Progressive delivery: the controller from its pinned chart, the Rollout where the Deployment was,
and an analysis whose questions are the SLO's own (the rule file's expressions, the SLO's thresholds)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import promql_parser
import pulumi
import pytest

import dashboards
from infra import crds
from infra.checks import canary_problems, schema_problems
from infra.components.rollouts import (
    CANARY_HASH_ARG,
    HASH_SERIES_LABEL,
    ROLLOUTS_CHART,
    SLI_RECORD,
    Canary,
    canary_selector,
    slo_queries,
)
from infra.config import ConfigError
from infra.config.rollouts import pause, weights
from infra.mockrun import render, run_program
from infrastructure.test_infra_service import BASE

PLACEHOLDER = f"{{{{args.{CANARY_HASH_ARG}}}}}"
CANARY = Canary(prometheus_url="http://kps-prometheus.monitoring.svc.cluster.local:9090")


def vector_selectors(expr: str) -> list[Any]:
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                walk(child)
        for arg in getattr(node, "args", None) or []:
            walk(arg)

    walk(promql_parser.parse(expr))
    return found


def matchers(selector: Any) -> dict[str, str]:
    return {m.name: m.value for m in selector.matchers.matchers}


def test_the_questions_are_the_rule_file_s_expressions_restricted_to_the_canary():
    queries = slo_queries()
    rules = {r["labels"]["slo"]: r["expr"] for g in dashboards.rule_groups() for r in g["rules"]
             if r.get("record") == SLI_RECORD}
    assert {q.slo for q in queries} == set(rules) - {"login", "notifier"} == {"availability", "latency"}
    for query in queries:
        restricted = query.query.replace(PLACEHOLDER, "abc123")
        original = vector_selectors(rules[query.slo])
        found = vector_selectors(restricted)
        assert len(found) == len(original) > 0
        for before, after in zip(original, found, strict=True):
            assert after.name == before.name
            assert matchers(after) == {**matchers(before), HASH_SERIES_LABEL: "abc123"}


def test_the_thresholds_are_the_fastest_page_s_burn_rate_times_the_error_budget():
    slo = dashboards.load_slo()
    fastest = max(a.burn_rate for a in slo.burn_rate_alerts)
    limits = {q.slo: q.max_error_ratio for q in slo_queries()}
    assert limits == {"availability": pytest.approx(fastest * (1 - slo.availability_target)),
                      "latency": pytest.approx(fastest * (1 - slo.latency_target))}
    assert limits["availability"] == pytest.approx(0.0144)


def test_a_changed_slo_changes_the_analysis(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """One source: the rule file's expression and slo.yaml's targets, nothing copied."""
    rule = {"groups": [{"name": "x", "rules": [{"record": SLI_RECORD, "labels": {"slo": "availability"},
                                                "expr": 'sum(rate(other_total{job="j"}[5m]))'}]}]}
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps(rule))
    (query,) = slo_queries([path])
    assert query.query == f'sum(rate(other_total{{{HASH_SERIES_LABEL}="{PLACEHOLDER}", job="j"}}[5m]))'
    path.write_text(json.dumps({"groups": []}))
    with pytest.raises(ValueError, match="run make dashboards"):
        slo_queries([path])


def test_a_selector_without_labels_cannot_be_restricted():
    with pytest.raises(ValueError, match="no selector with labels"):
        canary_selector("sum(rate(http_server_requests_total[5m]))")


def test_the_analysis_spec_judges_each_slo_and_waits_on_no_data():
    spec = CANARY.analysis_spec(slo_queries())
    assert spec["args"] == [{"name": CANARY_HASH_ARG}]
    for metric in spec["metrics"]:
        assert metric["provider"]["prometheus"]["address"] == CANARY.prometheus_url
        assert metric["successCondition"].startswith("len(result) > 0 && !isNaN(result[0])")
        assert metric["failureCondition"].startswith("len(result) > 0 && !isNaN(result[0])")
    strategy = CANARY.strategy("t")["canary"]
    assert [s.get("setWeight") for s in strategy["steps"] if "setWeight" in s] == [20, 50]
    assert strategy["analysis"]["args"] == [
        {"name": CANARY_HASH_ARG, "valueFrom": {"podTemplateHashValue": "Latest"}}]


def test_the_rendered_stacks_release_a_rollout_and_install_the_controller(render_case):
    rendered = render_case("prod")
    assert not [o for o in rendered.find("Deployment") if o["metadata"]["name"] == "lookout"]
    rollout = rendered.one("Rollout", "lookout")
    hpa = rendered.one("HorizontalPodAutoscaler", "lookout")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                                             "name": "lookout"}
    assert "replicas" not in rollout["spec"], "the HPA owns the count"
    pdb = rendered.one("PodDisruptionBudget", "lookout")
    assert pdb["spec"]["selector"] == rollout["spec"]["selector"], "stable and canary pods alike"
    (release,) = [r for r in rendered.releases if r["name"] == "argo-rollouts"]
    assert (release["chart"], release["version"], release["repositoryOpts"]["repo"]) == ROLLOUTS_CHART
    assert release["values"]["installCRDs"] is True and release["values"]["keepCRDs"] is True
    assert canary_problems(rendered.objects) == [] and schema_problems(rendered.objects) == []


def test_progressive_delivery_off_keeps_a_deployment():
    rendered = render("dev", {"progressiveDelivery": False})
    assert rendered.one("Deployment", "lookout") and not rendered.find("Rollout")
    assert not rendered.find("AnalysisTemplate")
    assert "argo-rollouts" not in {r["name"] for r in rendered.releases}


def test_a_service_built_alone_gets_a_rollout_when_given_a_canary():
    args = dataclasses.replace(BASE, canary=CANARY)

    def program() -> None:
        from infra.components import ObservableService

        service = ObservableService("billing", args)
        pulumi.export("namespace", service.namespace)

    rendered = run_program(program, "test")
    rollout = rendered.one("Rollout", "billing")
    spread = rollout["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert all(s["matchLabelKeys"] == ["rollouts-pod-template-hash"] for s in spread)
    assert rendered.one("AnalysisTemplate", "billing-slo-burn")
    assert rendered.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["kind"] == "Rollout"


@pytest.mark.parametrize("value, ok", [
    (("20", "50"), True), (("10",), True), (("50", "20"), False), (("0",), False), (("100",), False),
    (("20", "20"), False), (("x",), False), ((), False)])
def test_canary_weights_are_rising_percentages(value: tuple[str, ...], ok: bool):
    if ok:
        weights("canaryWeights", value)
    else:
        with pytest.raises(ConfigError, match="canaryWeights"):
            weights("canaryWeights", value)


def test_the_vendored_crd_schemas_are_the_pinned_chart_s():
    chart, version, _ = ROLLOUTS_CHART
    data = json.loads((crds.CRDS_DIR / f"{chart}-{version}.json").read_text())
    assert (data["chart"], data["version"]) == (chart, version)
    assert data["source"]["tag"] == f"{chart}-{version}" and len(data["source"]["commit"]) == 40
    assert set(crds.vendored_schemas()) >= {("argoproj.io/v1alpha1", "Rollout"),
                                            ("argoproj.io/v1alpha1", "AnalysisTemplate"),
                                            ("monitoring.coreos.com/v1", "Probe")}


def test_the_strict_schema_refuses_unknown_fields_where_the_crd_lists_them():
    schema = crds.strict({"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "string"}}}, "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}})
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["free"]


@pytest.mark.parametrize("value, ok", [("2m", True), ("90s", True), ("1h", True), ("0s", False),
                                       ("2 m", False), ("120", False), ("", False)])
def test_the_pause_is_a_duration_argo_rollouts_reads(value: str, ok: bool):
    if ok:
        pause("canaryPause", value)
    else:
        with pytest.raises(ConfigError, match="canaryPause"):
            pause("canaryPause", value)
