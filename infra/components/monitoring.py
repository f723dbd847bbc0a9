"""Monitoring: kube-prometheus-stack, OpenTelemetry Collectors, Tempo, Loki, and the repo's dashboards
and rules.

Dashboards (``dashboards/*.json``) become one ConfigMap each, which Grafana's sidecar loads; the
plain rule files (``dashboards/rules/*.yaml``, the ones promtool tests) are wrapped in one
PrometheusRule; each ``ScrapeTarget`` becomes a ServiceMonitor. The releases' Helm values are in
monitoring_values.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml

from infra.components.alerting import PAGERDUTY_KEY, RECEIVERS_SECRET, SLACK_KEY, AlertingArgs
from infra.components.charts import pinned_release
from infra.components.monitoring_values import (
    COLLECTOR,
    LOGS_COLLECTOR,
    LOKI,
    OTLP_HTTP_PORT,
    PROMETHEUS_SERVICE,
    RELEASE,
    TEMPO,
    collector_values,
    logs_collector_values,
    loki_values,
    stack_values,
    tempo_values,
)
from infra.components.network import Peer
from infra.components.pods import namespace_meta

KPS_CHART = ("kube-prometheus-stack", "79.7.1", "https://prometheus-community.github.io/helm-charts")
OTEL_CHART = ("opentelemetry-collector", "0.143.0", "https://open-telemetry.github.io/opentelemetry-helm-charts")
# Tempo 2.6, single binary; the chart moved from grafana to grafana-community (infra/charts/README.md).
TEMPO_CHART = ("tempo", "1.16.0", "https://grafana-community.github.io/helm-charts")
# Loki 3.7, one process; the OSS chart moved from grafana to grafana-community in March 2026.
LOKI_CHART = ("loki", "18.11.0", "https://grafana-community.github.io/helm-charts")


@dataclass(frozen=True)
class ScrapeTarget:
    """A Service to scrape: its namespace, its labels and the name of its metrics port."""

    name: str
    namespace: str
    service_labels: Mapping[str, str]
    port: str = "http"
    path: str = "/metrics"
    interval: str = "15s"
    pod_target_labels: Sequence[str] = ()  # pod labels copied onto every series (a Rollout's revision)


@dataclass(frozen=True)
class MonitoringArgs:
    namespace: str
    dashboard_files: Sequence[Path]
    rule_files: Sequence[Path]
    targets: Sequence[ScrapeTarget]
    grafana_service_type: str = "ClusterIP"
    prometheus_retention: str = "7d"
    prometheus_storage_size: str = ""  # a volume for Prometheus's data; empty: the pod's own disk
    traces_export_endpoint: str = ""  # a further OTLP/HTTP destination for traces; empty for none
    trace_store: bool = True  # Tempo in this namespace, Grafana's "traces" data source
    trace_retention: str = "72h"
    trace_storage_size: str = ""  # a volume for Tempo's traces; empty: the pod's own disk
    log_store: bool = True  # Loki and a log-collecting DaemonSet; Grafana's "logs" data source
    log_retention: str = "168h"
    log_storage_size: str = ""  # a volume for Loki's chunks and index; empty: the pod's own disk
    log_storage_class: str = ""  # that volume's storage class; empty: the cluster's default
    # Alertmanagers gossip silences and what they have sent: with two, a restart loses neither and
    # no alert waits for a pod to come back.
    alertmanager_replicas: int = 1
    control_plane: bool = False  # scrape and alert on the controller manager, scheduler, etcd, kube-proxy
    alerting: AlertingArgs = field(default_factory=AlertingArgs)  # where alerts go (components/alerting.py)


def dashboard_name(path: Path) -> str:
    """Return a DNS-1123 ConfigMap name for a dashboard file."""
    return "dashboard-" + re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")


def rule_groups(rule_files: Sequence[Path]) -> list[dict[str, Any]]:
    """Return the groups of the plain rule files, in file order, as the PrometheusRule carries them."""
    groups: list[dict[str, Any]] = []
    for path in rule_files:
        groups.extend((yaml.safe_load(path.read_text()) or {}).get("groups") or [])
    names = [group["name"] for group in groups]
    if len(names) != len(set(names)):
        raise ValueError(f"rule group names must be unique across {[p.name for p in rule_files]}: {names}")
    return groups


class Monitoring(pulumi.ComponentResource):
    """Prometheus, Alertmanager and Grafana (kube-prometheus-stack), a collector, dashboards and rules."""

    namespace: pulumi.Output[str]
    grafana_address: pulumi.Output[str]
    grafana_admin_password: pulumi.Output[str]
    collector_endpoint: str
    collector: Peer
    prometheus_url: str  # in-cluster address of Prometheus's API (the canary analysis asks it)

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:monitoring:Monitoring", name, None, opts)
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=_monitoring_namespace(args.namespace),
                                   opts=pulumi.ResourceOptions(parent=self))
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        meta = {"namespace": args.namespace, "labels": {"app.kubernetes.io/part-of": "lookout"}}

        password = random.RandomPassword(f"{name}-grafana-password", length=32, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        admin = k8s.core.v1.Secret(f"{name}-grafana-admin", metadata={**meta, "name": "grafana-admin"},
                                   string_data={"admin-user": "admin", "admin-password": password.result},
                                   opts=in_ns)
        receivers = {key: value for key, value in ((PAGERDUTY_KEY, args.alerting.pagerduty_routing_key),
                                                   (SLACK_KEY, args.alerting.slack_webhook_url))
                     if value is not None}
        # Always there, empty or not: Alertmanager's pod mounts it.
        receiver_secret = k8s.core.v1.Secret(
            f"{name}-alertmanager-receivers", metadata={**meta, "name": RECEIVERS_SECRET},
            string_data=receivers, opts=in_ns)
        stack = pinned_release(
            f"{name}-kube-prometheus-stack", KPS_CHART, release=RELEASE, namespace=args.namespace,
            values=stack_values(args), timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, admin, receiver_secret]))
        if args.trace_store:
            pinned_release(f"{name}-tempo", TEMPO_CHART, release=TEMPO, namespace=args.namespace,
                           values=tempo_values(args), opts=in_ns)
        pinned_release(f"{name}-otel-collector", OTEL_CHART, release=COLLECTOR, namespace=args.namespace,
                       values=collector_values(args), opts=in_ns)

        if args.log_store:
            loki = pinned_release(f"{name}-loki", LOKI_CHART, release=LOKI, namespace=args.namespace,
                                  values=loki_values(args), opts=in_ns)
            pinned_release(f"{name}-otel-logs", OTEL_CHART, release=LOGS_COLLECTOR, namespace=args.namespace,
                           values=logs_collector_values(args),
                           opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, loki]))

        after_crds = pulumi.ResourceOptions(parent=self, depends_on=[stack])  # the chart installs the CRDs
        release_labels = {**meta["labels"], "release": RELEASE}
        for target in args.targets:
            k8s.apiextensions.CustomResource(
                f"{name}-servicemonitor-{target.name}", api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor", metadata={**meta, "name": target.name, "labels": release_labels},
                spec={"namespaceSelector": {"matchNames": [target.namespace]},
                      "selector": {"matchLabels": dict(target.service_labels)},
                      "endpoints": [{"port": target.port, "path": target.path, "interval": target.interval}],
                      **({"podTargetLabels": list(target.pod_target_labels)}
                         if target.pod_target_labels else {})},
                opts=after_crds)
        groups = rule_groups(args.rule_files)
        if groups:  # a PrometheusRule without groups is rejected by the operator's schema
            k8s.apiextensions.CustomResource(
                f"{name}-rules", api_version="monitoring.coreos.com/v1", kind="PrometheusRule",
                metadata={**meta, "name": "lookout-rules", "labels": release_labels},
                spec={"groups": groups}, opts=after_crds)
        for path in args.dashboard_files:
            json.loads(path.read_text())  # Grafana drops a broken dashboard silently: fail here instead
            k8s.core.v1.ConfigMap(
                f"{name}-{dashboard_name(path)}",
                metadata={**meta, "name": dashboard_name(path),
                          "labels": {**meta["labels"], "grafana_dashboard": "1"}},
                data={path.name: path.read_text()}, opts=in_ns)

        self.namespace = ns.metadata.name
        self.grafana_admin_password = pulumi.Output.secret(password.result)
        self.collector_endpoint = f"http://{COLLECTOR}.{args.namespace}:{OTLP_HTTP_PORT}"
        self.prometheus_url = f"http://{PROMETHEUS_SERVICE}.{args.namespace}.svc.cluster.local:9090"
        self.collector = Peer(port=OTLP_HTTP_PORT, namespace=args.namespace, pod_labels={
            "app.kubernetes.io/name": "opentelemetry-collector", "app.kubernetes.io/instance": COLLECTOR})
        local = f"http://grafana.{args.namespace}.svc.cluster.local"
        if args.grafana_service_type == "LoadBalancer":
            grafana = k8s.core.v1.Service.get(f"{name}-grafana", f"{args.namespace}/grafana", opts=after_crds)
            self.grafana_address = grafana.status.apply(
                lambda s: f"http://{s.load_balancer.ingress[0].ip or s.load_balancer.ingress[0].hostname}"
                if s and s.load_balancer and s.load_balancer.ingress else local)
        else:
            self.grafana_address = pulumi.Output.from_input(local)
        self.register_outputs({"namespace": self.namespace, "grafana_address": self.grafana_address})


def _monitoring_namespace(name: str) -> dict[str, Any]:
    meta = namespace_meta(name, restricted=False)
    # node-exporter needs the host's network, PIDs and filesystem, which only the privileged
    # level admits; audit still records what the restricted level would have refused.
    meta["labels"] |= {"pod-security.kubernetes.io/enforce": "privileged",
                       "pod-security.kubernetes.io/audit": "restricted"}
    return meta
