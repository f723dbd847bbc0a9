"""The database's settings: in the cluster (CloudNativePG) or external; they map onto ``DatabaseArgs``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pulumi

from infra.components import DatabaseArgs
from infra.config.fields import Group, Key, cidrs, quantity
from infra.stack_config import ConfigError


@dataclass(frozen=True)
class DatabaseSettings(Group):
    """Where the service's database runs, which engine it is, and how the service reaches it."""

    mode: Annotated[str, Key("databaseMode", one_of=("external", "incluster"))]
    engine: Annotated[str, Key("databaseEngine", one_of=("postgresql", "mysql"))]
    url: Annotated[pulumi.Output[str] | None, Key("databaseUrl")]  # a secret; used when external
    egress_cidrs: Annotated[tuple[str, ...], Key("databaseEgressCidrs", check=cidrs)]
    port: Annotated[int, Key("databasePort")]
    storage_size: Annotated[str, Key("databaseStorageSize", check=quantity)]
    instances: Annotated[int, Key("databaseInstances", at_least=1)]

    def check(self) -> None:
        if self.engine == "mysql" and self.mode != "external":
            raise ConfigError("databaseEngine: mysql is supported as an external database only "
                              "(databaseMode: external); the in-cluster database is PostgreSQL")
        if self.engine == "mysql" and self.port == 5432:
            raise ConfigError("databasePort: 5432 is PostgreSQL's port; set the MySQL/MariaDB "
                              "database's (3306 as a rule), which the network policy opens")
        if self.mode != "external":
            return
        if self.url is None:
            raise ConfigError("databaseUrl: an external database needs its URL "
                              "(pulumi config set --secret databaseUrl ...)")
        if not self.egress_cidrs:
            raise ConfigError("databaseEgressCidrs: an external database needs the ranges it is reached in")

    def args(self, scrape_namespace: str = "") -> DatabaseArgs:
        """Return the component's Args (with Prometheus's namespace, an exporter for it)."""
        return DatabaseArgs(mode=self.mode, engine=self.engine, port=self.port,
                            external_url=self.url if self.mode == "external" else None,
                            external_cidrs=self.egress_cidrs, instances=self.instances,
                            storage_size=self.storage_size, scrape_namespace=scrape_namespace)
