"""What the rules and dashboards select: the service's metrics job and its Kubernetes objects.

These names are fixed by infra/ (the metrics Service, the Deployment, its HPA and container);
tests/infrastructure/test_infra_dashboards.py renders the stacks and fails when they drift apart,
since a wrong name here silences every alert without an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.utils import floatToGoString


@dataclass(frozen=True)
class Target:
    job: str = "lookout-metrics"  # the ServiceMonitor names the job after the metrics Service
    namespace: str = "lookout"
    deployment: str = "lookout"
    hpa: str = "lookout"
    container: str = "app"
    api_routes: str = "/api/.*"  # the SLIs count API requests, not probes, docs or unmatched paths
    service: str = "lookout"  # the pods' app.kubernetes.io/name, which the log collector makes service_name
    # The notifier's metrics job (its consumer and its API: the metrics Service over both).
    notifier_job: str = "lookout-notifier-metrics"
    # The users service's outbox relay (`flask --app app events relay`, its metrics on :9102) and
    # the broker's own exporter (RabbitMQ's rabbitmq_prometheus plugin, :15692, scraped with its
    # per-object metrics: `/metrics/per-object`, or `prometheus.return_per_object_metrics = true`,
    # so each queue is a series labelled queue and vhost; the aggregated `/metrics` has no queue).
    relay_job: str = "lookout-relay-metrics"
    broker_job: str = "lookout-broker-metrics"
    # The notifier's queues, as app/platform/messaging.py declares them (this package imports
    # nothing of the app; the broker contract test checks the names on a real RabbitMQ).
    notifier_queue: str = "notifier.user-events"
    dead_letter_queue: str = "notifier.dead-letters"

    @property
    def app(self) -> str:
        """Matchers for the app's own series."""
        return f'job="{self.job}"'

    @property
    def api(self) -> str:
        """Matchers for the app's API requests."""
        return f'job="{self.job}", route=~"{self.api_routes}"'

    @property
    def notifier(self) -> str:
        """Matchers for the notifier consumer's series."""
        return f'job="{self.notifier_job}"'

    @property
    def relay(self) -> str:
        """Matchers for the outbox relay's series."""
        return f'job="{self.relay_job}"'

    @property
    def broker(self) -> str:
        """Matchers for the broker exporter's series."""
        return f'job="{self.broker_job}"'

    def queue(self, name: str) -> str:
        """Matchers for one queue's series on the broker's exporter."""
        return f'{self.broker}, queue="{name}"'

    @property
    def logs(self) -> str:
        """Loki stream selector of the service's log lines."""
        return f'service_name="{self.service}"'

    @property
    def containers(self) -> str:
        """Matchers for the containers of every service in the namespace (all are named alike)."""
        return f'namespace="{self.namespace}", container="{self.container}"'

    @property
    def pods(self) -> str:
        """Matchers for cAdvisor and kube-state-metrics series of the service's container.

        Every service's container is named alike, so the pod's name tells them apart: a pod of
        Deployment (or Rollout) ``d`` is ``d-<template hash>-<suffix>``, and neither part has a
        hyphen, so ``lookout`` does not take in ``lookout-notifier-consumer``'s pods."""
        return (f'namespace="{self.namespace}", container="{self.container}", '
                f'pod=~"{self.deployment}-[a-z0-9]+-[a-z0-9]+"')


TARGET = Target()


def le(seconds: float) -> str:
    """Return a bucket bound as the client library writes it in the ``le`` label (0.25 -> "0.25")."""
    return floatToGoString(seconds)


def number(value: float) -> str:
    """Write a number for PromQL without float noise (0.0144, 14.4, 1)."""
    return f"{value:.12g}"
