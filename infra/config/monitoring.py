"""Monitoring's settings (they map onto ``MonitoringArgs``) and where alerts go (``AlertingArgs``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pulumi

from infra.components import AlertingArgs, MonitoringArgs, ScrapeTarget
from infra.config.fields import Group, Key, alert_name, prometheus_duration, quantity_or_empty, url_or_empty


@dataclass(frozen=True)
class MonitoringSettings(Group):
    """Prometheus, Alertmanager and Grafana, the trace store, and where traces also go."""

    namespace: Annotated[str, Key("monitoringNamespace")]
    grafana_service_type: Annotated[str, Key("grafanaServiceType", one_of=("LoadBalancer", "ClusterIP"))]
    prometheus_retention: Annotated[str, Key("prometheusRetention", check=prometheus_duration)]
    trace_store: Annotated[bool, Key("traceStore")]
    trace_retention: Annotated[str, Key("traceRetention")]
    traces_export_endpoint: Annotated[str, Key("tracesExportEndpoint")]
    # Volumes' sizes; empty: no volume, the pod's own disk.
    prometheus_storage_size: Annotated[str, Key("prometheusStorageSize", check=quantity_or_empty)]
    trace_storage_size: Annotated[str, Key("traceStorageSize", check=quantity_or_empty)]
    alertmanager_replicas: Annotated[int, Key("alertmanagerReplicas", at_least=1)]
    control_plane: Annotated[bool, Key("controlPlaneMonitoring")]
    # What the blackbox exporter probes as a client would; empty: the service's own /readyz
    # through its Service (cluster DNS).
    probe_url: Annotated[str, Key("probeUrl", check=url_or_empty)]

    def args(self, *, dashboard_files: Sequence[Path], rule_files: Sequence[Path],
             targets: Sequence[ScrapeTarget], alerting: AlertingArgs) -> MonitoringArgs:
        """Return the component's Args: these settings plus the repo's files and what to scrape."""
        return MonitoringArgs(
            namespace=self.namespace, dashboard_files=dashboard_files, rule_files=rule_files,
            targets=targets, grafana_service_type=self.grafana_service_type,
            prometheus_retention=self.prometheus_retention,
            prometheus_storage_size=self.prometheus_storage_size, trace_store=self.trace_store,
            trace_retention=self.trace_retention, trace_storage_size=self.trace_storage_size,
            traces_export_endpoint=self.traces_export_endpoint,
            alertmanager_replicas=self.alertmanager_replicas, control_plane=self.control_plane,
            alerting=alerting)


@dataclass(frozen=True)
class AlertingSettings(Group):
    """The receivers' secrets, each optional, and the alerts that reach nobody on this stack."""

    pagerduty_routing_key: Annotated[pulumi.Output[str] | None, Key("alertPagerdutyRoutingKey")]
    slack_webhook_url: Annotated[pulumi.Output[str] | None, Key("alertSlackWebhookUrl")]
    heartbeat_url: Annotated[pulumi.Output[str] | None, Key("alertHeartbeatUrl")]
    muted: Annotated[tuple[str, ...], Key("alertsMuted", check=alert_name)]

    def args(self) -> AlertingArgs:
        """Return the Args of Monitoring's alert routing."""
        return AlertingArgs(pagerduty_routing_key=self.pagerduty_routing_key,
                            slack_webhook_url=self.slack_webhook_url, heartbeat_url=self.heartbeat_url,
                            muted=self.muted)
