"""Pulumi components: ObservableService, Monitoring, MetricsAdapter, Database, RateLimitStore and
LoadGenerator, with their Args."""

from infra.components.alerting import AlertingArgs
from infra.components.autoscaling import MetricsAdapter, MetricsAdapterArgs
from infra.components.database import Database, DatabaseArgs
from infra.components.loadgen import LoadGenerator, LoadGeneratorArgs
from infra.components.monitoring import Monitoring, MonitoringArgs, ScrapeTarget
from infra.components.network import Peer
from infra.components.pods import Resources, WritableDir
from infra.components.ratelimits import RateLimitStore, RateLimitStoreArgs
from infra.components.rollouts import Canary, ProgressiveDelivery, ProgressiveDeliveryArgs
from infra.components.service import (
    ExternalScaler,
    Fixed,
    Http,
    ObservableService,
    Process,
    Scaling,
    ServiceArgs,
    Shutdown,
)

__all__ = [
    "AlertingArgs", "Canary", "Database", "DatabaseArgs", "ExternalScaler", "Fixed", "Http",
    "LoadGenerator", "LoadGeneratorArgs", "MetricsAdapter", "MetricsAdapterArgs", "Monitoring",
    "MonitoringArgs", "ObservableService", "Peer", "Process", "ProgressiveDelivery",
    "ProgressiveDeliveryArgs", "RateLimitStore", "RateLimitStoreArgs", "Resources", "Scaling",
    "ScrapeTarget", "ServiceArgs", "Shutdown", "WritableDir",
]
