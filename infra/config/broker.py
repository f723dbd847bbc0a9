"""The broker's settings (``BrokerArgs``) and the notifier consumer's queue-depth target
(``QueueScalerArgs``, with ``notifierConsumerMinReplicas``/``MaxReplicas`` of NotifierSettings).

The scaler's numbers (``notifierMessagesPerReplica`` and the consumer's min and max replicas)
follow from the notifier's measured capacity by loadtests/queue_sizing.py's ``advise`` (infra/README.md,
"Scaling behaviour"); tests/infrastructure/test_infra_keda.py holds the stack settings to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import pulumi

from infra.components.broker import BrokerArgs, BrokerClient
from infra.components.keda import QueueScalerArgs
from infra.config.fields import Group, Key, quantity
from infra.stack_config import ConfigError, parse_quantity


@dataclass(frozen=True)
class BrokerSettings(Group):
    """The RabbitMQ cluster: nodes, volume per node, and each node's requests and limits."""

    replicas: Annotated[int, Key("brokerReplicas", at_least=1)]
    storage_size: Annotated[str, Key("brokerStorageSize", check=quantity)]
    cpu_request: Annotated[str, Key("brokerCpuRequest", check=quantity)]
    cpu_limit: Annotated[str, Key("brokerCpuLimit", check=quantity)]
    memory_request: Annotated[str, Key("brokerMemoryRequest", check=quantity)]
    memory_limit: Annotated[str, Key("brokerMemoryLimit", check=quantity)]

    def check(self) -> None:
        if self.replicas % 2 == 0:
            raise ConfigError(f"brokerReplicas must be odd (1, 3, 5): quorum queues need a majority, "
                              f"got {self.replicas}")
        if parse_quantity("brokerCpuRequest", self.cpu_request) > parse_quantity(
                "brokerCpuLimit", self.cpu_limit):
            raise ConfigError("brokerCpuRequest must not exceed brokerCpuLimit")
        if parse_quantity("brokerMemoryRequest", self.memory_request) > parse_quantity(
                "brokerMemoryLimit", self.memory_limit):
            raise ConfigError("brokerMemoryRequest must not exceed brokerMemoryLimit")

    def args(self, scrape_namespace: str, prometheus_pod_labels: Mapping[str, str],
             clients: Sequence[BrokerClient] = (), management_clients: Sequence[BrokerClient] = (),
             depends_on: Sequence[pulumi.Resource] = ()) -> BrokerArgs:
        """Return the component's Args: who connects (AMQP), who reads the management API, and
        where Prometheus runs."""
        return BrokerArgs(scrape_namespace=scrape_namespace, prometheus_pod_labels=prometheus_pod_labels,
                          clients=tuple(clients), management_clients=tuple(management_clients),
                          replicas=self.replicas, storage_size=self.storage_size,
                          cpu_request=self.cpu_request, cpu_limit=self.cpu_limit,
                          memory_request=self.memory_request, memory_limit=self.memory_limit,
                          depends_on=tuple(depends_on))


@dataclass(frozen=True)
class QueueScalingSettings(Group):
    """The notifier consumer's queue-depth target; its bounds are NotifierSettings' consumer replicas."""

    messages_per_replica: Annotated[int, Key("notifierMessagesPerReplica", at_least=1)]

    def args(self, namespace: str, management_url: pulumi.Input[str], deployment: str, min_replicas: int,
             max_replicas: int, depends_on: Sequence[pulumi.Resource] = ()) -> QueueScalerArgs:
        return QueueScalerArgs(namespace=namespace, management_url=management_url, deployment=deployment,
                               min_replicas=min_replicas, max_replicas=max_replicas,
                               messages_per_replica=self.messages_per_replica, depends_on=tuple(depends_on))
