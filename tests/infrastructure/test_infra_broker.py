"""The broker: RabbitMQ from its operator, pinned, with generated credentials, scraped, with a
disruption budget and a NetworkPolicy that admits exactly its clients.

Cross-object checks over the rendered stacks (Pulumi's mocks), and the gates that hold them: the
RabbitmqCluster against the operator's vendored CRD schema, and the selectors of objects that
select pods the operator makes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra import checks, crds
from infra.components.broker import (
    AMQP_PORT,
    IMAGE,
    MANAGEMENT_PORT,
    METRICS_PORT,
    OPERATOR,
    OPERATOR_PODS,
    Broker,
    BrokerArgs,
    BrokerClient,
    broker_pod_labels,
)
from infra.components.monitoring_values import PROMETHEUS_POD_LABELS
from infra.config import BrokerSettings, ConfigError
from infra.manifests import write
from infra.mockrun import Rendered, render, run_program
from infra.stack import BROKER, BROKER_NAMESPACE, NOTIFIER, RELAY
from infra.stack_config import stack_values
from infrastructure.conftest import render_with_url

STACKS = ["dev", "staging", "prod"]
NOTIFIER_PODS = BrokerClient("lookout", {"app.kubernetes.io/name": "lookout-notifier"})
RELAY_PODS = BrokerClient("lookout", {"app.kubernetes.io/name": "lookout-relay"})
KEDA_PODS = BrokerClient("keda", {"app.kubernetes.io/name": "keda-operator"})


@pytest.fixture(scope="module")
def stacks() -> dict[str, Rendered]:
    return {name: render(name) for name in STACKS}


def broker_args(**overrides: Any) -> BrokerArgs:
    return BrokerArgs(**{"scrape_namespace": "monitoring", "prometheus_pod_labels": PROMETHEUS_POD_LABELS,
                         "clients": (NOTIFIER_PODS, RELAY_PODS), "management_clients": (KEDA_PODS,),
                         **overrides})


@pytest.fixture(scope="module")
def alone() -> tuple[Rendered, Broker]:
    """The component rendered on its own, with its url exported (secret) and unwrapped."""
    return render_with_url(lambda: Broker("lookout-broker", broker_args()))


# --- the operator and the cluster ------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_the_operator_is_the_pinned_release_manifest_and_the_cluster_its_custom_resource(
        stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    name, version, url = OPERATOR
    assert [f["file"] for f in rendered.manifest_files] == [url]
    assert url == f"https://github.com/rabbitmq/cluster-operator/releases/download/{version}/{name}.yml"
    cluster = rendered.one("RabbitmqCluster", BROKER)
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["metadata"]["namespace"] == BROKER_NAMESPACE
    assert cluster["spec"]["image"] == IMAGE == "rabbitmq:4.2.6-management"  # the operator's default, pinned
    # The cluster waits for the operator, which waits for cert-manager (its webhook's certificate).
    assert f"{BROKER}-operator" in rendered.depends_on[f"{BROKER}-cluster"]
    assert rendered.depends_on[f"{BROKER}-operator"] == ["lookout-edge-cert-manager"]


def test_make_manifests_lists_the_operator_s_manifest(stacks: dict[str, Rendered], tmp_path: Path):
    write(stacks["dev"], tmp_path)
    listed = yaml.safe_load((tmp_path / "manifest-files.yaml").read_text())["files"]
    assert listed == [{"name": f"{BROKER}-operator", "file": OPERATOR[2]}]


@pytest.mark.parametrize("stack", STACKS)
def test_the_cluster_follows_the_stack_s_broker_settings(stacks: dict[str, Rendered], stack: str):
    config = stack_values(stack, fake_secrets=True)
    spec = stacks[stack].one("RabbitmqCluster", BROKER)["spec"]
    assert spec["replicas"] == config["brokerReplicas"] == (1 if stack == "dev" else 3)
    assert spec["persistence"] == {"storage": config["brokerStorageSize"]}
    assert spec["resources"] == {
        "requests": {"cpu": config["brokerCpuRequest"], "memory": config["brokerMemoryRequest"]},
        "limits": {"cpu": config["brokerCpuLimit"], "memory": config["brokerMemoryLimit"]}}


def test_the_vendored_crd_schema_is_the_pinned_operator_s():
    name, version, _ = OPERATOR
    data = json.loads((crds.CRDS_DIR / f"{name}-{version}.json").read_text())
    assert (data["chart"], data["version"]) == (name, version)
    assert data["source"]["repository"] == "rabbitmq/cluster-operator" and data["source"]["tag"] == version
    assert set(data["schemas"]) == {"rabbitmq.com/v1beta1/RabbitmqCluster"}
    assert ("rabbitmq.com/v1beta1", "RabbitmqCluster") in crds.vendored_schemas()


def test_the_cluster_passes_the_crd_schema_and_a_misspelt_field_fails(stacks: dict[str, Rendered]):
    cluster = stacks["prod"].one("RabbitmqCluster", BROKER)
    assert checks.schema_problems([cluster]) == []
    wrong = {**cluster, "spec": {**cluster["spec"], "persistance": {"storage": "1Gi"}}}
    assert any("persistance" in p for p in checks.schema_problems([wrong]))
    negative = {**cluster, "spec": {**cluster["spec"], "replicas": -1}}
    assert any("replicas" in p for p in checks.schema_problems([negative]))


# --- credentials ---------------------------------------------------------------------------------------

def test_the_credentials_are_generated_into_the_secret_the_operator_takes_and_the_url_is_secret(
        alone: tuple[Rendered, Broker]):
    rendered, _ = alone
    assert rendered.outputs["url"] == "[secret]"
    url = rendered.outputs["url_plain"]
    cluster = rendered.one("RabbitmqCluster", "lookout-broker")
    secret_name = cluster["spec"]["secretBackend"]["externalSecret"]["name"]
    secret = rendered.one("Secret", secret_name)
    data = secret["stringData"]
    password = data["password"]
    assert password.startswith("mock")  # pulumi_random's result (mockrun), not a literal
    assert data["default_user.conf"] == f"default_user = {data['username']}\ndefault_pass = {password}\n"
    assert url == (f"amqp://{data['username']}:{password}@lookout-broker.lookout-broker.svc.cluster.local:"
                   f"{AMQP_PORT}/%2F") == data["connection_string"]
    assert data["management_url"] == url.replace("amqp://", "http://").replace(
        f":{AMQP_PORT}/", f":{MANAGEMENT_PORT}/")
    assert {"host", "port", "provider", "type"} <= set(data)  # the operator's default-user format


@pytest.mark.parametrize("stack", STACKS)
def test_the_services_get_the_broker_s_url_as_a_secret(stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    assert rendered.outputs["brokerUrl"] == "[secret]"
    secret = rendered.one("Secret", f"{BROKER}-default-user")["stringData"]
    for name in (NOTIFIER, RELAY):
        files = [s for s in rendered.find("Secret") if s["metadata"]["namespace"] == "lookout"
                 and s["metadata"]["name"].startswith(name) and "BROKER_URL" in (s.get("stringData") or {})]
        assert files, f"{name} has no BROKER_URL"
        assert all(f["stringData"]["BROKER_URL"] == secret["connection_string"] for f in files)
        assert BROKER in rendered.depends_on[name], "they start once every broker node is ready"


# --- disruption budget, metrics ----------------------------------------------------------------------

@pytest.mark.parametrize("stack", STACKS)
def test_one_node_at_a_time_may_be_disrupted(stacks: dict[str, Rendered], stack: str):
    pdb = stacks[stack].one("PodDisruptionBudget", BROKER)
    assert pdb["metadata"]["namespace"] == BROKER_NAMESPACE
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": broker_pod_labels(BROKER)}}
    assert pdb["metadata"]["annotations"][OPERATOR_PODS] == f"RabbitmqCluster/{BROKER}"


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_scrapes_the_broker_as_lookout_broker_metrics(stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    monitor = rendered.one("ServiceMonitor", "lookout-broker-metrics")
    (service,) = [s for s in rendered.find("Service") if s["metadata"]["namespace"] == BROKER_NAMESPACE
                  and checks.matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert service["metadata"]["name"] == "lookout-broker-metrics"  # the job label
    assert service["spec"]["selector"] == broker_pod_labels(BROKER)
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == METRICS_PORT == 15692
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [port["name"]]
    # each queue its own series (labelled queue), which the notifier's panels and alerts select
    assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics/per-object"]
    ingress = rendered.one("NetworkPolicy", BROKER)["spec"]["ingress"]
    assert checks._admits(ingress, METRICS_PORT, "TCP", "monitoring", "from")


# --- the NetworkPolicy -------------------------------------------------------------------------------

def peers_on(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [peer for rule in policy["spec"]["ingress"]
            if any(p["port"] == port for p in rule["ports"]) for peer in rule["from"]]


@pytest.mark.parametrize("stack", STACKS)
def test_the_policy_admits_exactly_the_notifier_the_relay_prometheus_the_operator_and_keda(
        stacks: dict[str, Rendered], stack: str):
    policy = stacks[stack].one("NetworkPolicy", BROKER)
    assert policy["spec"]["podSelector"] == {"matchLabels": broker_pod_labels(BROKER)}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert all(rule.get("from") and rule.get("ports") for rule in policy["spec"]["ingress"]), \
        "no rule admits every source or every port"
    assert peers_on(policy, AMQP_PORT) == [NOTIFIER_PODS.peer(), RELAY_PODS.peer()]
    assert peers_on(policy, METRICS_PORT) == [BrokerClient("monitoring", PROMETHEUS_POD_LABELS).peer()]
    assert peers_on(policy, MANAGEMENT_PORT) == [
        BrokerClient("rabbitmq-system", {"app.kubernetes.io/name": "rabbitmq-cluster-operator"}).peer(),
        KEDA_PODS.peer()]
    nodes = {"podSelector": {"matchLabels": broker_pod_labels(BROKER)}}  # clustering: its own pods only
    assert peers_on(policy, 25672) == [nodes] and peers_on(policy, 4369) == [nodes]
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {AMQP_PORT, METRICS_PORT, MANAGEMENT_PORT, 4369, 25672, 35672}


@pytest.mark.parametrize("stack", STACKS)
def test_the_clients_pods_exist_and_their_egress_reaches_the_broker(stacks: dict[str, Rendered], stack: str):
    rendered = stacks[stack]
    for client in (NOTIFIER_PODS, RELAY_PODS):
        selected = checks.pods_selected(rendered.objects, client.namespace,
                                        {"matchLabels": dict(client.pod_labels)})
        assert selected, f"no declared pods are {client.pod_labels}"
        for workload, template in selected:
            egress = checks._policies_for(rendered.objects, client.namespace, template["metadata"]["labels"],
                                          "egress")
            assert egress is not None and checks._admits(egress, AMQP_PORT, "TCP", BROKER_NAMESPACE, "to"), \
                checks._ref(workload)


def test_a_client_not_named_is_refused():
    rendered = run_program(lambda: Broker("b", broker_args(clients=(NOTIFIER_PODS,))), "test")
    ingress = rendered.one("NetworkPolicy", "b")["spec"]["ingress"]
    amqp = [rule for rule in ingress if any(p["port"] == AMQP_PORT for p in rule["ports"])]
    assert [peer for rule in amqp for peer in rule["from"]] == [NOTIFIER_PODS.peer()]
    assert not any(checks.matches(peer["podSelector"], dict(RELAY_PODS.pod_labels))
                   for rule in amqp for peer in rule["from"])


# --- the selector gate for pods the operator makes --------------------------------------------------

def test_objects_selecting_the_operator_s_pods_pass_and_a_wrong_claim_fails(stacks: dict[str, Rendered]):
    objects = stacks["dev"].objects
    assert checks.selector_problems(objects) == []
    pdb = stacks["dev"].one("PodDisruptionBudget", BROKER)
    # Labels the operator does not give its pods: nothing is selected, whatever the annotation says.
    wrong_labels = {**pdb, "spec": {**pdb["spec"], "selector": {"matchLabels": {"app": "rabbitmq"}}}}
    # A cluster that is not declared.
    other = {**pdb, "metadata": {**pdb["metadata"], "annotations": {OPERATOR_PODS: "RabbitmqCluster/other"}}}
    unannotated = {**pdb, "metadata": {**pdb["metadata"], "annotations": {}}}
    for bad in (wrong_labels, other, unannotated):
        rest = [o for o in objects if o is not pdb]
        assert any("PodDisruptionBudget lookout-broker/lookout-broker: selector matches no pods" in p
                   for p in checks.selector_problems([*rest, bad])), bad["metadata"]


# --- settings ------------------------------------------------------------------------------------------

def settings(**overrides: Any) -> BrokerSettings:
    values = {"replicas": 3, "storage_size": "8Gi", "cpu_request": "500m", "cpu_limit": "2",
              "memory_request": "2Gi", "memory_limit": "2Gi", **overrides}
    return BrokerSettings(**values)


@pytest.mark.parametrize("overrides, key", [
    ({"replicas": 2}, "brokerReplicas"),  # no majority survives the loss of one of two
    ({"replicas": 0}, "brokerReplicas"),
    ({"cpu_request": "3"}, "brokerCpuRequest"),
    ({"memory_request": "4Gi"}, "brokerMemoryRequest"),
    ({"storage_size": "lots"}, "brokerStorageSize"),
])
def test_bad_broker_settings_fail_naming_the_key(overrides: dict[str, Any], key: str):
    with pytest.raises(ConfigError, match=key):
        settings(**overrides)


def test_the_settings_become_the_component_s_args():
    args = settings().args("monitoring", PROMETHEUS_POD_LABELS, clients=[NOTIFIER_PODS])
    assert (args.replicas, args.storage_size) == (3, "8Gi")
    assert (args.cpu_request, args.memory_limit) == ("500m", "2Gi")
    assert args.clients == (NOTIFIER_PODS,) and args.scrape_namespace == "monitoring"


def test_the_broker_needs_no_running_engine_for_its_outputs():
    """``peer`` and ``target`` are plain data, known before anything is deployed (the services'
    network policies and Prometheus's targets are built from them)."""
    found: dict[str, Broker] = {}

    def program() -> None:
        found["b"] = Broker("lookout-broker", broker_args())
        pulumi.export("peer", found["b"].peer.port)

    run_program(program, "test")
    broker = found["b"]
    assert broker.peer.rule()["ports"] == [{"protocol": "TCP", "port": AMQP_PORT}]
    assert broker.peer.pod_labels == broker_pod_labels("lookout-broker")
    assert (broker.target.name, broker.target.port) == ("lookout-broker-metrics", "metrics")
