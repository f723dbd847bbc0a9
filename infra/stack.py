"""The whole deployment: settings in, components wired together, stack outputs out.

Monitoring comes first (the service needs the collector's address), then the database, the
rate-limit store, the service, and the optional load generator aimed at the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi

import dashboards
from infra.components import (
    Database,
    DatabaseArgs,
    LoadGenerator,
    LoadGeneratorArgs,
    Monitoring,
    MonitoringArgs,
    ObservableService,
    Peer,
    RateLimitStore,
    RateLimitStoreArgs,
    Resources,
    Scaling,
    ScrapeTarget,
    ServiceArgs,
    Shutdown,
    WritableDir,
)
from infra.components.pods import selector
from infra.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = "lookout"
METRICS_DIR = "/var/lib/lookout/metrics"


@dataclass(frozen=True)
class RepoFiles:
    """The repo's data the deployment carries: dashboards, rule files and the locust files."""

    dashboards: tuple[Path, ...]
    rules: tuple[Path, ...]
    loadtests: Mapping[str, str] = field(default_factory=dict)  # repo-relative path -> text


def repo_files(root: Path = REPO_ROOT) -> RepoFiles:
    """Collect the data files through the one loader that tests use too."""
    locust = sorted(p for p in (root / "loadtests").rglob("*.py") if "__pycache__" not in p.parts)
    # The locustfile imports `from dashboards import load_slo`, which reads slo.yaml beside it.
    locust += [root / "dashboards" / "__init__.py", root / "dashboards" / "slo.yaml"]
    return RepoFiles(dashboards=tuple(dashboards.dashboard_files()), rules=tuple(dashboards.rule_files()),
                     loadtests={p.relative_to(root).as_posix(): p.read_text() for p in locust if p.exists()})


def app_settings(s: Settings, collector_endpoint: str) -> dict[str, str]:
    """Return the non-secret environment of the app (its ConfigMap)."""
    env = {
        "LOOKOUT_ENV": "production",  # refuses to start without real secrets
        "GUNICORN_WORKERS": str(s.gunicorn_workers),
        "GUNICORN_THREADS": str(s.gunicorn_threads),
        "GUNICORN_WORKER_CLASS": "gthread",
        "GUNICORN_TIMEOUT": "30",
        "GUNICORN_KEEPALIVE": "75",  # longer than cloud load balancers' 60 s idle timeout
        "GUNICORN_WORKER_TMP_DIR": "/tmp",  # noqa: S108 - a memory-backed emptyDir: heartbeats stay off disk
        "OTEL_SERVICE_NAME": APP,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": s.otel_traces_sampler_ratio,
        "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment={s.stack}",
        "RATE_LIMIT_LOGIN": s.rate_limit_login,
        "RATE_LIMIT_LOGIN_FAILURES": s.rate_limit_login_failures,
        "RATE_LIMIT_WRITES": s.rate_limit_writes,
    }
    if s.gunicorn_workers > 1:  # one worker keeps plain metrics, and with them exemplars
        env["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR
    return env


def deploy(s: Settings, files: RepoFiles) -> dict[str, pulumi.Input[str]]:
    """Declare everything for one stack and return its outputs."""
    monitoring = Monitoring("monitoring", MonitoringArgs(
        namespace=s.monitoring_namespace, dashboard_files=files.dashboards, rule_files=files.rules,
        targets=(ScrapeTarget(APP, s.namespace, selector(APP, "metrics"), port="metrics"),),
        grafana_service_type=s.grafana_service_type, prometheus_retention=s.prometheus_retention,
        prometheus_storage_size=s.prometheus_storage_size, traces_export_endpoint=s.traces_export_endpoint,
        trace_store=s.trace_store, trace_retention=s.trace_retention,
        trace_storage_size=s.trace_storage_size, alertmanager_replicas=s.alertmanager_replicas,
        control_plane=s.control_plane_monitoring,
        pagerduty_routing_key=s.alert_pagerduty_routing_key,
        slack_webhook_url=s.alert_slack_webhook_url, heartbeat_url=s.alert_heartbeat_url,
        muted_alerts=s.alerts_muted))
    database = Database(f"{APP}-db", DatabaseArgs(
        mode=s.database_mode, port=s.database_port, external_url=s.database_url,
        external_cidrs=s.database_egress_cidrs, instances=s.database_instances,
        storage_size=s.database_storage_size))

    secrets: dict[str, pulumi.Input[str]] = {
        "SECRET_KEY": s.secret_key, "JWT_SECRET_KEY": s.jwt_secret_key, "DATABASE_URL": database.url}
    egress = [database.peer, monitoring.collector]
    if s.rate_limit_storage == "redis":
        counts = RateLimitStore(f"{APP}-ratelimit", RateLimitStoreArgs(
            client_namespace=s.namespace, client_labels=selector(APP, "server")))
        secrets["RATE_LIMIT_STORAGE_URL"] = counts.url
        egress.append(counts.peer)

    writable = [WritableDir("tmp", "/tmp", "64Mi", in_memory=True)]  # noqa: S108
    if s.gunicorn_workers > 1:
        writable.append(WritableDir("metrics", METRICS_DIR, "256Mi"))
    skips = {} if "@sha256:" in s.image else {
        "CKV_K8S_43": "the release pipeline deploys by digest; other stacks run tags of images they build"}
    service = ObservableService(APP, ServiceArgs(
        namespace=s.namespace, image=s.image, image_pull_policy=s.image_pull_policy,
        resources=Resources(s.cpu_request, s.cpu_limit, s.memory_request, s.memory_limit),
        scaling=Scaling(s.min_replicas, s.max_replicas, s.target_cpu_utilization,
                        s.scale_down_stabilization_seconds, s.target_requests_per_second),
        shutdown=Shutdown(s.pre_stop_seconds, s.gunicorn_graceful_timeout,
                          s.termination_grace_period_seconds),
        settings=app_settings(s, monitoring.collector_endpoint),
        secrets=secrets, scrape_namespace=s.monitoring_namespace, egress=tuple(egress),
        service_type=s.service_type, source_ranges=s.load_balancer_source_ranges,
        external_traffic_policy=s.external_traffic_policy,
        writable_dirs=tuple(writable), migration_command=("flask", "--app", "app", "db", "upgrade"),
        skips=skips))

    outputs: dict[str, pulumi.Input[str]] = {
        "loadBalancerAddress": service.address,
        "serviceUrl": service.url,
        "namespace": service.namespace,
        "grafanaAddress": monitoring.grafana_address,
        "grafanaAdminPassword": monitoring.grafana_admin_password,
        "image": s.image,  # what runs now: the release pipeline rolls back to it
    }
    if s.loadtest_enabled:
        loadgen = LoadGenerator(f"{APP}-loadtest", LoadGeneratorArgs(
            files=files.loadtests, target_url=service.url,
            target=Peer(port=8000, namespace=s.namespace, pod_labels=selector(APP, "server")),
            image=s.loadtest_image, workers=s.loadtest_workers, users=s.loadtest_users,
            spawn_rate=s.loadtest_spawn_rate, run_time=s.loadtest_run_time,
            pip_packages=s.loadtest_pip_packages))
        outputs["locustWebUrl"] = loadgen.web_url
    return outputs
