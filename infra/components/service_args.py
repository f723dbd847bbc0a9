"""The typed Args of ``ObservableService``: a service, its processes, and how each is scaled and stopped.

    ServiceArgs   the service: image, settings, secrets (files), network rules, migrations, and its
                  main process (command, port, probes, resources, scaling, shutdown)
    Process       a further process (a consumer): its own command, size, scaling and probes
    Http          a process that serves HTTP: its port, probe paths, Service port
    Scaling | ExternalScaler | Fixed   an HPA; another controller (KEDA); a set count
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.components.autoscaling import REQUESTS_METRIC
from infra.components.network import Peer
from infra.components.pods import Resources, WritableDir
from infra.components.rollouts import Canary


@dataclass(frozen=True)
class Scaling:
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int
    scale_down_stabilization_seconds: int
    target_requests_per_second: int = 0  # 0: CPU only
    requests_metric: str = REQUESTS_METRIC  # served by MetricsAdapter (components/autoscaling.py)


@dataclass(frozen=True)
class ExternalScaler:
    """Another controller owns the replica count between these bounds (KEDA's ScaledObject on a
    queue): the component declares neither replicas nor an HPA, which would fight it."""

    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Fixed:
    """A set number of pods, no autoscaler (a relay: more pods share the work, none is needed for load)."""

    replicas: int


Autoscaling = Scaling | ExternalScaler | Fixed


@dataclass(frozen=True)
class Shutdown:
    pre_stop_seconds: int
    graceful_timeout: int  # gunicorn's, handed to the app as GUNICORN_GRACEFUL_TIMEOUT
    termination_grace_period_seconds: int


@dataclass(frozen=True)
class Http:
    """A process that serves HTTP: its port, its probes' paths and the port of its ClusterIP Service."""

    port: int = 8000
    service_port: int = 80
    liveness_path: str = "/livez"
    readiness_path: str = "/readyz"


@dataclass(frozen=True)
class Process:
    """One kind of pod of a service: same image, settings, secrets and network rules as the
    service's others, its own command, size, scaling and probes."""

    component: str  # its pods' app.kubernetes.io/component; objects are named <service>-<component>
    command: Sequence[str]
    scaling: Autoscaling
    resources: Resources
    shutdown: Shutdown
    metrics_port: int
    http: Http | None = None  # None: probes ask its metrics port, and no Service carries traffic
    env: Mapping[str, str] = field(default_factory=dict)  # its own settings, beside the ConfigMap's


@dataclass(frozen=True)
class ServiceArgs:
    """The service and its main process (``component``); ``workers`` are its other processes."""

    namespace: str
    image: str
    resources: Resources
    scaling: Autoscaling
    shutdown: Shutdown
    settings: Mapping[str, pulumi.Input[str]]  # non-secret environment, in a ConfigMap
    secrets: Mapping[str, pulumi.Input[str]]  # mounted as files; the app reads <NAME>_FILE
    scrape_namespace: str  # Prometheus scrapes from there
    egress: Sequence[Peer] = ()  # DNS is always allowed
    # NetworkPolicy peers allowed to the app's port (the gateway's pods); empty: any source.
    ingress_from: Sequence[Mapping[str, Any]] = ()
    image_pull_policy: str = "IfNotPresent"
    port: int = 8000
    metrics_port: int = 9100  # /metrics answers only here (the app's METRICS_PORT), never via the LB
    service_port: int = 80
    service_type: str = "LoadBalancer"
    source_ranges: Sequence[str] = ()
    # Local: the pods see the client's address (per-address rate limits); Cluster: a node's.
    external_traffic_policy: str = "Local"
    writable_dirs: Sequence[WritableDir] = (WritableDir("tmp", "/tmp", "64Mi", in_memory=True),)  # noqa: S108
    migration_command: Sequence[str] | None = None  # run to completion before new pods roll out
    # Run in the same Job after the migrations (the bootstrap admin), with ``job_secrets`` as
    # files (<NAME>_FILE) that no other pod mounts.
    post_migration_command: Sequence[str] | None = None
    job_secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    liveness_path: str = "/livez"
    readiness_path: str = "/readyz"
    skips: Mapping[str, str] = field(default_factory=dict)  # extra checkov skips with their reasons
    canary: Canary | None = None  # a Rollout (Argo Rollouts) released as a canary; None: a Deployment
    command: Sequence[str] | None = None  # None: the image's own (gunicorn as PID 1)
    component: str = "server"  # the main process's pods' app.kubernetes.io/component
    serves_http: bool = True  # False: a worker (probes on its metrics port, no Service, no route)
    workers: Sequence[Process] = ()  # its further processes (a consumer)
    env: Mapping[str, str] = field(default_factory=dict)  # the main process's own settings
    create_namespace: bool = True  # False: the namespace is another instance's (the relay beside its API)

    def processes(self) -> tuple[Process, ...]:
        """Return every process, the main one first."""
        http = (Http(self.port, self.service_port, self.liveness_path, self.readiness_path)
                if self.serves_http else None)
        main = Process(self.component, tuple(self.command or ()), self.scaling, self.resources, self.shutdown,
                      self.metrics_port, http, self.env)
        return (main, *self.workers)
