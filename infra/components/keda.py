"""Scaling on queue depth: KEDA (kedacore chart) and a ScaledObject on the notifier's queue.

KEDA serves ``external.metrics.k8s.io`` only (its chart's one APIService,
``templates/metrics-server/apiservice.yaml``); prometheus-adapter keeps ``custom.metrics.k8s.io``
for the users API's request-rate HPA (infra/components/autoscaling.py), and metrics-server
``metrics.k8s.io``. Two owners of one APIService would take turns answering: `make helm-render`
refuses a stack whose releases render the same APIService twice
(``infra.delivery.helm_render.apiservice_problems``).

``QueueScaler`` declares, in the consumer's namespace, a ``ScaledObject`` (KEDA makes and owns the
HPA, ``keda-hpa-<name>``: the Deployment must have no HPA of its own), its
``TriggerAuthentication`` and the Secret that holds the broker's management-API URL. The trigger
reads the queue through the management API (``protocol: http``): that count is ready plus
unacknowledged messages, so the messages a pod has prefetched and is still working on keep their
pod; over AMQP only ready messages count, and scaling in could stop a busy pod (KEDA #1325).
``mode: QueueLength`` with ``value`` messages per replica: replicas = ceil(messages / value),
within [min, max]. An idle queue takes the Deployment back to its minimum after ``cooldownPeriod``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.autoscaling import API_SERVER_PORTS
from infra.components.broker import BrokerClient
from infra.components.charts import pinned_release
from infra.components.network import RELEASE_PODS, Peer, policy_spec
from infra.components.pods import app_labels, namespace_meta
from infra.helm import without_nulls

KEDA_CHART = ("keda", "2.20.2", "https://kedacore.github.io/charts")
KEDA_NAMESPACE = "keda"
KEDA_RELEASE = "keda"
KEDA_OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "keda-operator"}  # the chart's operator.name
# The chart's three Deployments (their app.kubernetes.io/name) and the ports they serve.
OPERATOR_GRPC_PORT = 9666  # the metrics server asks the operator for the scalers' values
METRICS_SERVER = "keda-operator-metrics-apiserver"
METRICS_SERVER_PORT = 6443  # service.portHttpsTarget: the API server's aggregation layer calls it
WEBHOOKS = "keda-admission-webhooks"
WEBHOOKS_PORT = 9443  # the API server calls the admission webhook
API_VERSION = "keda.sh/v1alpha1"
NOTIFIER_QUEUE = "notifier.user-events"  # app/platform/messaging.py (a test holds them equal)
NOTIFIER_CONSUMER = "lookout-notifier-consumer"  # the notifier consumer's Deployment


def keda_values() -> dict[str, Any]:
    """KEDA's values: its CRDs with the release, requests and limits for its three Deployments. The
    chart's own NetworkPolicies stay off: they admit the API server as "any pod", which its calls
    from a node's address are not; ``Keda`` declares them instead."""
    def resources(memory: str) -> dict[str, Any]:
        return {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": memory}}

    return without_nulls("keda", {
        "crds": {"install": True},
        "resources": {"operator": resources("512Mi"), "metricServer": resources("512Mi"),
                      "webhooks": resources("256Mi")},
    })


def pods(name: str) -> dict[str, str]:
    """The labels of one of the chart's Deployments' pods (what its policies select)."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": KEDA_RELEASE}


def policies(namespace: str, sources: Sequence[Peer]) -> dict[str, dict[str, Any]]:
    """{Deployment: NetworkPolicy spec}. In: the API server to the metrics server and the webhooks
    (from a node's address, as prometheus-adapter's policy admits it), the metrics server to the
    operator. Out: DNS, the API server, the operator from the metrics server, and the scalers'
    ``sources`` (the broker's management API) from the operator."""
    api_server = [Peer(port=port, cidrs=("0.0.0.0/0",)) for port in API_SERVER_PORTS]
    from_metrics_server = {"from": [{"podSelector": {"matchLabels": pods(METRICS_SERVER)}}],
                           "ports": [{"protocol": "TCP", "port": OPERATOR_GRPC_PORT}]}
    return {
        "keda-operator": policy_spec(pods("keda-operator"), ingress=[from_metrics_server],
                                     egress=[*api_server, *sources]),
        METRICS_SERVER: policy_spec(pods(METRICS_SERVER),
                                    ingress=[{"ports": [{"protocol": "TCP", "port": METRICS_SERVER_PORT}]}],
                                    egress=[*api_server, Peer(port=OPERATOR_GRPC_PORT, namespace=namespace,
                                                              pod_labels=pods("keda-operator"))]),
        WEBHOOKS: policy_spec(pods(WEBHOOKS),
                              ingress=[{"ports": [{"protocol": "TCP", "port": WEBHOOKS_PORT}]}],
                              egress=api_server),
    }


class Keda(pulumi.ComponentResource):
    """KEDA's operator, metrics server (external metrics API) and admission webhooks, from its chart,
    and a NetworkPolicy for each."""

    release: k8s.helm.v3.Release
    client: BrokerClient  # its operator's pods, which read the scalers' sources (the broker)

    def __init__(self, name: str, sources: Sequence[Peer] = (), namespace: str = KEDA_NAMESPACE,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:keda:Keda", name, None, opts)
        # Restricted: the chart's pods meet the standard by default (its "secure by default" values).
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(namespace),
                                   opts=pulumi.ResourceOptions(parent=self))
        self.release = pinned_release(f"{name}-release", KEDA_CHART, release=KEDA_RELEASE,
                                      namespace=namespace, values=keda_values(),
                                      opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        for deployment, spec in policies(namespace, sources).items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{deployment}-network", metadata={
                    "namespace": namespace, "name": deployment,
                    "labels": {"app.kubernetes.io/part-of": "lookout"},
                    "annotations": {RELEASE_PODS: KEDA_RELEASE}},
                spec=spec, opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        self.client = BrokerClient(namespace, KEDA_OPERATOR_POD_LABELS)
        self.register_outputs({})


@dataclass(frozen=True)
class QueueScalerArgs:
    namespace: str  # the consumer's
    management_url: pulumi.Input[str]  # the broker's management API with the vhost (a secret)
    min_replicas: int
    max_replicas: int
    messages_per_replica: int  # the target: a replica per this many messages in the queue
    deployment: str = NOTIFIER_CONSUMER
    queue: str = NOTIFIER_QUEUE
    polling_interval: int = 15  # seconds between two reads of the queue
    cooldown_period: int = 300  # seconds of an empty queue before going below the minimum (to 0 only)
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"replicas: need 0 <= min ({self.min_replicas}) <= max ({self.max_replicas}), "
                             "max >= 1")
        if self.messages_per_replica < 1:
            raise ValueError(f"messages_per_replica must be at least 1, got {self.messages_per_replica}")


def scaled_object_spec(name: str, args: QueueScalerArgs) -> dict[str, Any]:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": args.deployment},
        "pollingInterval": args.polling_interval,
        "cooldownPeriod": args.cooldown_period,
        "minReplicaCount": args.min_replicas,
        "maxReplicaCount": args.max_replicas,
        "triggers": [{
            "type": "rabbitmq",
            "metadata": {"protocol": "http", "queueName": args.queue, "mode": "QueueLength",
                         "value": str(args.messages_per_replica)},
            "authenticationRef": {"name": name},
        }],
    }


class QueueScaler(pulumi.ComponentResource):
    """A ScaledObject on one queue, its TriggerAuthentication and the Secret it reads."""

    def __init__(self, name: str, args: QueueScalerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:keda:QueueScaler", name, None, opts)
        labels = app_labels(args.deployment, "scaler")
        meta = {"namespace": args.namespace, "name": name, "labels": labels}
        # The host parameter holds the credentials: in a Secret, never in the trigger's metadata.
        secret = k8s.core.v1.Secret(f"{name}-secret", type="Opaque", metadata=meta,
                                    string_data={"host": args.management_url},
                                    opts=pulumi.ResourceOptions(parent=self))
        auth = k8s.apiextensions.CustomResource(
            f"{name}-auth", api_version=API_VERSION, kind="TriggerAuthentication", metadata=meta,
            spec={"secretTargetRef": [{"parameter": "host", "name": name, "key": "host"}]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[secret, *args.depends_on]))
        k8s.apiextensions.CustomResource(
            f"{name}-scaledobject", api_version=API_VERSION, kind="ScaledObject", metadata=meta,
            spec=scaled_object_spec(name, args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[auth, *args.depends_on]))
        self.register_outputs({})
