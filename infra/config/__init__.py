"""The one reader of the stack's config: ``pulumi.Config()`` -> ``Settings``, one checked group per component.

Usage (inside a Pulumi program):
    settings = load_settings()
    Database("lookout-db", settings.database.args())

Pulumi.yaml declares every key (type, default, description) and Pulumi.<stack>.yaml overrides
some. Each group is a frozen dataclass whose fields name their keys (``key("databaseMode")``),
are read by their type and checked when the group is made; ``args()`` turns a group into its
component's Args. Adding a setting: declare it in Pulumi.yaml, add the field to its group, use
it in ``args()`` (a test checks that the groups read exactly the declared keys).

    service      ServiceSettings        infra/config/service.py     -> ServiceArgs
    database     DatabaseSettings       infra/config/database.py    -> DatabaseArgs
    rate_limits  RateLimitSettings      infra/config/ratelimits.py  -> RateLimitStoreArgs
    monitoring   MonitoringSettings     infra/config/monitoring.py  -> MonitoringArgs
    alerting     AlertingSettings       infra/config/monitoring.py  -> AlertingArgs
    logs         LogsSettings           infra/config/logs.py        -> MonitoringArgs (its log fields)
    loadtest     LoadGeneratorSettings  infra/config/loadgen.py     -> LoadGeneratorArgs
    delivery     DeliverySettings       infra/config/rollouts.py    -> ProgressiveDeliveryArgs, Canary
    edge         EdgeSettings           infra/config/edge.py        -> EdgeArgs
    notifier     NotifierSettings       infra/config/notifier.py    -> the notifier's ServiceArgs, mail
    relay        RelaySettings          infra/config/notifier.py    -> the relay's ServiceArgs
    broker       BrokerSettings         infra/config/broker.py      -> BrokerArgs
    queue_scaling QueueScalingSettings  infra/config/broker.py      -> QueueScalerArgs
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.config.broker import BrokerSettings, QueueScalingSettings
from infra.config.database import DatabaseSettings
from infra.config.edge import EdgeSettings
from infra.config.fields import Group, Key
from infra.config.loadgen import LoadGeneratorSettings
from infra.config.logs import LogsSettings
from infra.config.monitoring import AlertingSettings, MonitoringSettings
from infra.config.notifier import NotifierSettings, RelaySettings
from infra.config.ratelimits import RateLimitSettings
from infra.config.rollouts import DeliverySettings
from infra.config.service import ServiceSettings
from infra.stack_config import ConfigError

GROUPS: tuple[type[Group], ...] = (ServiceSettings, DatabaseSettings, RateLimitSettings, MonitoringSettings,
                                   AlertingSettings, LoadGeneratorSettings, DeliverySettings, LogsSettings,
                                   EdgeSettings, NotifierSettings, RelaySettings, BrokerSettings,
                                   QueueScalingSettings)


@dataclass(frozen=True)
class Settings:
    stack: str
    service: ServiceSettings
    database: DatabaseSettings
    rate_limits: RateLimitSettings
    monitoring: MonitoringSettings
    alerting: AlertingSettings
    loadtest: LoadGeneratorSettings
    delivery: DeliverySettings
    logs: LogsSettings
    edge: EdgeSettings
    notifier: NotifierSettings
    relay: RelaySettings
    broker: BrokerSettings
    queue_scaling: QueueScalingSettings


def load_settings(config: pulumi.Config | None = None) -> Settings:
    """Read every key of the stack's config once; secrets stay Outputs so they stay encrypted."""
    c = config or pulumi.Config()
    return Settings(stack=pulumi.get_stack(), service=ServiceSettings.read(c),
                    database=DatabaseSettings.read(c), rate_limits=RateLimitSettings.read(c),
                    monitoring=MonitoringSettings.read(c), alerting=AlertingSettings.read(c),
                    loadtest=LoadGeneratorSettings.read(c), delivery=DeliverySettings.read(c),
                    logs=LogsSettings.read(c), edge=EdgeSettings.read(c),
                    notifier=NotifierSettings.read(c), relay=RelaySettings.read(c),
                    broker=BrokerSettings.read(c), queue_scaling=QueueScalingSettings.read(c))


__all__ = [
    "GROUPS",
    "AlertingSettings",
    "BrokerSettings",
    "ConfigError",
    "DatabaseSettings",
    "DeliverySettings",
    "EdgeSettings",
    "Key",
    "LoadGeneratorSettings",
    "LogsSettings",
    "MonitoringSettings",
    "NotifierSettings",
    "QueueScalingSettings",
    "RateLimitSettings",
    "RelaySettings",
    "ServiceSettings",
    "Settings",
    "load_settings",
]
