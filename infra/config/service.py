"""The service's settings: image, exposure, scaling, pod size, process model and secrets.

They map onto ``ServiceArgs`` (infra/components/service.py); what the stack wires in from the
other components (the app's environment, its secret URLs, the peers it reaches) comes as
arguments to ``args()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import pulumi

from infra.components import Peer, Resources, Scaling, ServiceArgs, Shutdown, WritableDir
from infra.components.rollouts import Canary
from infra.config.fields import Group, Key, cidrs, email, percentage, quantity, ratio
from infra.stack_config import ConfigError, parse_quantity

# Memory each thread needs while it hashes a password: the app's Argon2id cost, its default
# PASSWORD_HASH_MEMORY_KIB (64 MiB). The stacks leave that setting alone; a contract test
# (tests/infrastructure/test_infra_app_contract.py) checks the app still loads this value.
ARGON2_MIB = 64
WORKER_BASELINE_MIB = 128  # one gunicorn worker with Flask, SQLAlchemy and OpenTelemetry loaded


@dataclass(frozen=True)
class ServiceSettings(Group):
    """The service: how it is exposed and scaled, how big its pods are, how it shuts down."""

    image: Annotated[str, Key("image")]
    image_pull_policy: Annotated[str, Key("imagePullPolicy", one_of=("Always", "IfNotPresent", "Never"))]
    namespace: Annotated[str, Key("namespace")]
    service_type: Annotated[str, Key("serviceType", one_of=("LoadBalancer", "ClusterIP"))]
    load_balancer_source_ranges: Annotated[tuple[str, ...], Key("loadBalancerSourceRanges", check=cidrs)]
    external_traffic_policy: Annotated[str, Key("externalTrafficPolicy", one_of=("Local", "Cluster"))]
    min_replicas: Annotated[int, Key("minReplicas", at_least=1)]
    max_replicas: Annotated[int, Key("maxReplicas")]
    target_cpu_utilization: Annotated[int, Key("targetCpuUtilization", check=percentage)]
    target_requests_per_second: Annotated[int, Key("targetRequestsPerSecond", at_least=0)]
    scale_down_stabilization_seconds: Annotated[int, Key("scaleDownStabilizationSeconds", at_least=0)]
    cpu_request: Annotated[str, Key("cpuRequest", check=quantity)]
    cpu_limit: Annotated[str, Key("cpuLimit", check=quantity)]
    memory_request: Annotated[str, Key("memoryRequest", check=quantity)]
    memory_limit: Annotated[str, Key("memoryLimit", check=quantity)]
    gunicorn_workers: Annotated[int, Key("gunicornWorkers", at_least=1)]
    gunicorn_threads: Annotated[int, Key("gunicornThreads", at_least=1)]
    gunicorn_graceful_timeout: Annotated[int, Key("gunicornGracefulTimeout", at_least=1)]
    pre_stop_seconds: Annotated[int, Key("preStopSeconds", at_least=0)]
    termination_grace_period_seconds: Annotated[int, Key("terminationGracePeriodSeconds")]
    otel_traces_sampler_ratio: Annotated[str, Key("otelTracesSamplerRatio", check=ratio)]
    secret_key: Annotated[pulumi.Output[str], Key("secretKey")]
    jwt_private_key: Annotated[pulumi.Output[str], Key("jwtPrivateKey")]
    jwt_key_id: Annotated[str, Key("jwtKeyId")]
    bootstrap_admin_email: Annotated[str, Key("bootstrapAdminEmail", check=email)]
    bootstrap_admin_password: Annotated[pulumi.Output[str], Key("bootstrapAdminPassword")]

    def check(self) -> None:
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"maxReplicas ({self.max_replicas}) is below minReplicas ({self.min_replicas})")
        for request, requested, limit, limited in (
                ("cpuRequest", self.cpu_request, "cpuLimit", self.cpu_limit),
                ("memoryRequest", self.memory_request, "memoryLimit", self.memory_limit)):
            if parse_quantity(request, requested) > parse_quantity(limit, limited):
                raise ConfigError(f"{request} exceeds {limit}")
        if parse_quantity("memoryLimit", self.memory_limit) < self.memory_needed_mib * 2**20:
            raise ConfigError(
                f"memoryLimit {self.memory_limit} cannot hold {self.gunicorn_workers} worker(s) x "
                f"({self.gunicorn_threads} threads x {ARGON2_MIB} MiB Argon2id + {WORKER_BASELINE_MIB} MiB) "
                f"= {self.memory_needed_mib}Mi")
        if self.pre_stop_seconds + self.gunicorn_graceful_timeout >= self.termination_grace_period_seconds:
            raise ConfigError("terminationGracePeriodSeconds must exceed preStopSeconds + "
                              "gunicornGracefulTimeout, or pods are killed while requests are in flight")

    @property
    def memory_needed_mib(self) -> int:
        """Memory the process model needs with every thread hashing a password at once."""
        return self.gunicorn_workers * (self.gunicorn_threads * ARGON2_MIB + WORKER_BASELINE_MIB)

    def args(self, *, environment: Mapping[str, pulumi.Input[str]], secrets: Mapping[str, pulumi.Input[str]],
             egress: Sequence[Peer], scrape_namespace: str, writable_dirs: Sequence[WritableDir],
             migration_command: Sequence[str], post_migration_command: Sequence[str] | None = None,
             job_secrets: Mapping[str, pulumi.Input[str]] | None = None,
             canary: Canary | None = None, ingress_from: Sequence[Mapping[str, Any]] = ()) -> ServiceArgs:
        """Return the component's Args: these settings plus what the stack wires in."""
        return ServiceArgs(
            namespace=self.namespace, image=self.image, image_pull_policy=self.image_pull_policy,
            resources=Resources(self.cpu_request, self.cpu_limit, self.memory_request, self.memory_limit),
            scaling=Scaling(self.min_replicas, self.max_replicas, self.target_cpu_utilization,
                            self.scale_down_stabilization_seconds, self.target_requests_per_second),
            shutdown=Shutdown(self.pre_stop_seconds, self.gunicorn_graceful_timeout,
                              self.termination_grace_period_seconds),
            settings=environment, secrets=secrets, scrape_namespace=scrape_namespace, egress=tuple(egress),
            # Behind the gateway (serviceType, the source ranges and the traffic policy are its).
            service_type="ClusterIP", ingress_from=tuple(ingress_from), writable_dirs=tuple(writable_dirs),
            migration_command=migration_command, post_migration_command=post_migration_command,
            job_secrets=dict(job_secrets or {}), skips=self.image_skips, canary=canary)

    @property
    def image_skips(self) -> dict[str, str]:
        """checkov's image checks that do not apply to this image (every service of the stack runs it)."""
        return {} if "@sha256:" in self.image else {"CKV_K8S_43": (
            "the release pipeline deploys by digest; other stacks run tags of images they build")}
