"""The config reader turns each stack into checked Settings and refuses values that cannot work."""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pytest

from infra.config import ARGON2_MIB, ConfigError, Settings, load_settings
from infra.mockrun import MOCK_DATABASE_URL, render, run_program
from infra.stack_config import stack_values


def load(stack: str, **overrides: Any) -> tuple[Settings, dict[str, bool]]:
    """Run load_settings under mocks; return the settings and whether each secret stayed secret."""
    values = stack_values(stack, fake_secrets=True)
    if values["databaseMode"] == "external":
        values["databaseUrl"] = MOCK_DATABASE_URL
    values.update(overrides)
    found: dict[str, Any] = {}

    def program() -> None:
        settings = load_settings()
        found["settings"] = settings
        for name in ("secret_key", "jwt_secret_key", "database_url", "alert_pagerduty_routing_key",
                     "alert_slack_webhook_url", "alert_heartbeat_url"):
            if getattr(settings, name) is not None:
                pulumi.export(name, getattr(settings, name))

    rendered = run_program(program, stack, values)
    return found["settings"], {name: value == "[secret]" for name, value in rendered.outputs.items()}


@pytest.fixture(scope="module")
def dev() -> Settings:
    return load("dev")[0]


def test_stacks_load_with_their_overrides():
    dev, dev_secrets = load("dev")
    prod, prod_secrets = load("prod")
    assert (dev.stack, dev.service_type, dev.min_replicas, dev.database_mode) == (
        "dev",
        "ClusterIP",
        1,
        "incluster",
    )
    assert (prod.stack, prod.service_type, prod.min_replicas, prod.database_mode) == (
        "prod",
        "LoadBalancer",
        3,
        "external",
    )
    assert prod.load_balancer_source_ranges == ("0.0.0.0/0",) and prod.image_pull_policy == "Always"
    assert dev.database_url is None
    assert dev_secrets == {"secret_key": True, "jwt_secret_key": True}
    assert prod_secrets == {"secret_key": True, "jwt_secret_key": True, "database_url": True}


def test_alert_receivers_are_read_as_secrets_and_only_when_set(dev: Settings):
    assert (dev.alert_pagerduty_routing_key, dev.alert_slack_webhook_url, dev.alert_heartbeat_url) == (
        None, None, None)
    _, secret = load("prod", alertPagerdutyRoutingKey="0123456789abcdef",
                     alertSlackWebhookUrl="https://hooks.slack.com/services/T0/B0/x",
                     alertHeartbeatUrl="https://hc-ping.com/0f0e0d0c")
    assert secret["alert_pagerduty_routing_key"] is True and secret["alert_slack_webhook_url"] is True
    assert secret["alert_heartbeat_url"] is True


def test_memory_sizing_follows_the_apps_argon2_cost(dev: Settings):
    assert ARGON2_MIB == 64
    assert dev.memory_needed_mib == 1 * (8 * 64 + 128)
    assert dev.quantity("memoryLimit") >= dev.memory_needed_mib * 2**20


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"memory_limit": "512Mi", "memory_request": "512Mi"},
            "cannot hold 1 worker(s) x (8 threads x 64 MiB",
        ),
        ({"gunicorn_workers": 2}, "cannot hold 2 worker(s)"),
        ({"gunicorn_threads": 16}, "= 1152Mi"),
        ({"pre_stop_seconds": 25}, "must exceed preStopSeconds + gunicornGracefulTimeout"),
        ({"termination_grace_period_seconds": 30}, "must exceed preStopSeconds + gunicornGracefulTimeout"),
        ({"min_replicas": 4}, "maxReplicas (3) is below minReplicas (4)"),
        ({"min_replicas": 0}, "minReplicas must be at least 1"),
        ({"target_cpu_utilization": 0}, "targetCpuUtilization"),
        ({"cpu_request": "2"}, "cpuRequest exceeds cpuLimit"),
        ({"cpu_request": "lots"}, "not a Kubernetes quantity"),
        ({"memory_request": "1Gi"}, "memoryRequest exceeds memoryLimit"),
        (
            {"load_balancer_source_ranges": ("10.0.0.1/8",)},
            "loadBalancerSourceRanges: 10.0.0.1/8 has host bits set",
        ),
        ({"database_egress_cidrs": ("not-a-range",)}, "databaseEgressCidrs"),
        ({"otel_traces_sampler_ratio": "1.5"}, "otelTracesSamplerRatio"),
        ({"otel_traces_sampler_ratio": "most"}, "otelTracesSamplerRatio"),
        ({"service_type": "NodePort"}, "serviceType: 'NodePort' is not one of LoadBalancer, ClusterIP"),
        ({"image_pull_policy": "Sometimes"}, "imagePullPolicy"),
        ({"database_mode": "sqlite"}, "databaseMode"),
        ({"external_traffic_policy": "local"}, "externalTrafficPolicy: 'local' is not one of Local, Cluster"),
        ({"rate_limit_storage": "memcached"}, "rateLimitStorage: 'memcached' is not one of redis, memory"),
        ({"rate_limit_login": "thirty a minute"},
         "rateLimitLogin: 'thirty a minute' is not a rate limit such as '10 per minute'"),
        ({"rate_limit_login_failures": "10 per fortnight"}, "rateLimitLoginFailures: '10 per fortnight'"),
        ({"rate_limit_writes": ""}, "rateLimitWrites: '' is not a rate limit"),
        ({"database_mode": "external"}, "databaseEgressCidrs: an external database needs"),
        ({"loadtest_run_time": "ten minutes"}, "loadtestRunTime"),
        ({"loadtest_workers": 0}, "loadtestWorkers must be at least 1"),
        ({"alertmanager_replicas": 0}, "alertmanagerReplicas must be at least 1"),
        ({"database_storage_size": "big"}, "databaseStorageSize"),
        ({"prometheus_storage_size": "50 GB"}, "prometheusStorageSize: '50 GB' is not a Kubernetes quantity"),
        ({"trace_storage_size": "lots"}, "traceStorageSize: 'lots' is not a Kubernetes quantity"),
        ({"prometheus_retention": "1 month"}, "prometheusRetention: '1 month' is not a Prometheus duration"),
        ({"alerts_muted": ("LookoutNoTraffic", "LookoutNoTrafic")},
         "alertsMuted: 'LookoutNoTrafic' is not one of LookoutAvailabilityBurn1d, "),
    ],
)
def test_settings_that_cannot_work_are_refused(dev: Settings, change: dict[str, Any], error: str):
    with pytest.raises(ConfigError) as raised:
        dataclasses.replace(dev, **change)
    assert error in str(raised.value)


def test_an_external_database_needs_its_url():
    with pytest.raises(ConfigError, match="databaseUrl: an external database needs its URL"):
        render("prod", {"databaseUrl": ""})
