"""The one reader of the stack's config: ``pulumi.Config()`` -> a frozen, checked ``Settings``.

Usage (inside a Pulumi program):
    settings = load_settings()

Every key, its type and its default are declared in Pulumi.yaml, and the CLI applies the defaults
before the program starts, so this module only reads (``require_*``) and checks what no schema
can express: allowed words, CIDR ranges, quantities, and rules that tie keys together.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal

import pulumi

from app.config import Config as AppConfig
from app.config import check_rate_limit
from dashboards import alert_names, duration_seconds
from infra.stack_config import ConfigError, parse_quantity

ARGON2_MIB = AppConfig.model_fields["PASSWORD_HASH_MEMORY_KIB"].default // 1024  # per concurrent hash
WORKER_BASELINE_MIB = 128  # one gunicorn worker with Flask, SQLAlchemy and OpenTelemetry loaded
_DURATION = re.compile(r"^([0-9]+[hms])+$")


@dataclass(frozen=True)
class Settings:
    stack: str
    image: str
    image_pull_policy: str
    namespace: str
    service_type: str
    load_balancer_source_ranges: tuple[str, ...]
    external_traffic_policy: str
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int
    target_requests_per_second: int
    scale_down_stabilization_seconds: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    gunicorn_workers: int
    gunicorn_threads: int
    gunicorn_graceful_timeout: int
    pre_stop_seconds: int
    termination_grace_period_seconds: int
    otel_traces_sampler_ratio: str
    secret_key: pulumi.Output[str]
    jwt_secret_key: pulumi.Output[str]
    database_mode: str
    database_url: pulumi.Output[str] | None
    database_egress_cidrs: tuple[str, ...]
    database_port: int
    database_storage_size: str
    database_instances: int
    rate_limit_storage: str
    rate_limit_login: str
    rate_limit_login_failures: str
    rate_limit_writes: str
    monitoring_namespace: str
    grafana_service_type: str
    prometheus_retention: str
    prometheus_storage_size: str
    traces_export_endpoint: str
    trace_store: bool
    trace_retention: str
    trace_storage_size: str
    alertmanager_replicas: int
    control_plane_monitoring: bool
    alert_pagerduty_routing_key: pulumi.Output[str] | None
    alert_slack_webhook_url: pulumi.Output[str] | None
    alert_heartbeat_url: pulumi.Output[str] | None
    alerts_muted: tuple[str, ...]
    loadtest_enabled: bool
    loadtest_workers: int
    loadtest_users: int
    loadtest_spawn_rate: int
    loadtest_run_time: str
    loadtest_image: str
    loadtest_pip_packages: tuple[str, ...]

    def __post_init__(self) -> None:
        _one_of("imagePullPolicy", self.image_pull_policy, "Always", "IfNotPresent", "Never")
        _one_of("serviceType", self.service_type, "LoadBalancer", "ClusterIP")
        _one_of("grafanaServiceType", self.grafana_service_type, "LoadBalancer", "ClusterIP")
        _one_of("databaseMode", self.database_mode, "external", "incluster")
        _one_of("externalTrafficPolicy", self.external_traffic_policy, "Local", "Cluster")
        _one_of("rateLimitStorage", self.rate_limit_storage, "redis", "memory")
        for key, limit in (("rateLimitLogin", self.rate_limit_login),
                           ("rateLimitLoginFailures", self.rate_limit_login_failures),
                           ("rateLimitWrites", self.rate_limit_writes)):
            try:
                check_rate_limit(limit)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        _cidrs("loadBalancerSourceRanges", self.load_balancer_source_ranges)
        _cidrs("databaseEgressCidrs", self.database_egress_cidrs)
        _at_least(1, minReplicas=self.min_replicas, gunicornWorkers=self.gunicorn_workers,
                  gunicornThreads=self.gunicorn_threads, databaseInstances=self.database_instances,
                  loadtestWorkers=self.loadtest_workers, loadtestUsers=self.loadtest_users,
                  loadtestSpawnRate=self.loadtest_spawn_rate,
                  gunicornGracefulTimeout=self.gunicorn_graceful_timeout,
                  alertmanagerReplicas=self.alertmanager_replicas)
        _at_least(0, targetRequestsPerSecond=self.target_requests_per_second,
                  preStopSeconds=self.pre_stop_seconds,
                  scaleDownStabilizationSeconds=self.scale_down_stabilization_seconds)
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"maxReplicas ({self.max_replicas}) is below minReplicas ({self.min_replicas})")
        if not 1 <= self.target_cpu_utilization <= 100:
            raise ConfigError("targetCpuUtilization must be a percentage between 1 and 100")
        for request, limit in (("cpuRequest", "cpuLimit"), ("memoryRequest", "memoryLimit")):
            if self.quantity(request) > self.quantity(limit):
                raise ConfigError(f"{request} exceeds {limit}")
        if self.quantity("memoryLimit") < self.memory_needed_mib * 2**20:
            raise ConfigError(
                f"memoryLimit {self.memory_limit} cannot hold {self.gunicorn_workers} worker(s) x "
                f"({self.gunicorn_threads} threads x {ARGON2_MIB} MiB Argon2id + {WORKER_BASELINE_MIB} MiB) "
                f"= {self.memory_needed_mib}Mi")
        if self.pre_stop_seconds + self.gunicorn_graceful_timeout >= self.termination_grace_period_seconds:
            raise ConfigError("terminationGracePeriodSeconds must exceed preStopSeconds + "
                              "gunicornGracefulTimeout, or pods are killed while requests are in flight")
        try:
            ratio = float(self.otel_traces_sampler_ratio)
        except ValueError:
            ratio = -1.0
        if not 0 <= ratio <= 1:
            raise ConfigError(f"otelTracesSamplerRatio: {self.otel_traces_sampler_ratio!r} "
                              "is not between 0 and 1")
        if self.database_mode == "external" and not self.database_egress_cidrs:
            raise ConfigError("databaseEgressCidrs: an external database needs the ranges it is reached in")
        if self.loadtest_run_time and not _DURATION.match(self.loadtest_run_time):
            raise ConfigError(f"loadtestRunTime: {self.loadtest_run_time!r} "
                              "is not a duration such as 10m or 1h30m")
        if self.alerts_muted:  # a misspelt name would mute nothing, silently
            known = sorted(set(alert_names()))  # reads the rule files: once, and only when needed
            for name in self.alerts_muted:
                _one_of("alertsMuted", name, *known)
        self.quantity("databaseStorageSize")
        for key in ("prometheusStorageSize", "traceStorageSize"):
            if getattr(self, _attribute(key)):  # empty: no volume
                self.quantity(key)
        try:
            duration_seconds(self.prometheus_retention)
        except ValueError:
            raise ConfigError(f"prometheusRetention: {self.prometheus_retention!r} "
                              "is not a Prometheus duration such as 15d or 12h") from None

    @property
    def memory_needed_mib(self) -> int:
        """Memory the process model needs with every thread hashing a password at once."""
        return self.gunicorn_workers * (self.gunicorn_threads * ARGON2_MIB + WORKER_BASELINE_MIB)

    def quantity(self, key: str) -> Decimal:
        return parse_quantity(key, getattr(self, _attribute(key)))


def _attribute(key: str) -> str:
    """The Settings attribute of a config key: memoryLimit -> memory_limit."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _one_of(key: str, value: str, *allowed: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def _cidrs(key: str, ranges: tuple[str, ...]) -> None:
    for cidr in ranges:
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None


def _at_least(minimum: int, **values: int) -> None:
    for key, value in values.items():
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum}, got {value}")


def load_settings(config: pulumi.Config | None = None) -> Settings:
    """Read every key of the stack's config once; secrets stay Outputs so they stay encrypted."""
    c = config or pulumi.Config()
    mode = c.require("databaseMode")
    if mode == "external" and not c.get("databaseUrl"):  # asks only whether it is set; the value stays secret
        raise ConfigError("databaseUrl: an external database needs its URL "
                          "(pulumi config set --secret databaseUrl ...)")
    return Settings(
        stack=pulumi.get_stack(),
        image=c.require("image"),
        image_pull_policy=c.require("imagePullPolicy"),
        namespace=c.require("namespace"),
        service_type=c.require("serviceType"),
        load_balancer_source_ranges=tuple(c.require_object("loadBalancerSourceRanges")),
        external_traffic_policy=c.require("externalTrafficPolicy"),
        min_replicas=c.require_int("minReplicas"),
        max_replicas=c.require_int("maxReplicas"),
        target_cpu_utilization=c.require_int("targetCpuUtilization"),
        target_requests_per_second=c.require_int("targetRequestsPerSecond"),
        scale_down_stabilization_seconds=c.require_int("scaleDownStabilizationSeconds"),
        cpu_request=c.require("cpuRequest"),
        cpu_limit=c.require("cpuLimit"),
        memory_request=c.require("memoryRequest"),
        memory_limit=c.require("memoryLimit"),
        gunicorn_workers=c.require_int("gunicornWorkers"),
        gunicorn_threads=c.require_int("gunicornThreads"),
        gunicorn_graceful_timeout=c.require_int("gunicornGracefulTimeout"),
        pre_stop_seconds=c.require_int("preStopSeconds"),
        termination_grace_period_seconds=c.require_int("terminationGracePeriodSeconds"),
        otel_traces_sampler_ratio=c.require("otelTracesSamplerRatio"),
        # require_secret keeps them encrypted in state; require() would store plaintext (pulumi#18866).
        secret_key=c.require_secret("secretKey"),
        jwt_secret_key=c.require_secret("jwtSecretKey"),
        database_mode=mode,
        database_url=c.require_secret("databaseUrl") if mode == "external" else None,
        database_egress_cidrs=tuple(c.require_object("databaseEgressCidrs")),
        database_port=c.require_int("databasePort"),
        database_storage_size=c.require("databaseStorageSize"),
        database_instances=c.require_int("databaseInstances"),
        rate_limit_storage=c.require("rateLimitStorage"),
        rate_limit_login=c.require("rateLimitLogin"),
        rate_limit_login_failures=c.require("rateLimitLoginFailures"),
        rate_limit_writes=c.require("rateLimitWrites"),
        monitoring_namespace=c.require("monitoringNamespace"),
        grafana_service_type=c.require("grafanaServiceType"),
        prometheus_retention=c.require("prometheusRetention"),
        prometheus_storage_size=c.require("prometheusStorageSize"),
        traces_export_endpoint=c.require("tracesExportEndpoint"),
        trace_store=c.require_bool("traceStore"),
        trace_retention=c.require("traceRetention"),
        trace_storage_size=c.require("traceStorageSize"),
        alertmanager_replicas=c.require_int("alertmanagerReplicas"),
        control_plane_monitoring=c.require_bool("controlPlaneMonitoring"),
        alert_pagerduty_routing_key=_optional_secret(c, "alertPagerdutyRoutingKey"),
        alert_slack_webhook_url=_optional_secret(c, "alertSlackWebhookUrl"),
        alert_heartbeat_url=_optional_secret(c, "alertHeartbeatUrl"),
        alerts_muted=tuple(c.require_object("alertsMuted")),
        loadtest_enabled=c.require_bool("loadtestEnabled"),
        loadtest_workers=c.require_int("loadtestWorkers"),
        loadtest_users=c.require_int("loadtestUsers"),
        loadtest_spawn_rate=c.require_int("loadtestSpawnRate"),
        loadtest_run_time=c.require("loadtestRunTime"),
        loadtest_image=c.require("loadtestImage"),
        loadtest_pip_packages=tuple(c.require_object("loadtestPipPackages")),
    )


def _optional_secret(c: pulumi.Config, key: str) -> pulumi.Output[str] | None:
    """The secret set for ``key``, still encrypted, or None where it is not set."""
    return c.require_secret(key) if c.get(key) else None  # get() asks only whether it is set
