"""Every rendered stack passes every gate, and every gate refuses a broken object."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from infra import checks
from infra.components.monitoring import RELEASE
from infra.mockrun import Rendered
from infra.stack import RepoFiles
from infrastructure.infra_cases import CASES

Objects = list[dict[str, Any]]


@pytest.mark.parametrize("case", CASES)
def test_every_object_passes_strict_schemas_of_1_30_and_1_33(
    case: str, render_case: Callable[[str], Rendered]
):
    objects = render_case(case).objects
    assert {o["kind"] for o in objects} >= {
        "Rollout",
        "AnalysisTemplate",
        "Service",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    assert checks.schema_problems(objects) == []


@pytest.mark.parametrize("gate", checks.GATES)
@pytest.mark.parametrize("case", CASES)
def test_every_cross_object_gate_passes(case: str, gate: str, render_case: Callable[[str], Rendered]):
    assert checks.GATES[gate](render_case(case).objects) == []


@pytest.mark.parametrize("case", CASES)
def test_every_dashboard_becomes_a_configmap_and_rules_match_the_rule_files(
    case: str, render_case: Callable[[str], Rendered], case_files: Callable[[str], RepoFiles]
):
    files = case_files(case)
    objects = render_case(case).objects
    assert checks.dashboard_problems(objects, files.dashboards) == []
    assert checks.rule_problems(objects, files.rules, RELEASE) == []


def test_synthetic_case_really_carries_dashboards_and_rules(render_case, case_files):
    """The mapping is proven on files that exist today, not only on the (still empty) real set."""
    files = case_files("dev-synthetic-loadtest")
    objects = render_case("dev-synthetic-loadtest").objects
    assert len(files.dashboards) == 2 and len(files.rules) == 2
    assert len([o for o in objects if o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]) == 2
    assert [g["name"] for o in objects if o["kind"] == "PrometheusRule" for g in o["spec"]["groups"]] == [
        "lookout-availability",
        "lookout-latency",
    ]


# --- each gate refuses a broken object -------------------------------------------------------


def _one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found[0]


def _app(objects: Objects) -> dict[str, Any]:
    return _one(objects, "Rollout", "lookout")  # the app's pods: a canary Rollout on every stack


def _app_container(objects: Objects) -> dict[str, Any]:
    return _app(objects)["spec"]["template"]["spec"]["containers"][0]


def _settings(objects: Objects) -> dict[str, str]:
    return next(
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("lookout-settings")
    )["data"]


def _policy(objects: Objects) -> dict[str, Any]:
    return _one(objects, "NetworkPolicy", "lookout")["spec"]


def _drop_cpu_request(o: Objects) -> None:
    del _app_container(o)["resources"]["requests"]["cpu"]


def _drop_dns(o: Objects) -> None:
    _policy(o)["egress"] = [r for r in _policy(o)["egress"] if r["ports"][0]["port"] != 53]


def _drop_dns_udp(o: Objects) -> None:
    for rule in _policy(o)["egress"]:
        rule["ports"] = [p for p in rule["ports"] if p["protocol"] != "UDP"]


def _drop_collector(o: Objects) -> None:
    _policy(o)["egress"] = [r for r in _policy(o)["egress"] if r["ports"][0]["port"] != 4318]


def _drop_egress_to(port: int, policy: str = "lookout") -> Callable[[Objects], None]:
    def mutate(o: Objects) -> None:
        spec = _one(o, "NetworkPolicy", policy)["spec"]
        spec["egress"] = [r for r in spec["egress"] if r["ports"][0]["port"] != port]

    return mutate


def _close_to_the_notifier(policy: str) -> Callable[[Objects], None]:
    """Drop the notifier's pods from the peers ``policy`` lets in."""
    def mutate(o: Objects) -> None:
        spec = _one(o, "NetworkPolicy", policy)["spec"]
        for rule in spec["ingress"]:
            rule["from"] = [peer for peer in rule.get("from") or []
                            if (peer.get("podSelector") or {}).get("matchLabels", {}).get(
                                "app.kubernetes.io/name") != "lookout-notifier"] or [{"podSelector": {}}]

    return mutate


def _close_rate_limit_store(o: Objects) -> None:
    store = _one(o, "NetworkPolicy", "lookout-ratelimit")["spec"]
    elsewhere = {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}
    store["ingress"][0]["from"][0]["namespaceSelector"] = elsewhere


def _close_ingress(o: Objects) -> None:
    _policy(o)["ingress"] = [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8000}]}]


def _set(path: str, value: Any) -> Callable[[Objects], None]:
    """Return a mutation setting ``value`` at a dotted path of the app Rollout."""

    def mutate(o: Objects) -> None:
        node = _app(o)
        *parents, last = path.split(".")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return mutate


BROKEN: dict[str, tuple[str, Callable[[Objects], None], str]] = {
    # name: (gate, mutation of the dev stack's objects, words the problem must contain)
    "typo in a Rollout field": ("schema", _set("spec.replica", 2), "'replica' was unexpected"),
    "typo in the Rollout's pod template": (
        "schema", _set("spec.template.spec.containers.0.imagePullPolicie", "Always"), "imagePullPolicie"),
    "canary step the CRD does not know": (
        "schema", lambda o: _app(o)["spec"]["strategy"]["canary"]["steps"].append({"setWieght": 5}),
        "setWieght"),
    "analysis metric without a provider": (
        "schema", lambda o: _one(o, "AnalysisTemplate")["spec"]["metrics"][0].pop("provider"), "provider"),
    "Rollout naming a missing AnalysisTemplate": (
        "canary",
        lambda o: _one(o, "AnalysisTemplate").update(metadata={**_one(o, "AnalysisTemplate")["metadata"],
                                                                "name": "other"}),
        "AnalysisTemplate lookout-slo-burn is not declared"),
    "analysis argument not given": (
        "canary", lambda o: _app(o)["spec"]["strategy"]["canary"]["analysis"].update(args=[]), "gives"),
    "analysis query for every pod, not the canary's": (
        "canary",
        lambda o: [m["provider"]["prometheus"].update(query="sum(rate(http_server_requests_total[5m]))")
                   for m in _one(o, "AnalysisTemplate")["spec"]["metrics"]],
        "does not select the canary's series"),
    "ServiceMonitor not copying the revision label": (
        "canary", lambda o: _one(o, "ServiceMonitor")["spec"].pop("podTargetLabels"), "podTargetLabels"),
    "canary without analysis": (
        "canary", lambda o: _app(o)["spec"]["strategy"]["canary"].pop("analysis"), "nothing judges it"),
    "pods spread by a label Rollout pods lack": (
        "canary",
        _set("spec.template.spec.topologySpreadConstraints.0.matchLabelKeys", ["pod-template-hash"]),
        "spreads by pod-template-hash"),
    "HPA v1 field in autoscaling/v2": (
        "schema",
        lambda o: _one(o, "HorizontalPodAutoscaler")["spec"].update(targetCPUUtilizationPercentage=70),
        "targetCPUUtilizationPercentage",
    ),
    "ServiceMonitor field not in the CRD": (
        "schema",
        lambda o: _one(o, "ServiceMonitor")["spec"]["endpoints"][0].update(targetPort="http"),
        "targetPort",
    ),
    "CNPG Cluster without instances": (
        "schema",
        lambda o: _one(o, "Cluster")["spec"].pop("instances"),
        "instances",
    ),
    "kind nobody knows": (
        "schema",
        lambda o: o.append(
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w", "namespace": "lookout"},
            }
        ),
        "no schema",
    ),
    "Service selector that matches nothing": (
        "selectors",
        lambda o: _one(o, "Service", "lookout")["spec"].update(selector={"app.kubernetes.io/name": "nobody"}),
        "matches no pods",
    ),
    "PDB selector that matches nothing": (
        "selectors",
        lambda o: _one(o, "PodDisruptionBudget")["spec"].update(
            selector={"matchLabels": {"app.kubernetes.io/component": "nothing"}}
        ),
        "matches no pods",
    ),
    "HPA aimed at a missing workload": (
        "selectors",
        lambda o: _one(o, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(name="lookout-old"),
        "not declared",
    ),
    "ServiceMonitor selecting no Service": (
        "selectors",
        lambda o: _one(o, "ServiceMonitor")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "worker"}
        ),
        "selects no Service",
    ),
    "ServiceMonitor on a port the Service lacks": (
        "selectors",
        lambda o: _one(o, "ServiceMonitor")["spec"]["endpoints"][0].update(port="admin"),
        "no selected Service has a port named admin",
    ),
    "load balancer carrying the metrics port": (
        "exposure",
        lambda o: _one(o, "Service", "lookout")["spec"].update(type="LoadBalancer", ports=[
            *_one(o, "Service", "lookout")["spec"]["ports"],
            {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]),
        "exposes the metrics port",
    ),
    "release pods' policy naming another release": (
        "selectors",
        lambda o: _one(o, "NetworkPolicy", "prometheus-adapter")["metadata"]["annotations"].update(
            {"lookout.dev/pods-of-helm-release": "kube-prometheus-stack"}),
        "NetworkPolicy monitoring/prometheus-adapter: podSelector matches no pods",
    ),
    "release pods' policy selecting other pods": (
        "selectors",
        lambda o: _one(o, "NetworkPolicy", "prometheus-adapter")["spec"]["podSelector"]["matchLabels"].update(
            {"app.kubernetes.io/instance": "adapter"}),
        "NetworkPolicy monitoring/prometheus-adapter: podSelector matches no pods",
    ),
    "Rollout selector off its own template": (
        "selectors",
        _set("spec.selector", {"matchLabels": {"a": "b"}}),
        "own pod template",
    ),
    "Service target port no container has": (
        "ports",
        lambda o: _one(o, "Service", "lookout")["spec"]["ports"][0].update(targetPort=9000),
        "targetPort 9000",
    ),
    "probe on an undeclared port": (
        "ports",
        _set("spec.template.spec.containers.0.readinessProbe.httpGet.port", "admin"),
        "readinessProbe port admin",
    ),
    "Rollout without CPU requests": ("resources", _drop_cpu_request, "no cpu request"),
    "spec.replicas under an HPA": ("replicas", _set("spec.replicas", 3), "spec.replicas"),
    "NetworkPolicy without DNS": ("network", _drop_dns, "DNS (53/UDP"),
    "NetworkPolicy with DNS over TCP only": ("network", _drop_dns_udp, "53/UDP"),
    "NetworkPolicy without the collector": ("network", _drop_collector, "OTLP collector"),
    "NetworkPolicy without the database": (
        "network", _drop_egress_to(5432), "egress to DATABASE_URL (lookout-db-rw.lookout-db"),
    "NetworkPolicy without the rate-limit store": (
        "network", _drop_egress_to(6379), "egress to RATE_LIMIT_STORAGE_URL (lookout-ratelimit."),
    "rate-limit store closed to the service": (
        "network", _close_rate_limit_store, "ingress refuses Rollout lookout/lookout's RATE_LIMIT"),
    "NetworkPolicy without scrapes": ("network", _close_ingress, "Prometheus scrapes from monitoring"),
    "the notifier without the broker": (
        "network", _drop_egress_to(5672, "lookout-notifier"),
        "lookout-notifier: egress to BROKER_URL (lookout-broker.lookout-broker"),
    "the notifier without the mail catcher": (
        "network", _drop_egress_to(1025, "lookout-notifier"), "egress to SMTP_URL (lookout-mail.lookout"),
    # JWKS_URL names the Service's port 80; the policy must open its pods' 8000.
    "the notifier without the users API's keys": (
        "network", _drop_egress_to(8000, "lookout-notifier"), "egress to JWKS_URL (lookout.lookout.svc"),
    "the users API closed to the notifier": (
        "network", _close_to_the_notifier("lookout"), "refuses Deployment lookout/lookout-notifier's"),
    "the mail catcher closed to the notifier": (
        "network", _close_to_the_notifier("lookout-mail"), "refuses Deployment lookout/lookout-notifier's S"),
    "the relay without the broker": (
        "network", _drop_egress_to(5672, "lookout-relay"), "lookout/lookout-relay: egress to BROKER_URL"),
    "preStop + graceful >= grace": (
        "shutdown",
        _set("spec.template.spec.terminationGracePeriodSeconds", 30),
        "terminationGracePeriodSeconds 30",
    ),
    "graceful timeout raised in the ConfigMap": (
        "shutdown",
        lambda o: _settings(o).update(GUNICORN_GRACEFUL_TIMEOUT="40"),
        "graceful timeout 40s",
    ),
    "container running as root": (
        "security",
        _set("spec.template.spec.containers.0.securityContext.runAsNonRoot", False),
        "runAsNonRoot",
    ),
    "writable root filesystem": (
        "security",
        _set("spec.template.spec.containers.0.securityContext.readOnlyRootFilesystem", False),
        "readOnlyRootFilesystem",
    ),
    "privileged container": (
        "security",
        _set("spec.template.spec.containers.0.securityContext.privileged", True),
        "privileged false",
    ),
    "service account token mounted": (
        "security",
        _set("spec.template.spec.automountServiceAccountToken", True),
        "service account token",
    ),
    "multiprocess dir with one worker": (
        "writable dirs",
        lambda o: _settings(o).update(PROMETHEUS_MULTIPROC_DIR="/tmp"),
        "exactly when GUNICORN_WORKERS > 1",
    ),
    "heartbeat dir not mounted": (
        "writable dirs",
        lambda o: _settings(o).update(GUNICORN_WORKER_TMP_DIR="/var/tmp"),
        "not a writable emptyDir",
    ),
}


@pytest.mark.parametrize("name", BROKEN)
def test_gate_refuses_a_broken_object(name: str, render_case: Callable[[str], Rendered]):
    gate, mutate, expected = BROKEN[name]
    objects = copy.deepcopy(render_case("dev").objects)
    run = checks.schema_problems if gate == "schema" else checks.GATES[gate]
    assert run(objects) == [], "the unbroken objects must pass first"
    mutate(objects)
    problems = run(objects)
    assert problems and any(expected in p for p in problems), problems


def test_two_workers_need_the_multiprocess_dir(render_case):
    objects = copy.deepcopy(render_case("prod-2-workers-rps-loadtest").objects)
    assert checks.writable_dir_problems(objects) == []
    settings = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("lookout-set")
    )
    del settings["data"]["PROMETHEUS_MULTIPROC_DIR"]
    assert any("workers=2" in p for p in checks.writable_dir_problems(objects))


def test_init_containers_need_resources_too(render_case):
    objects = copy.deepcopy(render_case("dev-synthetic-loadtest").objects)
    master = _one(objects, "Deployment", "lookout-loadtest-master")["spec"]["template"]["spec"]
    assert master["initContainers"], "the synthetic load test installs PyYAML in an init container"
    del master["initContainers"][0]["resources"]["limits"]["memory"]
    assert checks.resource_problems(objects) == [
        "Deployment lookout-loadtest/lookout-loadtest-master: container deps has no memory limit"
    ]


def test_replicas_are_fine_where_no_hpa_scales(render_case):
    objects = render_case("dev-synthetic-loadtest").objects
    assert _one(objects, "Deployment", "lookout-loadtest-worker")["spec"]["replicas"] == 2
    assert checks.replicas_problems(objects) == []


def _broken_dashboard_cases(files: RepoFiles) -> dict[str, Callable[[Objects], None]]:
    name = files.dashboards[0].name

    def carrier(o: Objects) -> dict[str, Any]:
        return next(m for m in o if m["kind"] == "ConfigMap" and name in (m.get("data") or {}))

    return {
        "missing": lambda o: o.remove(carrier(o)),
        "edited": lambda o: carrier(o)["data"].update({name: '{"title": "changed"}'}),
        "unlabelled": lambda o: carrier(o)["metadata"]["labels"].pop("grafana_dashboard"),
        "duplicated": lambda o: o.append(copy.deepcopy(carrier(o))),
        "stray": lambda o: o.append({**copy.deepcopy(carrier(o)), "data": {"other.json": "{}"}}),
    }


@pytest.mark.parametrize("breakage", ["missing", "edited", "unlabelled", "duplicated", "stray"])
def test_dashboard_gate_refuses(breakage: str, render_case, case_files):
    files = case_files("dev-synthetic-loadtest")
    objects = copy.deepcopy(render_case("dev-synthetic-loadtest").objects)
    _broken_dashboard_cases(files)[breakage](objects)
    assert checks.dashboard_problems(objects, files.dashboards)


@pytest.mark.parametrize(
    "breakage", ["group dropped", "rule edited", "release label missing", "monitor unlabelled"]
)
def test_rule_gate_refuses(breakage: str, render_case, case_files):
    files = case_files("dev-synthetic-loadtest")
    objects = copy.deepcopy(render_case("dev-synthetic-loadtest").objects)
    rule = _one(objects, "PrometheusRule")
    if breakage == "group dropped":
        rule["spec"]["groups"].pop()
    elif breakage == "rule edited":
        rule["spec"]["groups"][0]["rules"][0]["expr"] = "vector(1)"
    elif breakage == "release label missing":
        del rule["metadata"]["labels"]["release"]
    else:
        del _one(objects, "ServiceMonitor")["metadata"]["labels"]["release"]
    assert checks.rule_problems(objects, files.rules, RELEASE)


def test_selector_matching_follows_kubernetes_semantics():
    labels = {"app": "lookout", "tier": "web"}
    assert checks.matches({"matchLabels": {"app": "lookout"}}, labels)
    assert checks.matches(
        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}, labels
    )
    assert not checks.matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, labels
    )
    assert not checks.matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert checks.matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
    assert checks.matches({}, labels)  # an empty selector selects everything
