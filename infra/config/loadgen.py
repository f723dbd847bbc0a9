"""The in-cluster load generator's settings; they map onto ``LoadGeneratorArgs``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

import pulumi

from dashboards import duration_seconds
from infra.components import LoadGeneratorArgs, Peer
from infra.config.fields import Group, Key, duration_or_empty


@dataclass(frozen=True)
class LoadGeneratorSettings(Group):
    """Whether Locust runs in the cluster, how big, and whether it starts by itself."""

    enabled: Annotated[bool, Key("loadtestEnabled")]
    workers: Annotated[int, Key("loadtestWorkers", at_least=1)]
    users: Annotated[int, Key("loadtestUsers", at_least=1)]
    spawn_rate: Annotated[int, Key("loadtestSpawnRate", at_least=1)]
    run_time: Annotated[str, Key("loadtestRunTime", check=duration_or_empty)]  # empty: start from the web UI
    image: Annotated[str, Key("loadtestImage")]
    pip_packages: Annotated[tuple[str, ...], Key("loadtestPipPackages")]  # names; uv.lock pins them

    def args(self, *, files: Mapping[str, str], target_url: pulumi.Input[str], target: Peer,
             pip_requirements: str, credentials: Mapping[str, pulumi.Input[str]],
             prometheus_url: pulumi.Input[str] = "", prometheus: Peer | None = None) -> LoadGeneratorArgs:
        """Return the component's Args: these settings plus the locust files, the service to load,
        the hash-pinned requirements of ``pip_packages``, the account the run logs in as and the
        Prometheus it reads the notifier's event-to-email latency from."""
        return LoadGeneratorArgs(files=files, target_url=target_url, target=target, image=self.image,
                                 prometheus_url=prometheus_url, prometheus=prometheus,
                                 workers=self.workers, users=self.users, spawn_rate=self.spawn_rate,
                                 run_time=self.run_time,
                                 run_seconds=int(duration_seconds(self.run_time)) if self.run_time else 0,
                                 pip_requirements=pip_requirements, credentials=credentials)
