"""The three instances of the service component in every stack: the users API, the notifier (its
API and its consumer) and the outbox relay, each held to the same rules, with what differs typed
(a worker's probes, a consumer's external scaler, a relay's fixed count); the notifier's own
database, its migration Job (run here on SQLite), its mail server and its network rules."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dashboards.generate.target import TARGET
from infra.checks import matches, pods_selected
from infra.components import ExternalScaler, Fixed, ObservableService, Process
from infra.components.mail import MAILPIT_IMAGE
from infra.config import ConfigError
from infra.config.notifier import NotifierSettings
from infra.mockrun import Rendered, render, run_program
from infra.stack import (
    APP,
    NOTIFIER,
    NOTIFIER_CONSUMER_COMMAND,
    NOTIFIER_MIGRATION_COMMAND,
    NOTIFIER_SERVER_COMMAND,
    RELAY,
    RELAY_COMMAND,
    REPO_ROOT,
)
from infrastructure.test_infra_app_contract import container_environ
from infrastructure.test_infra_service import BASE

STACKS = ("dev", "staging", "prod")
SERVICES = (APP, NOTIFIER, RELAY)


@pytest.fixture(scope="module")
def stacks(render_case) -> dict[str, Rendered]:
    return {s: render("staging") if s == "staging" else render_case(s) for s in STACKS}


def workloads_of(r: Rendered, service: str) -> list[dict[str, Any]]:
    """The Deployments and Rollouts running a service's processes (not its migration Job)."""
    return [w for w in r.find("Deployment") + r.find("Rollout")
            if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == service]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("service", SERVICES)
def test_every_process_is_scraped_under_its_service_s_job(stacks, stack: str, service: str):
    r = stacks[stack]
    metrics = r.one("Service", f"{service}-metrics")
    (monitor,) = [m for m in r.find("ServiceMonitor") if matches(m["spec"]["selector"],
                                                                 metrics["metadata"]["labels"])]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selected = {w["metadata"]["name"]
                for w, _ in pods_selected(r.objects, "lookout", metrics["spec"]["selector"])}
    assert selected == {w["metadata"]["name"] for w in workloads_of(r, service)}, "each process, no other"


def test_the_jobs_are_the_ones_the_rules_select(stacks):
    """prometheus-operator names a job after the scraped Service: the rules' notifier job, and the relay's."""
    for r in stacks.values():
        assert {s["metadata"]["name"] for s in r.find("Service")} >= {
            TARGET.job, TARGET.notifier_job, "lookout-relay-metrics"}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("service", SERVICES)
def test_each_process_has_one_scaler_a_budget_and_restricted_pods(stacks, stack: str, service: str):
    r = stacks[stack]
    workloads = workloads_of(r, service)
    assert workloads
    for w in workloads:
        name, labels = w["metadata"]["name"], w["spec"]["template"]["metadata"]["labels"]
        hpas = [h for h in r.find("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
        if name == RELAY:
            assert hpas == [] and w["spec"]["replicas"] >= 1  # Fixed
        elif name == f"{NOTIFIER}-consumer":
            assert hpas == [] and "replicas" not in w["spec"], "the queue-depth scaler owns the count"
        else:
            assert len(hpas) == 1 and "replicas" not in w["spec"]
        (pdb,) = [p for p in r.find("PodDisruptionBudget") if matches(p["spec"]["selector"], labels)]
        assert pdb["spec"]["maxUnavailable"] == 1
        (container,) = w["spec"]["template"]["spec"]["containers"]
        assert container["image"] == r.outputs["image"]
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(container)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        policies = [p for p in r.find("NetworkPolicy") if p["metadata"]["namespace"] == "lookout"
                    and matches(p["spec"]["podSelector"], labels)]
        assert [p["spec"]["policyTypes"] for p in policies] == [["Ingress", "Egress"]]


@pytest.mark.parametrize("stack", STACKS)
def test_processes_run_their_commands(stacks, stack: str):
    r = stacks[stack]
    commands = {w["metadata"]["name"]: w["spec"]["template"]["spec"]["containers"][0].get("command")
                for w in workloads_of(r, NOTIFIER) + workloads_of(r, RELAY) + workloads_of(r, APP)}
    assert commands == {APP: None, NOTIFIER: list(NOTIFIER_SERVER_COMMAND),
                        f"{NOTIFIER}-consumer": list(NOTIFIER_CONSUMER_COMMAND), RELAY: list(RELAY_COMMAND)}
    # Workers have no Service for traffic; their probes ask the metrics listener.
    relay = r.one("Deployment", RELAY)["spec"]["template"]["spec"]["containers"][0]
    assert relay["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert not r.find("Service", RELAY) and not r.find("Service", f"{NOTIFIER}-consumer")
    assert r.one("Service", NOTIFIER)["spec"]["type"] == "ClusterIP"


def _egress(r: Rendered, name: str) -> list[dict[str, Any]]:
    return r.one("NetworkPolicy", name)["spec"]["egress"]


def _ports(rules: list[dict[str, Any]]) -> list[int]:
    return sorted(p["port"] for rule in rules for p in rule["ports"])


@pytest.mark.parametrize("stack", STACKS)
def test_the_notifier_reaches_its_database_the_broker_smtp_dns_and_nothing_else(stacks, stack: str):
    r = stacks[stack]
    egress = _egress(r, NOTIFIER)
    smtp = 1025 if stack == "dev" else 465
    # DNS (2), the database, the broker, SMTP, the collector (its spans), the users API (its public keys).
    assert _ports(egress) == sorted([53, 53, 5432, 5672, smtp, 4318, 8000])
    (to_smtp,) = [rule for rule in egress if rule["ports"][0]["port"] == smtp]
    if stack == "dev":
        assert to_smtp["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == f"{APP}-mail"
    else:
        assert to_smtp["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]  # the stacks' placeholder range
    relay = _egress(r, RELAY)
    assert _ports(relay) == sorted([53, 53, 5432, 5672, 4318])  # DNS, the users database, broker, collector
    assert r.one("NetworkPolicy", RELAY)["spec"]["ingress"][0]["from"]  # Prometheus's namespace only
    assert _ports(r.one("NetworkPolicy", RELAY)["spec"]["ingress"]) == [9102]  # scrapes only


def test_the_notifier_has_its_own_database_and_role_in_the_cluster(stacks):
    r = stacks["dev"]
    cluster = r.one("Cluster", f"{APP}-db")["spec"]
    (role,) = cluster["managed"]["roles"]
    assert (role["name"], role["login"], role["ensure"]) == ("notifier", True, "present")
    secret = r.one("Secret", role["passwordSecret"]["name"])
    assert secret["type"] == "kubernetes.io/basic-auth" and secret["stringData"]["username"] == "notifier"
    wait = r.one("Database")["metadata"]["annotations"]["pulumi.com/waitFor"]
    assert wait == "jsonpath={.status.applied}=true", "made before the notifier's migrations run"
    database = r.one("Database")["spec"]
    assert database == {"cluster": {"name": f"{APP}-db"}, "name": "notifier", "owner": "notifier",
                        "ensure": "present"}
    (notifier_secret,) = [s for s in r.find("Secret")
                          if s["metadata"]["name"].startswith(f"{NOTIFIER}-secrets")]
    url = notifier_secret["stringData"]["DATABASE_URL"]
    assert url.startswith(f"postgresql://notifier:{secret['stringData']['password']}@{APP}-db-rw.")
    assert url.endswith("/notifier")
    broker = r.one("Secret", "lookout-broker-default-user")["stringData"]  # the stack's own broker
    assert notifier_secret["stringData"]["BROKER_URL"] == broker["connection_string"]


def test_an_external_database_needs_the_notifier_s_url():
    with pytest.raises(ConfigError, match="notifierDatabaseUrl"):
        render("prod", {"notifierDatabaseUrl": "", "databaseUrl": "postgresql://u:p@db.example/lookout"})


def test_the_notifier_s_migrations_run_in_its_own_job_before_its_pods(stacks, tmp_path: Path):
    """The Job's command, with the environment the kubelet would give it, on a new SQLite database."""
    r = stacks["dev"]
    (job,) = [j for j in r.find("Job") if j["metadata"]["name"].startswith(f"{NOTIFIER}-migrate-")]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == list(NOTIFIER_MIGRATION_COMMAND)
    for deployment in (f"{NOTIFIER}-deployment", f"{NOTIFIER}-consumer-deployment"):
        assert f"{NOTIFIER}-migrations" in r.depends_on[deployment]
    environ = container_environ(r, pod, container, "lookout", tmp_path)
    for name in ("DATABASE_URL_FILE", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        environ.pop(name)  # the cluster's database and collector: a local database instead
    environ |= {"DATABASE_URL": f"sqlite:///{tmp_path / 'notifier.db'}", "OTEL_TRACES_EXPORTER": "none",
                "PATH": os.environ["PATH"]}
    migrated = subprocess.run([sys.executable, "-m", *container["command"]], cwd=REPO_ROOT, env=environ,
                              capture_output=True, text=True, timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(tmp_path / "notifier.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"notifications", "alembic_version"} <= tables


def test_dev_runs_mailpit_pinned_and_reachable_only_from_the_notifier(stacks):
    r = stacks["dev"]
    (mailpit,) = r.one("Deployment", f"{APP}-mail")["spec"]["template"]["spec"]["containers"]
    assert mailpit["image"] == MAILPIT_IMAGE and "@sha256:" in MAILPIT_IMAGE
    ports = {p["name"]: p["port"] for p in r.one("Service", f"{APP}-mail")["spec"]["ports"]}
    assert ports == {"smtp": 1025, "http": 8025}
    (ingress,) = r.one("NetworkPolicy", f"{APP}-mail")["spec"]["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 1025}]
    assert ingress["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": NOTIFIER}
    assert r.outputs["mailCatcher"] == f"{APP}-mail"
    for stack in ("staging", "prod"):
        assert not stacks[stack].find("Deployment", f"{APP}-mail")
        assert stacks[stack].outputs["mailCatcher"] == ""


GOOD_MAIL = {"min_replicas": 2, "max_replicas": 4, "consumer_min_replicas": 1, "consumer_max_replicas": 5,
             "cpu_request": "100m", "cpu_limit": "500m", "memory": "384Mi", "database_url": None,
             "mail_server": "smtp", "smtp_url": "smtps://smtp.example.com",
             "smtp_egress_cidrs": ("0.0.0.0/0",),
             "smtp_username": None, "smtp_password": None}


@pytest.mark.parametrize(("change", "error"), [
    ({"smtp_url": ""}, "smtpUrl: mailServer smtp needs the server"),
    ({"smtp_url": "smtp+plain://mail.example.com:25"}, "smtpUrl: .* is not an smtps://"),
    ({"smtp_url": "smtps://user:pw@smtp.example.com"}, "smtpUrl must not hold credentials"),
    ({"smtp_url": "smtps://smtp.example.com:x"}, "smtpUrl: .* has an invalid port"),
    ({"smtp_egress_cidrs": ()}, "smtpEgressCidrs"),
    ({"smtp_username": "mailer"}, "smtpUsername and smtpPassword are set together"),
    ({"consumer_min_replicas": 6}, "notifierConsumerMaxReplicas"),
    ({"mail_server": "sendmail"}, "mailServer: 'sendmail' is not one of"),
])
def test_bad_mail_settings_fail_naming_the_setting(change: dict[str, Any], error: str):
    NotifierSettings(**GOOD_MAIL)
    assert NotifierSettings(**GOOD_MAIL).smtp_port == 465
    with pytest.raises(ConfigError, match=error):
        NotifierSettings(**{**GOOD_MAIL, **change})


def _component(args: Any) -> Rendered:
    return run_program(lambda: ObservableService("billing", args), "test")


def test_the_component_s_worker_kinds():
    """A worker-only service (Fixed) and a service with a consumer on an external scaler."""
    relay = _component(dataclasses.replace(BASE, serves_http=False, component="relay", scaling=Fixed(2),
                                           command=("billing", "relay"), migration_command=None))
    assert relay.one("Deployment")["spec"]["replicas"] == 2
    assert relay.find("HorizontalPodAutoscaler") == [] and [s["metadata"]["name"] for s in relay.find(
        "Service")] == ["billing-metrics"]
    assert _ports(relay.one("NetworkPolicy")["spec"]["ingress"]) == [9100]
    assert "PORT" not in relay.one("ConfigMap")["data"]
    consumer = Process("consumer", ("billing", "consume"), ExternalScaler(0, 8), BASE.resources,
                       BASE.shutdown, metrics_port=9102, env={"CONSUMER_METRICS_PORT": "9102"})
    both = _component(dataclasses.replace(BASE, workers=(consumer,)))
    deployments = {d["metadata"]["name"]: d for d in both.find("Deployment")}
    assert set(deployments) == {"billing", "billing-consumer"}
    assert "replicas" not in deployments["billing-consumer"]["spec"]
    (hpa,) = both.find("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "billing"
    (container,) = deployments["billing-consumer"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "CONSUMER_METRICS_PORT", "value": "9102"} in container["env"]
    assert "lifecycle" not in container, "no endpoints to leave: no preStop pause"
    assert _ports(both.one("NetworkPolicy")["spec"]["ingress"]) == [8000, 9100, 9102]
    assert len(both.find("PodDisruptionBudget")) == 2
