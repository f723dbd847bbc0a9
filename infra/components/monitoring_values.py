"""The Helm values of Monitoring's releases: kube-prometheus-stack, Tempo, Loki and the OpenTelemetry
Collectors (one for traces, a DaemonSet for the nodes' container logs).

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
LOKI = "loki"  # fullnameOverride: Loki's Service, which Grafana and the log collector call
LOKI_PORT = 3100
LOGS_COLLECTOR = "otel-logs"  # the DaemonSet that reads every node's container logs
# Grafana's log data source; Tempo's trace-to-logs link opens it, its trace_id field opens Tempo.
LOGS_DATASOURCE_UID = "logs"
# What the collector makes Loki's labels (index): each has a handful of values. Everything else, the
# request, trace and span ids first, stays structured metadata beside the line (grafana/loki#3796).
LOG_LABELS = ("service.name", "k8s.namespace.name", "k8s.container.name", "level")
# The app's JSON fields kept on each record; "message" becomes the record's body (the line shown).
LOG_FIELDS = ("level", "logger", "trace_id", "span_id", "request_id")
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
            # Loki's lines open their trace in Tempo, Tempo's spans their lines in Loki.
            "additionalDataSources": grafana_datasources(args),
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


def grafana_datasources(args: MonitoringArgs) -> list[dict[str, Any]]:
    """Grafana's trace store (Tempo) and log store (Loki), each linking to the other.

    Grafana expands ``$VAR`` and ``${VAR}`` in provisioned data sources, so its own link variables
    are written ``$${...}`` (grafana/grafana#90335). trace_id is structured metadata, not part of
    the line: the derived field matches it by name (``matcherType: label``) and the trace-to-logs
    query filters on it with ``| trace_id=`` (a ``|=`` line filter would find nothing).
    """
    sources: list[dict[str, Any]] = []
    if args.trace_store:
        tempo: dict[str, Any] = {
            "name": "Traces", "type": "tempo", "uid": TRACES_DATASOURCE_UID, "access": "proxy",
            "url": f"http://{TEMPO}.{args.namespace}:{TEMPO_QUERY_PORT}"}
        if args.log_store:
            tempo["jsonData"] = {"tracesToLogsV2": {
                "datasourceUid": LOGS_DATASOURCE_UID, "spanStartTimeShift": "-5m", "spanEndTimeShift": "5m",
                "customQuery": True,
                "query": '{service_name="$${__span.tags["service.name"]}"} | trace_id="$${__trace.traceId}"'}}
        sources.append(tempo)
    if args.log_store:
        loki: dict[str, Any] = {"name": "Logs", "type": "loki", "uid": LOGS_DATASOURCE_UID,
                                "access": "proxy", "url": f"http://{LOKI}.{args.namespace}:{LOKI_PORT}"}
        if args.trace_store:
            loki["jsonData"] = {"derivedFields": [{
                "name": "trace_id", "matcherType": "label", "matcherRegex": "trace_id",
                "datasourceUid": TRACES_DATASOURCE_UID, "url": "$${__value.raw}",
                "urlDisplayLabel": "Trace"}]}
        sources.append(loki)
    return sources


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


def loki_values(args: MonitoringArgs) -> dict[str, Any]:
    """Return Loki's values: one process (the chart's Monolithic mode, formerly SingleBinary) on its
    filesystem, OTLP in, a retention the compactor enforces, a volume if one is sized.

    The chart's defaults are for a scalable install; on a small cluster these are turned off:
    read/write/backend (3 pods each, they need object storage), the nginx gateway (Grafana and the
    collector call Loki's Service; it adds nothing without multi-tenant auth), the memcached chunk
    and results caches (8 GiB and 1 GiB allocations by default), the canary DaemonSet and the Helm
    test that needs it, and the rules sidecar (no Loki alerting rules here).
    """
    persistence: dict[str, Any] = {"enabled": bool(args.log_storage_size)}
    if args.log_storage_size:
        persistence["size"] = args.log_storage_size
        if args.log_storage_class:
            persistence["storageClass"] = args.log_storage_class
    return without_nulls(LOKI, {
        "fullnameOverride": LOKI,
        "deploymentMode": "Monolithic",
        "loki": {
            "auth_enabled": False,  # one tenant: no X-Scope-OrgID to send
            "commonConfig": {"replication_factor": 1},
            "storage": {"type": "filesystem"},
            # Structured metadata (the ids) needs the tsdb index and schema v13 (grafana/loki#12453).
            "schemaConfig": {"configs": [{
                "from": "2024-04-01", "store": "tsdb", "object_store": "filesystem", "schema": "v13",
                "index": {"prefix": "index_", "period": "24h"}}]},
            "limits_config": {
                "retention_period": args.log_retention,
                "allow_structured_metadata": True,
                # OTLP resource attributes that become labels: only LOG_LABELS, none of Loki's
                # default list (k8s.pod.name, service.instance.id, ... grow without bound).
                "otlp_config": {"resource_attributes": {
                    "ignore_defaults": True,
                    "attributes_config": [{"action": "index_label", "attributes": list(LOG_LABELS)}]}},
            },
            # Retention deletes nothing unless the compactor does it (grafana/loki#12588).
            "compactor": {"retention_enabled": True, "delete_request_store": "filesystem",
                          "working_directory": "/var/loki/compactor"},
        },
        "singleBinary": {
            "replicas": 1,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "persistence": persistence,
        },
        **{target: {"replicas": 0} for target in ("read", "write", "backend")},
        "gateway": {"enabled": False},
        "chunksCache": {"enabled": False},
        "resultsCache": {"enabled": False},
        "lokiCanary": {"enabled": False},
        "test": {"enabled": False},
        "sidecar": {"rules": {"enabled": False}},
        "minio": {"enabled": False},
    })


# Where kubelet writes every container's output (CRI format), and where the log collector keeps how
# far it has read each file, so a restart neither re-reads nor skips lines.
POD_LOGS = "/var/log/pods"
LOG_CHECKPOINTS = "/var/lib/otel-logs"


def log_operators() -> list[dict[str, Any]]:
    """The filelog receiver's operators: CRI line -> the app's JSON -> fields, trace context, severity.

    Lines that are not JSON (other containers) pass on after the first step: every later operator
    sends the record on unchanged when its field is absent (``on_error: send_quiet``).
    """
    quiet = {"on_error": "send_quiet"}
    return [
        # docker, containerd and CRI-O formats; recombines P(artial) lines; namespace, pod, container
        # from the file's path.
        {"type": "container", "id": "cri", "add_metadata_from_filepath": True},
        {"type": "json_parser", "id": "app-json", "parse_from": "body", "parse_to": "attributes", **quiet},
        {"type": "trace_parser", "id": "trace-context",
         "trace_id": {"parse_from": "attributes.trace_id"}, "span_id": {"parse_from": "attributes.span_id"},
         **quiet},
        {"type": "severity_parser", "id": "level", "parse_from": "attributes.level",
         "mapping": {"fatal": "critical"}, **quiet},  # Python's CRITICAL; WARNING is built in
        {"type": "move", "id": "message-to-body", "from": "attributes.message", "to": "body", **quiet},
        {"type": "remove", "id": "drop-time", "field": "attributes.time", **quiet},  # the record's timestamp
    ]


def logs_collector_config(args: MonitoringArgs) -> dict[str, Any]:
    """The log collector's configuration: every container's log on the node, parsed, to Loki."""
    own_logs = f"{POD_LOGS}/{args.namespace}_{LOGS_COLLECTOR}-*/*/*.log"  # or it reads what it writes
    return {
        "extensions": {"health_check": {"endpoint": "${env:MY_POD_IP}:13133"},
                       "file_storage": {"directory": LOG_CHECKPOINTS, "create_directory": False}},
        "receivers": {"filelog": {
            "include": [f"{POD_LOGS}/*/*/*.log"], "exclude": [own_logs],
            "include_file_path": True, "include_file_name": False,
            "start_at": "end",  # first start: from now on; after that the checkpoints say where
            "storage": "file_storage",
            "max_log_size": "1MiB",
            "operators": log_operators(),
        }},
        "processors": {
            "memory_limiter": {"check_interval": "5s", "limit_percentage": 80, "spike_limit_percentage": 25},
            # service.name from the pod's app.kubernetes.io/name (the app's is OTEL_SERVICE_NAME, so
            # Tempo's spans and Loki's lines share it); the container's name where that label is absent.
            "k8sattributes": {
                "auth_type": "serviceAccount", "filter": {"node_from_env_var": "K8S_NODE_NAME"},
                "pod_association": [{"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]}],
                "extract": {"metadata": ["k8s.pod.name"],
                            "labels": [{"tag_name": "service.name", "key": "app.kubernetes.io/name",
                                        "from": "pod"}]}},
            "resource": {"attributes": [{"key": "service.name", "from_attribute": "k8s.container.name",
                                         "action": "insert"}]},
            # level moves from each record to its resource: Loki makes labels of resource attributes
            # only (grafana/loki#15128), and level has a handful of values.
            "groupbyattrs": {"keys": ["level"]},
            "batch": {},
        },
        "exporters": {"otlphttp/loki": {"endpoint": f"http://{LOKI}.{args.namespace}:{LOKI_PORT}/otlp"}},
        "service": {
            "telemetry": {"metrics": {"readers": [
                {"pull": {"exporter": {"prometheus": {"host": "${env:MY_POD_IP}", "port": 8888}}}}]}},
            "extensions": ["health_check", "file_storage"],
            "pipelines": {"logs": {
                "receivers": ["filelog"],
                "processors": ["memory_limiter", "k8sattributes", "resource", "groupbyattrs", "batch"],
                "exporters": ["otlphttp/loki"]}},
        },
    }


def logs_collector_values(args: MonitoringArgs) -> dict[str, Any]:
    """Return the log collector's values: a DaemonSet of the collector chart (a second release)."""
    return without_nulls(LOGS_COLLECTOR, {
        "mode": "daemonset",
        "fullnameOverride": LOGS_COLLECTOR,
        "image": {"repository": "otel/opentelemetry-collector-contrib"},
        "command": {"name": "otelcol-contrib"},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
        # kubelet writes the pod logs root-owned, mode 0640: only root reads them. Root with no
        # capabilities, a read-only root filesystem, the logs mounted read-only; the monitoring
        # namespace's Pod Security level (privileged, for node-exporter) admits the hostPath volumes.
        "podSecurityContext": {"runAsUser": 0, "runAsGroup": 0, "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "extraVolumes": [
            {"name": "pod-logs", "hostPath": {"path": POD_LOGS, "type": "Directory"}},
            {"name": "checkpoints", "hostPath": {"path": LOG_CHECKPOINTS, "type": "DirectoryOrCreate"}}],
        "extraVolumeMounts": [
            {"name": "pod-logs", "mountPath": POD_LOGS, "readOnly": True},
            {"name": "checkpoints", "mountPath": LOG_CHECKPOINTS}],
        "extraEnvs": [{"name": "K8S_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        # k8sattributes watches the pods of its node (and their namespaces and ReplicaSets).
        "clusterRole": {"create": True, "rules": [
            {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]}]},
        # Nothing listens for OTLP or anything else here: the DaemonSet only reads files.
        "ports": {port: {"enabled": False} for port in
                  ("otlp", "otlp-http", "jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin")},
        "service": {"enabled": False},
        "alternateConfig": logs_collector_config(args),
    })
