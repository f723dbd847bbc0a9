"""The config reader turns each stack into checked groups, one per component, and refuses what cannot work."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import pulumi
import pytest

from infra.config import GROUPS, ConfigError, Group, Key, Settings, load_settings
from infra.config.service import ARGON2_MIB
from infra.mockrun import MOCK_DATABASE_URL, render, run_program
from infra.stack_config import ConfigKey, schema, stack_values

SECRETS = {  # group, field
    "secretKey": ("service", "secret_key"), "jwtPrivateKey": ("service", "jwt_private_key"),
    "databaseUrl": ("database", "url"), "alertPagerdutyRoutingKey": ("alerting", "pagerduty_routing_key"),
    "alertSlackWebhookUrl": ("alerting", "slack_webhook_url"),
    "alertHeartbeatUrl": ("alerting", "heartbeat_url"),
}


def load(stack: str, **overrides: Any) -> tuple[Settings, dict[str, bool]]:
    """Run load_settings under mocks; return the settings and whether each secret set stayed secret."""
    values = stack_values(stack, fake_secrets=True)
    if values["databaseMode"] == "external":
        values["databaseUrl"] = MOCK_DATABASE_URL
    values.update(overrides)
    found: dict[str, Any] = {}

    def program() -> None:
        settings = found["settings"] = load_settings()
        for name, (group, field) in SECRETS.items():
            value = getattr(getattr(settings, group), field)
            if value is not None:
                pulumi.export(name, value)

    rendered = run_program(program, stack, values)
    return found["settings"], {name: value == "[secret]" for name, value in rendered.outputs.items()}


@pytest.fixture(scope="module")
def dev() -> Settings:
    return load("dev")[0]


def test_stacks_load_with_their_overrides():
    dev, dev_secrets = load("dev")
    prod, prod_secrets = load("prod")
    assert (dev.stack, dev.service.service_type, dev.service.min_replicas, dev.database.mode) == (
        "dev", "ClusterIP", 1, "incluster")
    assert (prod.stack, prod.service.service_type, prod.service.min_replicas, prod.database.mode) == (
        "prod", "LoadBalancer", 3, "external")
    assert prod.service.load_balancer_source_ranges == ("0.0.0.0/0",)
    assert prod.service.image_pull_policy == "Always"
    assert prod.monitoring.alertmanager_replicas == 2 and dev.alerting.muted == ("LookoutNoTraffic",)
    assert dev.database.url is None
    assert dev_secrets == {"secretKey": True, "jwtPrivateKey": True}
    assert prod_secrets == {"secretKey": True, "jwtPrivateKey": True, "databaseUrl": True}


def test_alert_receivers_are_read_as_secrets_and_only_when_set(dev: Settings):
    alerting = dev.alerting
    assert alerting.pagerduty_routing_key is alerting.slack_webhook_url is alerting.heartbeat_url is None
    _, secret = load("prod", alertPagerdutyRoutingKey="0123456789abcdef",
                     alertSlackWebhookUrl="https://hooks.slack.com/services/T0/B0/x",
                     alertHeartbeatUrl="https://hc-ping.com/0f0e0d0c")
    assert secret["alertPagerdutyRoutingKey"] and secret["alertSlackWebhookUrl"]
    assert secret["alertHeartbeatUrl"]


def test_memory_sizing_follows_the_apps_argon2_cost(dev: Settings):
    assert ARGON2_MIB == 64  # the app's default; test_infra_app_contract.py checks the app agrees
    assert dev.service.memory_needed_mib == 1 * (8 * 64 + 128)


@pytest.mark.parametrize(
    ("group", "change", "error"),
    [
        ("service", {"memory_limit": "512Mi", "memory_request": "512Mi"},
         "cannot hold 1 worker(s) x (8 threads x 64 MiB"),
        ("service", {"gunicorn_workers": 2}, "cannot hold 2 worker(s)"),
        ("service", {"gunicorn_threads": 16}, "= 1152Mi"),
        ("service", {"pre_stop_seconds": 25}, "must exceed preStopSeconds + gunicornGracefulTimeout"),
        ("service", {"termination_grace_period_seconds": 30},
         "must exceed preStopSeconds + gunicornGracefulTimeout"),
        ("service", {"min_replicas": 4}, "maxReplicas (3) is below minReplicas (4)"),
        ("service", {"min_replicas": 0}, "minReplicas must be at least 1"),
        ("service", {"target_cpu_utilization": 0}, "targetCpuUtilization"),
        ("service", {"cpu_request": "2"}, "cpuRequest exceeds cpuLimit"),
        ("service", {"cpu_request": "lots"}, "cpuRequest: 'lots' is not a Kubernetes quantity"),
        ("service", {"memory_request": "1Gi"}, "memoryRequest exceeds memoryLimit"),
        ("service", {"load_balancer_source_ranges": ("10.0.0.1/8",)},
         "loadBalancerSourceRanges: 10.0.0.1/8 has host bits set"),
        ("service", {"otel_traces_sampler_ratio": "1.5"}, "otelTracesSamplerRatio"),
        ("service", {"otel_traces_sampler_ratio": "most"}, "otelTracesSamplerRatio"),
        ("service", {"service_type": "NodePort"},
         "serviceType: 'NodePort' is not one of LoadBalancer, ClusterIP"),
        ("service", {"image_pull_policy": "Sometimes"}, "imagePullPolicy"),
        ("service", {"external_traffic_policy": "local"},
         "externalTrafficPolicy: 'local' is not one of Local, Cluster"),
        ("database", {"egress_cidrs": ("not-a-range",)}, "databaseEgressCidrs"),
        ("database", {"mode": "sqlite"}, "databaseMode"),
        ("database", {"mode": "external"}, "databaseUrl: an external database needs its URL"),
        ("database", {"storage_size": "big"}, "databaseStorageSize"),
        ("database", {"instances": 0}, "databaseInstances must be at least 1"),
        ("rate_limits", {"storage": "memcached"},
         "rateLimitStorage: 'memcached' is not one of redis, memory"),
        ("rate_limits", {"login": "thirty a minute"},
         "rateLimitLogin: 'thirty a minute' is not a rate limit such as '10 per minute'"),
        ("rate_limits", {"login_failures": "10 per fortnight"}, "rateLimitLoginFailures: '10 per fortnight'"),
        ("rate_limits", {"writes": ""}, "rateLimitWrites: '' is not a rate limit"),
        ("monitoring", {"alertmanager_replicas": 0}, "alertmanagerReplicas must be at least 1"),
        ("monitoring", {"grafana_service_type": "NodePort"}, "grafanaServiceType: 'NodePort' is not one of"),
        ("monitoring", {"prometheus_storage_size": "50 GB"},
         "prometheusStorageSize: '50 GB' is not a Kubernetes quantity"),
        ("monitoring", {"trace_storage_size": "lots"},
         "traceStorageSize: 'lots' is not a Kubernetes quantity"),
        ("monitoring", {"prometheus_retention": "1 month"},
         "prometheusRetention: '1 month' is not a Prometheus duration"),
        ("alerting", {"muted": ("LookoutNoTraffic", "LookoutNoTrafic")},
         "alertsMuted: 'LookoutNoTrafic' is not one of LookoutAvailabilityBurn1d, "),
        ("loadtest", {"run_time": "ten minutes"}, "loadtestRunTime"),
        ("loadtest", {"workers": 0}, "loadtestWorkers must be at least 1"),
        ("loadtest", {"spawn_rate": 0}, "loadtestSpawnRate must be at least 1"),
    ],
)
def test_settings_that_cannot_work_are_refused(dev: Settings, group: str, change: dict[str, Any], error: str):
    with pytest.raises(ConfigError) as raised:
        dataclasses.replace(getattr(dev, group), **change)
    assert error in str(raised.value)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"databaseUrl": ""}, "databaseUrl: an external database needs its URL"),
        ({"databaseEgressCidrs": []}, "databaseEgressCidrs: an external database needs the ranges"),
    ],
)
def test_an_external_database_needs_its_url_and_its_ranges(change: dict[str, Any], error: str):
    with pytest.raises(ConfigError, match=error):
        render("prod", change)


def test_settings_hold_one_field_per_group():
    fields = {f.name: f.type for f in dataclasses.fields(Settings)}
    assert fields.pop("stack") == "str"
    assert sorted(fields.values()) == sorted(group.__name__ for group in GROUPS)


def key_problems(keys: dict[str, ConfigKey], groups: tuple[type[Group], ...]) -> list[str]:
    """Say where the groups' fields and the declared keys disagree: a key read twice or never,
    a field of no declared key, or a field whose type reads the key otherwise than declared."""
    expected = {"string": str, "integer": int, "boolean": bool, "array": tuple[str, ...]}
    problems, seen = [], set()
    for group in groups:
        for field, (kind, key) in group.keys().items():
            where = f"{group.__name__}.{field} ({key.name})"
            if key.name in seen:
                problems.append(f"{where}: read twice")
            seen.add(key.name)
            declared = keys.get(key.name)
            if declared is None:
                problems.append(f"{where}: not declared in Pulumi.yaml")
                continue
            if declared.secret:  # required, set with --secret
                wanted: Any = pulumi.Output[str]
            elif "--secret" in declared.description:  # optional, set with --secret when set at all
                wanted = pulumi.Output[str] | None
            else:
                wanted = expected[declared.type]
            if kind != wanted:
                problems.append(f"{where}: declared {declared.type}, read as {kind}")
    problems += [f"{name}: declared but read by no group" for name in keys if name not in seen]
    return problems


def test_the_groups_read_exactly_the_declared_keys_as_declared():
    assert key_problems(schema(), GROUPS) == []


def test_a_key_the_groups_do_not_read_as_declared_is_found():
    keys = schema()
    keys["replicasPerZone"] = ConfigKey("replicasPerZone", "integer", "Pods per zone.", 1)
    keys["alertHeartbeatUrl"] = dataclasses.replace(keys["alertHeartbeatUrl"], description="A URL.")

    @dataclasses.dataclass(frozen=True)
    class Extra(Group):
        replicas: Annotated[str, Key("replicasPerZone")]
        again: Annotated[str, Key("image")]

    assert key_problems(keys, (*GROUPS, Extra)) == [
        "AlertingSettings.heartbeat_url (alertHeartbeatUrl): declared string, read as "
        "typing.Optional[pulumi.output.Output[str]]",
        "Extra.replicas (replicasPerZone): declared integer, read as <class 'str'>",
        "Extra.again (image): read twice",
    ]
    keys["pagerduty"] = ConfigKey("pagerduty", "string", "d", "")
    assert key_problems(keys, GROUPS)[-2:] == ["replicasPerZone: declared but read by no group",
                                               "pagerduty: declared but read by no group"]


def test_a_field_type_without_a_reader_is_refused_naming_its_key():
    @dataclasses.dataclass(frozen=True)
    class Odd(Group):
        ratio: Annotated[float, Key("otelTracesSamplerRatio")]

    with pytest.raises(Exception, match="otelTracesSamplerRatio: no config reader for a field of type"):
        run_program(lambda: Odd.read(pulumi.Config()), "dev", stack_values("dev", fake_secrets=True))
