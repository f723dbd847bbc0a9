"""Where container logs go: Loki in the monitoring namespace, how long it keeps them, on what volume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

from dashboards import duration_seconds
from infra.components import MonitoringArgs
from infra.config.fields import Group, Key, quantity_or_empty
from infra.stack_config import ConfigError

DAY = 24 * 3600


def whole_days(name: str, value: str) -> None:
    """Loki's compactor deletes whole index periods (24h): its retention is a number of days."""
    try:
        seconds = duration_seconds(value)
    except ValueError:
        seconds = -1
    if seconds < DAY or seconds % DAY:
        raise ConfigError(f"{name}: {value!r} is not a whole number of days, at least one, "
                          "such as 7d or 168h")


@dataclass(frozen=True)
class LogsSettings(Group):
    """Loki, the DaemonSet that ships every container's log to it, its retention and its volume."""

    log_store: Annotated[bool, Key("logStore")]
    log_retention: Annotated[str, Key("logRetention", check=whole_days)]
    # The volume's size; empty: no volume, the pod's own disk. Its class; empty: the default class.
    log_storage_size: Annotated[str, Key("logStorageSize", check=quantity_or_empty)]
    log_storage_class: Annotated[str, Key("logStorageClass")]

    def args(self, monitoring: MonitoringArgs) -> MonitoringArgs:
        """Return ``monitoring`` with these settings: Loki is part of the Monitoring component."""
        return dataclasses.replace(monitoring, log_store=self.log_store, log_retention=self.log_retention,
                                   log_storage_size=self.log_storage_size,
                                   log_storage_class=self.log_storage_class)
