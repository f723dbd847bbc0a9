"""The Helm values of Monitoring's releases: kube-prometheus-stack, Tempo and the OpenTelemetry Collector.

Each function takes the component's ``MonitoringArgs`` and returns one release's values; the
names here are the objects' names in the cluster, which the component and Grafana refer to.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from infra.components.alerting import RECEIVERS_SECRET, alertmanager_config
from infra.helm import without_nulls
from infra.stack_config import parse_quantity

if TYPE_CHECKING:
    from infra.components.monitoring import MonitoringArgs

PROMETHEUS_SERVICE = "kps-prometheus"  # what fullnameOverride "kps" names Prometheus's Service
# The labels the Prometheus Operator gives the pods of that Prometheus (named like its Service).
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus",
                         "operator.prometheus.io/name": PROMETHEUS_SERVICE}
RELEASE = "kube-prometheus-stack"  # the stack selects ServiceMonitors and rules labelled release=<this>
TEMPO = "tempo"
TEMPO_QUERY_PORT = 3100
COLLECTOR = "otel-collector"
# Grafana opens an exemplar's trace_id in the data source with this uid: provision the trace store
# (the one tracesExportEndpoint sends to) under it, and the latency panel's exemplars link to traces.
TRACES_DATASOURCE_UID = "traces"
OTLP_HTTP_PORT = 4318
# Prometheus deletes whole blocks to stay under its size limit but counts the write-ahead log and
# the head chunks in it, and a compaction writes its new block before deleting the old ones: the
# limit leaves a fifth of the volume for those, so a full disk never stops ingestion.
PROMETHEUS_VOLUME_SHARE = Decimal("0.8")


def prometheus_retention_size(storage_size: str) -> str:
    """Return Prometheus's size limit for a volume of ``storage_size`` (a Kubernetes quantity), in
    Prometheus's units, which are powers of two: "50Gi" -> "40960MB"."""
    limit = parse_quantity("prometheusStorageSize", storage_size) * PROMETHEUS_VOLUME_SHARE
    return f"{int(limit) // 2**20}MB"


def _volume_claim(size: str) -> dict[str, Any]:
    """A PersistentVolumeClaim spec on the cluster's default storage class."""
    return {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}


def stack_values(args: MonitoringArgs) -> dict[str, Any]:
    """Return kube-prometheus-stack's values: Prometheus, Alertmanager and Grafana."""
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
            "config": alertmanager_config(pagerduty=args.alerting.pagerduty_routing_key is not None,
                                          slack=args.alerting.slack_webhook_url is not None,
                                          heartbeat_url=args.alerting.heartbeat_url,
                                          muted=args.alerting.muted),
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


def tempo_values(args: MonitoringArgs) -> dict[str, Any]:
    """Return Tempo's values: OTLP/HTTP in, a retention, a volume if one is sized."""
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


def collector_values(args: MonitoringArgs) -> dict[str, Any]:
    """Return the OpenTelemetry Collector's values: OTLP in, traces out to the stores configured."""
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
