"""Scaling on queue depth: KEDA from its pinned chart, and a ScaledObject on the notifier's queue.

Cross-object checks over the rendered stacks: the ScaledObject targets the notifier consumer's
declared Deployment (which no HPA also scales, and which declares no replicas), its bounds and
target come from the stack's settings, its TriggerAuthentication reads a key of a declared Secret,
both pass KEDA's vendored CRD schemas, and the users API keeps its own HPA. Each gate is shown
failing on the case it is there for. That KEDA's chart registers only the external metrics API is
held by `make helm-render` (tests/delivery/test_helm_render.py).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from typing import Any

import pytest

from app.platform.messaging import NOTIFIER_QUEUE
from infra import checks, crds, helm
from infra.components.keda import (
    KEDA_CHART,
    METRICS_SERVER,
    NOTIFIER_CONSUMER,
    WEBHOOKS,
    QueueScaler,
    QueueScalerArgs,
    keda_values,
)
from infra.components.network import RELEASE_PODS
from infra.config import ConfigError, QueueScalingSettings
from infra.mockrun import Rendered, render, run_program
from infra.stack_config import stack_values

STACKS = ["dev", "staging", "prod"]
SCALER = "lookout-notifier-queue"


@pytest.fixture(scope="module")
def stacks() -> dict[str, Rendered]:
    return {name: render(name) for name in STACKS}


def scaled_object(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("ScaledObject", SCALER)


# --- KEDA itself -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_keda_is_the_pinned_chart_with_its_crds(stacks: dict[str, Rendered], stack: str):
    (release,) = [r for r in stacks[stack].releases if r["name"] == "keda"]
    chart, version, repo = KEDA_CHART
    assert (release["chart"], release["version"], release["repositoryOpts"]["repo"]) == (chart, version, repo)
    assert release["namespace"] == "keda"
    assert release["values"] == keda_values()
    assert release["values"]["crds"] == {"install": True}
    assert helm.release_problems({**release, "repository": repo}) == []


def test_the_vendored_crd_schemas_are_the_pinned_chart_s():
    chart, version, _ = KEDA_CHART
    data = json.loads((crds.CRDS_DIR / f"{chart}-{version}.json").read_text())
    assert (data["chart"], data["version"]) == (chart, version)
    assert data["source"]["repository"] == "kedacore/charts" and data["source"]["tag"] == f"v{version}"
    assert set(data["schemas"]) == {"keda.sh/v1alpha1/ScaledObject", "keda.sh/v1alpha1/TriggerAuthentication"}
    values = helm.load_chart_data(chart, version)
    assert values is not None and values["source"]["tag"] == f"v{version}"


# --- the ScaledObject in every stack ----------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_the_scaler_targets_the_notifier_consumer_with_the_stack_s_bounds(stacks: dict[str, Rendered],
                                                                         stack: str):
    rendered = stacks[stack]
    config = stack_values(stack, fake_secrets=True)
    obj = scaled_object(rendered)
    spec = obj["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": NOTIFIER_CONSUMER}
    consumer = rendered.one("Deployment", NOTIFIER_CONSUMER)
    assert consumer["metadata"]["namespace"] == obj["metadata"]["namespace"] == config["namespace"]
    assert "replicas" not in consumer["spec"]  # KEDA's HPA owns them
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        config["notifierConsumerMinReplicas"], config["notifierConsumerMaxReplicas"])
    assert spec["minReplicaCount"] >= 1, "idle goes back to the minimum, and that is never a cold start"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"] == {"protocol": "http", "queueName": NOTIFIER_QUEUE, "mode": "QueueLength",
                                   "value": str(config["notifierMessagesPerReplica"])}
    assert "host" not in trigger["metadata"], "credentials only through the TriggerAuthentication"


@pytest.mark.parametrize("stack", STACKS)
def test_the_trigger_authentication_reads_the_broker_s_management_url_from_a_declared_secret(
        stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    (trigger,) = scaled_object(rendered)["spec"]["triggers"]
    auth = rendered.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    secret = [s for s in rendered.find("Secret", ref["name"])
              if s["metadata"]["namespace"] == auth["metadata"]["namespace"]]
    assert len(secret) == 1
    broker = rendered.one("Secret", "lookout-broker-default-user")["stringData"]
    assert secret[0]["stringData"][ref["key"]] == broker["management_url"]
    assert broker["management_url"].startswith("http://") and broker["management_url"].endswith(":15672/%2F")


@pytest.mark.parametrize("stack", STACKS)
def test_the_objects_pass_keda_s_crd_schemas_and_the_scaler_gate(stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    keda_objects = [o for o in rendered.objects if o["apiVersion"].startswith("keda.sh/")]
    assert sorted(o["kind"] for o in keda_objects) == ["ScaledObject", "TriggerAuthentication"]
    assert checks.schema_problems(keda_objects) == []
    assert checks.scaler_problems(rendered.objects) == []


@pytest.mark.parametrize("stack", STACKS)
def test_the_users_api_keeps_its_hpa_and_the_consumer_has_none(stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in rendered.find("HorizontalPodAutoscaler")}
    assert "lookout" in targets and NOTIFIER_CONSUMER not in targets
    assert [o["spec"]["scaleTargetRef"]["name"] for o in rendered.find("ScaledObject")] == [NOTIFIER_CONSUMER]


def test_the_queue_is_the_one_the_notifier_consumes():
    assert QueueScalerArgs.__dataclass_fields__["queue"].default == NOTIFIER_QUEUE


# --- the gates fail on what they are there to catch ---------------------------------------------------

def with_change(objects: list[dict[str, Any]], kind: str, change: Any) -> list[dict[str, Any]]:
    changed = copy.deepcopy(objects)
    for obj in changed:
        if obj["kind"] == kind:
            change(obj)
    return changed


def test_the_scaler_gate_refuses_each_broken_reference(stacks: dict[str, Rendered]):
    objects = stacks["dev"].objects

    def retarget(o: dict[str, Any]) -> None:
        o["spec"]["scaleTargetRef"]["name"] = "lookout-notifier-worker"

    def unauthenticated(o: dict[str, Any]) -> None:
        o["spec"]["triggers"][0]["authenticationRef"]["name"] = "nobody"

    def wrong_key(o: dict[str, Any]) -> None:
        o["spec"]["secretTargetRef"][0]["key"] = "url"

    def replicas(o: dict[str, Any]) -> None:
        if o["metadata"]["name"] == NOTIFIER_CONSUMER:
            o["spec"]["replicas"] = 2

    def also_hpa(o: dict[str, Any]) -> None:
        if o["spec"]["scaleTargetRef"]["name"] == "lookout":
            o["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment",
                                           "name": NOTIFIER_CONSUMER}

    cases = [(with_change(objects, "ScaledObject", retarget),
              "lookout-notifier-worker, which is not declared"),
             (with_change(objects, "ScaledObject", unauthenticated), "authenticationRef nobody"),
             (with_change(objects, "TriggerAuthentication", wrong_key), "reads key url"),
             (with_change(objects, "Deployment", replicas), "sets spec.replicas although a ScaledObject"),
             (with_change(objects, "HorizontalPodAutoscaler", also_hpa), "already has an HPA")]
    for broken, message in cases:
        assert any(message in p for p in checks.scaler_problems(broken)), message
    assert "scalers" in checks.GATES


def test_the_crd_schemas_refuse_a_misspelt_or_mistyped_field(stacks: dict[str, Rendered]):
    obj = scaled_object(stacks["dev"])
    misspelt = {**obj, "spec": {**obj["spec"], "maxReplicas": 3}}
    assert any("maxReplicas" in p for p in checks.schema_problems([misspelt]))
    mistyped = {**obj, "spec": {**obj["spec"], "minReplicaCount": "one"}}
    assert any("minReplicaCount" in p for p in checks.schema_problems([mistyped]))
    no_target = {**obj, "spec": {k: v for k, v in obj["spec"].items() if k != "scaleTargetRef"}}
    assert any("scaleTargetRef" in p for p in checks.schema_problems([no_target]))


# --- Args and settings ----------------------------------------------------------------------------------

def args(**overrides: Any) -> QueueScalerArgs:
    return QueueScalerArgs(**{"namespace": "lookout", "management_url": "http://u:p@b:15672/%2F",
                              "min_replicas": 1, "max_replicas": 4, "messages_per_replica": 25, **overrides})


def test_the_component_declares_the_secret_it_authenticates_with():
    rendered = run_program(lambda: QueueScaler("q", args(deployment="worker")), "test")
    assert rendered.one("ScaledObject", "q")["spec"]["triggers"][0]["metadata"]["value"] == "25"
    assert rendered.one("Secret", "q")["stringData"] == {"host": "http://u:p@b:15672/%2F"}
    problems = checks.scaler_problems(rendered.objects)
    assert problems == ["ScaledObject lookout/q: targets Deployment worker, which is not declared"]


@pytest.mark.parametrize("overrides", [{"min_replicas": 5}, {"max_replicas": 0, "min_replicas": 0},
                                       {"messages_per_replica": 0}, {"min_replicas": -1}])
def test_impossible_bounds_are_refused(overrides: dict[str, Any]):
    with pytest.raises(ValueError):
        args(**overrides)


def test_the_target_setting_is_at_least_one():
    with pytest.raises(ConfigError, match="notifierMessagesPerReplica"):
        QueueScalingSettings(messages_per_replica=0)
    made = QueueScalingSettings(messages_per_replica=40).args(
        namespace="lookout", management_url="http://x", deployment=NOTIFIER_CONSUMER, min_replicas=1,
        max_replicas=6)
    assert (made.min_replicas, made.max_replicas, made.messages_per_replica) == (1, 6, 40)


def test_the_documented_derivation_gives_replicas_that_drain_within_the_objective():
    """infra/config/broker.py: value = floor(C x L / 2). With the value, KEDA runs ceil(backlog /
    value) pods, and each clears its share in at most half the objective L."""
    capacity, objective = 40.0, 5.0  # messages/s per pod, seconds: an example, not the figure
    value = math.floor(capacity * objective / 2)
    for backlog in (1, value, value + 1, 10 * value):
        pods = math.ceil(backlog / value)
        assert backlog / pods / capacity <= objective / 2


# --- the vendored schemas are derived as `make crds-refresh` does ---------------------------------------

TEMPLATED_CRD = """{{- if .Values.crds.install }}
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  labels:
    app.kubernetes.io/name: {{ .Values.operator.name }}
    {{- include "keda.crd-labels" . | indent 4 }}
  name: scaledobjects.keda.sh
spec:
  group: keda.sh
  names: {kind: ScaledObject, plural: scaledobjects}
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        description: prose
        type: object
        properties:
          spec: {type: object, properties: {minReplicaCount: {type: integer}}}
{{- end }}
"""


def test_a_chart_s_templated_crd_is_read_without_its_template_actions():
    from infra.delivery.crd_refresh import SOURCES, vendored

    (source,) = [s for s in SOURCES if s.chart == "keda"]
    one = dataclasses.replace(source, paths=("crd.yaml",), kinds=("keda.sh/v1alpha1/ScaledObject",))
    data = vendored(one, lambda _source, _path: TEMPLATED_CRD, None)
    assert data["schemas"] == {"keda.sh/v1alpha1/ScaledObject": {
        "type": "object", "properties": {"spec": {"type": "object", "properties": {
            "minReplicaCount": {"type": "integer"}}}}}}
    missing = dataclasses.replace(one, kinds=("keda.sh/v1alpha1/ScaledJob",))
    with pytest.raises(SystemExit, match="no CRD for"):
        vendored(missing, lambda _source, _path: TEMPLATED_CRD, None)


def test_every_vendored_crd_file_is_a_refresh_source():
    from infra.delivery.crd_refresh import SOURCES, target

    assert {target(s).name for s in SOURCES} == {p.name for p in crds.CRDS_DIR.glob("*.json")} - {
        "argo-rollouts-2.41.0.json", "kube-prometheus-stack-79.7.1.json"}  # vendored before the refresh
    for source in SOURCES:
        data = json.loads(target(source).read_text())
        assert (data["chart"], data["version"]) == (source.chart, source.version)
        assert data["source"]["tag"] == source.tag
        assert sorted(data["schemas"]) == sorted(source.kinds)


# --- KEDA's NetworkPolicies ---------------------------------------------------------------------------

def test_keda_s_policies_let_the_api_server_in_and_the_operator_out_to_the_broker(
        stacks: dict[str, Rendered]):
    rendered = stacks["dev"]
    found = {p["metadata"]["name"]: p for p in rendered.find("NetworkPolicy")
             if p["metadata"]["namespace"] == "keda"}
    assert set(found) == {"keda-operator", METRICS_SERVER, WEBHOOKS}
    for name, policy in found.items():
        assert policy["metadata"]["annotations"][RELEASE_PODS] == "keda"
        assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": name,
                                                               "app.kubernetes.io/instance": "keda"}
    # The aggregation layer and the admission webhook are called from a node's address: ports, no peer.
    assert found[METRICS_SERVER]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 6443}]}]
    assert found[WEBHOOKS]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9443}]}]
    operator = found["keda-operator"]["spec"]
    assert checks._admits(operator["egress"], 15672, "TCP", "lookout-broker", "to")
    assert not checks._admits(operator["egress"], 5672, "TCP", "lookout-broker", "to"), "AMQP is the apps'"
    (grpc,) = operator["ingress"]
    assert grpc["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": METRICS_SERVER,
                                                             "app.kubernetes.io/instance": "keda"}}}]
    # The broker's side of the same connection.
    broker = rendered.one("NetworkPolicy", "lookout-broker")["spec"]["ingress"]
    assert checks._admits(broker, 15672, "TCP", "keda", "from")
    assert keda_values().get("networkPolicy") is None  # the chart's own stay off


@pytest.mark.parametrize("stack", STACKS)
def test_the_scaler_s_numbers_follow_from_the_measured_capacity(stacks: dict[str, Rendered], stack: str):
    """The figure infra/README.md records (``make capacity-notifier``) gives, through
    loadtests/queue_sizing.py, exactly the stack's settings: a new figure changes them in one place."""
    import re

    from dashboards import load_slo
    from infra.stack import REPO_ROOT
    from loadtests.queue_sizing import KEDA_POLLING_SECONDS, advise

    readme = (REPO_ROOT / "infra" / "README.md").read_text()
    rate = float(re.search(r"\*\*([\d.]+) emails/s per consumer process\*\*", readme).group(1))
    peak = float(re.search(r"([\d.]+) events/s is the planning peak", readme).group(1))
    # prod keeps two consumers through a drain or a lost node, and one replica above the peak's
    # need for the one a drain may take
    floor, spare = (2, 1) if stack == "prod" else (1, 0)
    advice = advise(rate, load_slo().notifier_threshold_seconds, peak, availability_floor=floor)
    config = stack_values(stack, fake_secrets=True)
    assert (config["notifierMessagesPerReplica"], config["notifierConsumerMinReplicas"],
            config["notifierConsumerMaxReplicas"]) == (advice.value, advice.min_replicas,
                                                   advice.max_replicas + spare)
    assert scaled_object(stacks[stack])["spec"]["pollingInterval"] == KEDA_POLLING_SECONDS
