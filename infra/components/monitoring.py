"""Monitoring: kube-prometheus-stack, an OpenTelemetry Collector, and the repo's dashboards and rules.

Dashboards (``dashboards/*.json``) become one ConfigMap each, which Grafana's sidecar loads; the
plain rule files (``dashboards/rules/*.yaml``, the ones promtool tests) are wrapped in one
PrometheusRule; each ``ScrapeTarget`` becomes a ServiceMonitor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml

from infra.components.alerting import PAGERDUTY_KEY, RECEIVERS_SECRET, SLACK_KEY, alertmanager_config
from infra.components.network import Peer
from infra.components.pods import namespace_meta
from infra.config import parse_quantity
from infra.helm import without_nulls

KPS_CHART = ("kube-prometheus-stack", "79.7.1", "https://prometheus-community.github.io/helm-charts")
OTEL_CHART = ("opentelemetry-collector", "0.143.0", "https://open-telemetry.github.io/opentelemetry-helm-charts")
# Tempo 2.6, single binary; the chart moved from grafana to grafana-community (infra/charts/README.md).
TEMPO_CHART = ("tempo", "1.16.0", "https://grafana-community.github.io/helm-charts")
TEMPO = "tempo"
TEMPO_QUERY_PORT = 3100
RELEASE = "kube-prometheus-stack"  # the stack selects ServiceMonitors and rules labelled release=<this>
COLLECTOR = "otel-collector"
# Grafana opens an exemplar's trace_id in the data source with this uid: provision the trace store
# (the one tracesExportEndpoint sends to) under it, and the latency panel's exemplars link to traces.
TRACES_DATASOURCE_UID = "traces"
OTLP_HTTP_PORT = 4318
# Prometheus deletes whole blocks to stay under its size limit but counts the write-ahead log and
# the head chunks in it, and a compaction writes its new block before deleting the old ones: the
# limit leaves a fifth of the volume for those, so a full disk never stops ingestion.
PROMETHEUS_VOLUME_SHARE = Decimal("0.8")


@dataclass(frozen=True)
class ScrapeTarget:
    """A Service to scrape: its namespace, its labels and the name of its metrics port."""

    name: str
    namespace: str
    service_labels: Mapping[str, str]
    port: str = "http"
    path: str = "/metrics"
    interval: str = "15s"


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
    # Alertmanagers gossip silences and what they have sent: with two, a restart loses neither and
    # no alert waits for a pod to come back.
    alertmanager_replicas: int = 1
    control_plane: bool = False  # scrape and alert on the controller manager, scheduler, etcd, kube-proxy
    # Alert receivers' secrets (infra/components/alerting.py); None drops what would go there.
    pagerduty_routing_key: pulumi.Input[str] | None = None
    slack_webhook_url: pulumi.Input[str] | None = None
    heartbeat_url: pulumi.Input[str] | None = None
    muted_alerts: Sequence[str] = ()  # alert names routed to no receiver on this stack


def prometheus_retention_size(storage_size: str) -> str:
    """Return Prometheus's size limit for a volume of ``storage_size`` (a Kubernetes quantity), in
    Prometheus's units, which are powers of two: "50Gi" -> "40960MB"."""
    limit = parse_quantity("prometheusStorageSize", storage_size) * PROMETHEUS_VOLUME_SHARE
    return f"{int(limit) // 2**20}MB"


def _volume_claim(size: str) -> dict[str, Any]:
    """A PersistentVolumeClaim spec on the cluster's default storage class."""
    return {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}


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
        receivers = {key: value for key, value in ((PAGERDUTY_KEY, args.pagerduty_routing_key),
                                                   (SLACK_KEY, args.slack_webhook_url)) if value is not None}
        # Always there, empty or not: Alertmanager's pod mounts it.
        receiver_secret = k8s.core.v1.Secret(
            f"{name}-alertmanager-receivers", metadata={**meta, "name": RECEIVERS_SECRET},
            string_data=receivers, opts=in_ns)
        chart, version, repo = KPS_CHART
        stack = k8s.helm.v3.Release(
            f"{name}-kube-prometheus-stack", name=RELEASE, chart=chart, version=version,
            repository_opts={"repo": repo}, namespace=args.namespace, values=_stack_values(args),
            timeout=900, cleanup_on_fail=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, admin, receiver_secret]))
        if args.trace_store:
            chart, version, repo = TEMPO_CHART
            k8s.helm.v3.Release(
                f"{name}-tempo", name=TEMPO, chart=chart, version=version, repository_opts={"repo": repo},
                namespace=args.namespace, values=_tempo_values(args), cleanup_on_fail=True, opts=in_ns)
        chart, version, repo = OTEL_CHART
        k8s.helm.v3.Release(
            f"{name}-otel-collector", name=COLLECTOR, chart=chart, version=version,
            repository_opts={"repo": repo}, namespace=args.namespace, values=_collector_values(args),
            cleanup_on_fail=True, opts=in_ns)

        after_crds = pulumi.ResourceOptions(parent=self, depends_on=[stack])  # the chart installs the CRDs
        release_labels = {**meta["labels"], "release": RELEASE}
        for target in args.targets:
            k8s.apiextensions.CustomResource(
                f"{name}-servicemonitor-{target.name}", api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor", metadata={**meta, "name": target.name, "labels": release_labels},
                spec={"namespaceSelector": {"matchNames": [target.namespace]},
                      "selector": {"matchLabels": dict(target.service_labels)},
                      "endpoints": [{"port": target.port, "path": target.path, "interval": target.interval}]},
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


def _stack_values(args: MonitoringArgs) -> dict[str, Any]:
    return without_nulls(RELEASE, {
        "fullnameOverride": "kps",  # short object names: kps-prometheus, kps-alertmanager
        # Managed control planes (EKS, GKE, AKS) and kind do not let Prometheus reach these: their
        # scrapes fail and the chart's alerts on them (KubeSchedulerDown, ...) fire for ever. The
        # chart's rules for each follow its switch.
        **{component: {"enabled": args.control_plane}
           for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")},
        "grafana": {
            "fullnameOverride": "grafana",
            "admin": {"existingSecret": "grafana-admin", "userKey": "admin-user",
                      "passwordKey": "admin-password"},
            "service": {"type": args.grafana_service_type},
            # Exemplars on the latency panels open their trace here (uid TRACES_DATASOURCE_UID).
            "additionalDataSources": [{
                "name": "Traces", "type": "tempo", "uid": TRACES_DATASOURCE_UID, "access": "proxy",
                "url": f"http://{TEMPO}.{args.namespace}:{TEMPO_QUERY_PORT}"}] if args.trace_store else [],
            # The sidecar loads every ConfigMap labelled grafana_dashboard=1 in this namespace.
            "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1"},
                        "datasources": {"exemplarTraceIdDestinations": {
                            "datasourceUid": TRACES_DATASOURCE_UID, "traceIdLabelName": "trace_id"}}},
        },
        "prometheus": {"prometheusSpec": {
            "retention": args.prometheus_retention,
            # Without a volume the data lives on the pod's own disk and is gone when it moves.
            **({"storageSpec": {"volumeClaimTemplate": {"spec": _volume_claim(args.prometheus_storage_size)}},
                "retentionSize": prometheus_retention_size(args.prometheus_storage_size)}
               if args.prometheus_storage_size else {}),
            "enableFeatures": ["exemplar-storage"],  # latency exemplars link to traces
            # Only objects labelled release=<release> are picked up (the chart's default, stated).
            "serviceMonitorSelectorNilUsesHelmValues": True,
            "ruleSelectorNilUsesHelmValues": True,
            "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        }},
        "alertmanager": {
            "config": alertmanager_config(pagerduty=args.pagerduty_routing_key is not None,
                                          slack=args.slack_webhook_url is not None,
                                          heartbeat_url=args.heartbeat_url, muted=args.muted_alerts),
            # One of a pair stays up through a node drain.
            "podDisruptionBudget": {"enabled": args.alertmanager_replicas > 1, "minAvailable": 1},
            "alertmanagerSpec": {
                "replicas": args.alertmanager_replicas,
                "secrets": [RECEIVERS_SECRET],  # files the config names, never values in it
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}}},
    })


# Tempo's configuration file: the chart's own template (tempo 1.16.0, values.yaml `config`) with one
# receiver, OTLP/HTTP from the collector. The chart's `tempo.receivers` default also opens Jaeger,
# OpenCensus and OTLP/gRPC, and Helm merges maps, so only this full override (the chart's documented
# `config` value) leaves them out; nothing else reads `tempo.receivers` but the Service's port list.
TEMPO_CONFIG = """\
memberlist:
  cluster_label: "{{ .Release.Name }}.{{ .Release.Namespace }}"
multitenancy_enabled: {{ .Values.tempo.multitenancyEnabled }}
usage_report:
  reporting_enabled: {{ .Values.tempo.reportingEnabled }}
compactor:
  compaction:
    block_retention: {{ .Values.tempo.retention }}
distributor:
  receivers:
    otlp:
      protocols:
        http:
          endpoint: "0.0.0.0:OTLP_HTTP_PORT"
ingester:
  {{- toYaml .Values.tempo.ingester | nindent 2 }}
server:
  {{- toYaml .Values.tempo.server | nindent 2 }}
storage:
  {{- toYaml .Values.tempo.storage | nindent 2 }}
querier:
  {{- toYaml .Values.tempo.querier | nindent 2 }}
query_frontend:
  {{- toYaml .Values.tempo.queryFrontend | nindent 2 }}
overrides:
  {{- toYaml .Values.tempo.global_overrides | nindent 2 }}
""".replace("OTLP_HTTP_PORT", str(OTLP_HTTP_PORT))


def _tempo_values(args: MonitoringArgs) -> dict[str, Any]:
    return without_nulls(TEMPO, {
        "fullnameOverride": TEMPO,
        "tempo": {
            "retention": args.trace_retention,
            "reportingEnabled": False,  # no usage reports leave the cluster
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        },
        "config": TEMPO_CONFIG,  # OTLP/HTTP from the collector is the only receiver
        "persistence": {"enabled": True, "accessModes": ["ReadWriteOnce"], "size": args.trace_storage_size}
        if args.trace_storage_size else {"enabled": False},
    })


def _collector_values(args: MonitoringArgs) -> dict[str, Any]:
    exporter: dict[str, Any] = {}
    if args.trace_store:
        exporter["otlphttp/tempo"] = {"endpoint": f"http://{TEMPO}.{args.namespace}:{OTLP_HTTP_PORT}"}
    if args.traces_export_endpoint:
        exporter["otlphttp/external"] = {"endpoint": args.traces_export_endpoint}
    if not exporter:  # nowhere to send them: a summary of each batch in the collector's log
        exporter = {"debug": {"verbosity": "basic"}}
    return without_nulls(COLLECTOR, {
        "mode": "deployment",
        "fullnameOverride": COLLECTOR,
        "image": {"repository": "otel/opentelemetry-collector-contrib"},
        "command": {"name": "otelcol-contrib"},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                               "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "ports": {port: {"enabled": False}
                  for port in ("jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin")},
        # The whole configuration, not merged with the chart's `config` default (whose Jaeger, Zipkin
        # and Prometheus receivers and logs and metrics pipelines Helm could only drop by a null).
        "alternateConfig": collector_config(exporter),
    })


def collector_config(exporters: dict[str, Any]) -> dict[str, Any]:
    """The collector's configuration: OTLP in, traces only, to ``exporters``; what the chart's
    default keeps (health_check, the memory limiter, its own metrics on 8888) is kept as it has it."""
    pod_ip = "${env:MY_POD_IP}"
    return {
        "extensions": {"health_check": {"endpoint": f"{pod_ip}:13133"}},  # the chart's probes call it
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"{pod_ip}:4317"},
                                             "http": {"endpoint": f"{pod_ip}:{OTLP_HTTP_PORT}"}}}},
        "processors": {"batch": {},
                       "memory_limiter": {"check_interval": "5s", "limit_percentage": 80,
                                          "spike_limit_percentage": 25}},
        "exporters": exporters,
        "service": {
            "telemetry": {"metrics": {"readers": [
                {"pull": {"exporter": {"prometheus": {"host": pod_ip, "port": 8888}}}}]}},
            "extensions": ["health_check"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                                     "exporters": list(exporters)}},
        },
    }
