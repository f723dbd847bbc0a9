"""Broker: RabbitMQ for the services' events, run by the RabbitMQ Cluster Operator.

The operator is RabbitMQ's own (rabbitmq/cluster-operator), installed from its release manifest,
which is how the project ships it (it publishes no Helm chart). A ``RabbitmqCluster`` then asks it
for the broker: a StatefulSet with a volume per node, its Services, and the plugins it always
enables (management, and rabbitmq_prometheus, whose metrics on 15692 Prometheus scrapes here).

Credentials are generated here (pulumi_random) into the Secret the operator takes as its default
user (``secretBackend.externalSecret``, in the format its own default-user Secret has), so the
program knows the password and hands the services an ``amqp://`` URL as a Pulumi secret, without
reading back what the operator made. The same Secret carries the management API's URL, which the
queue-depth scaler reads (infra/components/keda.py).

Around it: a PodDisruptionBudget (one node down at a time: quorum queues keep a majority), a
Service for Prometheus's scrapes, and a NetworkPolicy that lets in only the clients named in
``BrokerArgs.clients`` (AMQP), Prometheus (metrics), the operator and the scaler (management API)
and the broker's own nodes (clustering).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components.monitoring import ScrapeTarget
from infra.components.network import Peer, namespace_selector, policy_spec
from infra.components.pods import app_labels, namespace_meta

# (name, version, release manifest): the operator's own installation manifest of that release.
OPERATOR = ("cluster-operator", "v2.22.3",
            "https://github.com/rabbitmq/cluster-operator/releases/download/v2.22.3/cluster-operator.yml")
OPERATOR_NAMESPACE = "rabbitmq-system"  # the manifest's own namespace
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "rabbitmq-cluster-operator"}
# The operator v2.22.3's default image (cmd/main.go), named here so an operator upgrade does not
# move RabbitMQ with it: a RabbitMQ upgrade is a change of its own.
IMAGE = "rabbitmq:4.2.6-management"
API_VERSION = "rabbitmq.com/v1beta1"
KIND = "RabbitmqCluster"
AMQP_PORT = 5672
MANAGEMENT_PORT = 15672
METRICS_PORT = 15692  # rabbitmq_prometheus
# Between the nodes: epmd, Erlang distribution, and the CLI tools' range (the operator runs them).
CLUSTER_PORTS = ({"protocol": "TCP", "port": 4369}, {"protocol": "TCP", "port": 25672},
                 {"protocol": "TCP", "port": 35672, "endPort": 35682})
VHOST = "%2F"  # the default virtual host "/", as a URL path
# On a policy or Service for pods an operator makes from a declared custom resource (no declared
# object shows them): "<Kind>/<name>" of that resource, in the same namespace (infra/checks.py).
OPERATOR_PODS = "lookout.dev/pods-of-custom-resource"


def broker_pod_labels(name: str) -> dict[str, str]:
    """The labels the operator gives a RabbitmqCluster's pods (internal/metadata/label.go)."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "rabbitmq"}


@dataclass(frozen=True)
class BrokerClient:
    """Pods that may open AMQP connections to the broker."""

    namespace: str
    pod_labels: Mapping[str, str]

    def peer(self) -> dict[str, Any]:
        return {"namespaceSelector": namespace_selector(self.namespace),
                "podSelector": {"matchLabels": dict(self.pod_labels)}}


@dataclass(frozen=True)
class BrokerArgs:
    scrape_namespace: str  # where Prometheus runs
    prometheus_pod_labels: Mapping[str, str]
    clients: Sequence[BrokerClient] = ()  # AMQP clients: the services that publish and consume
    # Readers of the management API besides the operator: the queue-depth scaler (KEDA's operator).
    management_clients: Sequence[BrokerClient] = ()
    namespace: str = "lookout-broker"
    replicas: int = 1
    storage_size: str = "1Gi"
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    username: str = "lookout"
    # What the operator's installation waits for: cert-manager (its webhook's certificate).
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


def cluster_spec(name: str, args: BrokerArgs, secret: str) -> dict[str, Any]:
    """The RabbitmqCluster's spec: nodes, storage, resources, and the default user from ``secret``."""
    return {
        "replicas": args.replicas,
        "image": IMAGE,
        "persistence": {"storage": args.storage_size},
        "resources": {"requests": {"cpu": args.cpu_request, "memory": args.memory_request},
                      "limits": {"cpu": args.cpu_limit, "memory": args.memory_limit}},
        "secretBackend": {"externalSecret": {"name": secret}},
        "service": {"type": "ClusterIP"},
        "rabbitmq": {
            # Quorum queues are the services' (app/platform/messaging.py); a new queue of any other
            # client is one too, replicated on every node.
            "additionalConfig": "default_queue_type = quorum\n",
        },
    }


def broker_management(name: str, namespace: str) -> Peer:
    """The broker's management API as a peer of the clients that read it (the queue-depth scaler)."""
    return Peer(port=MANAGEMENT_PORT, namespace=namespace, pod_labels=broker_pod_labels(name))


def broker_target(name: str, namespace: str) -> ScrapeTarget:
    """The broker's metrics Service as Prometheus scrapes it (job ``<name>-metrics``)."""
    # Per-object metrics: the default /metrics aggregates every queue into one series without a
    # queue label, and the notifier's queue depth, dead letters and consumers are per queue
    # (dashboards/generate/target.py; tests/test_messaging_live.py reads the same path).
    return ScrapeTarget(f"{name}-metrics", namespace, app_labels(name, "metrics"), port="metrics",
                        path="/metrics/per-object")


class Broker(pulumi.ComponentResource):
    """A RabbitMQ cluster: its ``url`` for the services, their egress ``peer`` and its scrape ``target``."""

    url: pulumi.Output[str]  # amqp://, a secret
    management_url: pulumi.Output[str]  # http:// of the management API with the vhost, a secret
    peer: Peer
    target: ScrapeTarget
    secret_name: str  # the credentials' Secret in the broker's namespace

    def __init__(self, name: str, args: BrokerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:broker:Broker", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        operator = k8s.yaml.v2.ConfigFile(
            f"{name}-operator", file=OPERATOR[2],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)))
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(args.namespace), opts=child)

        # Letters and digits only: the password goes into URLs and default_user.conf unescaped.
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=child)
        host = f"{name}.{args.namespace}.svc.cluster.local"  # the operator's client Service
        self.url = pulumi.Output.secret(pulumi.Output.concat(
            "amqp://", args.username, ":", password.result, "@", host, f":{AMQP_PORT}/{VHOST}"))
        self.management_url = pulumi.Output.secret(pulumi.Output.concat(
            "http://", args.username, ":", password.result, "@", host, f":{MANAGEMENT_PORT}/{VHOST}"))
        self.secret_name = f"{name}-default-user"
        labels = app_labels(name, "broker")
        # The operator's default-user format (its docs' external-admin-secret-credentials example).
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials", type="Opaque",
            metadata={"namespace": args.namespace, "name": self.secret_name, "labels": labels},
            string_data={
                "default_user.conf": pulumi.Output.concat(
                    "default_user = ", args.username, "\ndefault_pass = ", password.result, "\n"),
                "username": args.username, "password": password.result,
                "host": host, "port": str(AMQP_PORT), "provider": "rabbitmq", "type": "rabbitmq",
                "connection_string": self.url, "management_url": self.management_url,
            }, opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        k8s.apiextensions.CustomResource(
            f"{name}-cluster", api_version=API_VERSION, kind=KIND,
            metadata={"namespace": args.namespace, "name": name, "labels": labels,
                      "annotations": {"pulumi.com/waitFor": "condition=AllReplicasReady",
                                      "pulumi.com/timeoutSeconds": "900"}},
            spec=cluster_spec(name, args, self.secret_name),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[operator, ns, credentials]))

        pods = broker_pod_labels(name)
        made_by = {OPERATOR_PODS: f"{KIND}/{name}"}
        after = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        # One node at a time: with 3 nodes quorum queues keep their majority; with 1 a drain waits.
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-disruption", metadata={"namespace": args.namespace, "name": name, "labels": labels,
                                            "annotations": made_by},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": pods}}, opts=after)
        # The operator's own Service carries 15692 too, but is named after the cluster: this one
        # names the scrape job (dashboards/generate: the broker's panels select it).
        metrics = f"{name}-metrics"
        k8s.core.v1.Service(
            f"{name}-metrics-service",
            metadata={"namespace": args.namespace, "name": metrics, "labels": app_labels(name, "metrics"),
                      "annotations": made_by},
            spec={"type": "ClusterIP", "selector": pods,
                  "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT,
                             "protocol": "TCP"}]}, opts=after)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network", metadata={"namespace": args.namespace, "name": name, "labels": labels,
                                         "annotations": made_by},
            spec=broker_policy(pods, args), opts=after)

        self.peer = Peer(port=AMQP_PORT, namespace=args.namespace, pod_labels=pods)
        self.target = broker_target(name, args.namespace)
        self.register_outputs({"url": self.url})


def broker_policy(pods: Mapping[str, str], args: BrokerArgs) -> dict[str, Any]:
    """In: AMQP from the clients, metrics from Prometheus, the management API from the operator and
    the scaler, clustering from the broker's own nodes. Out: DNS and the other nodes (RabbitMQ
    4.1's Kubernetes peer discovery asks no API: a new node joins the ``-0`` pod by its DNS name)."""
    def tcp(port: int) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": port}]

    own = {"podSelector": {"matchLabels": dict(pods)}}
    operator = BrokerClient(OPERATOR_NAMESPACE, OPERATOR_POD_LABELS)
    ingress: list[dict[str, Any]] = [{"from": [own], "ports": list(CLUSTER_PORTS)}]
    if args.clients:
        ingress.append({"from": [c.peer() for c in args.clients], "ports": tcp(AMQP_PORT)})
    ingress.append({"from": [BrokerClient(args.scrape_namespace, args.prometheus_pod_labels).peer()],
                    "ports": tcp(METRICS_PORT)})
    ingress.append({"from": [c.peer() for c in (operator, *args.management_clients)],
                    "ports": tcp(MANAGEMENT_PORT)})
    spec = policy_spec(pods, ingress=ingress, egress=[])
    spec["egress"].append({"to": [own], "ports": list(CLUSTER_PORTS)})
    return spec
