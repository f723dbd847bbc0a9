"""The events' way to an email against its real processes: the contract of the relay's, the
consumer's and the broker's metrics, then a real Prometheus over them.

The outbox relay (``flask --app app events relay``) runs on a PostgreSQL database of its own, the
notifier's consumer (``flask --app app.notifier:create_app notifier consume``) on another, both in
the session's RabbitMQ virtual host (``amqp_url``), emailing a real SMTP server (aiosmtpd). The
broker's metrics are RabbitMQ's own exporter, the ``rabbitmq_prometheus`` plugin (.ci/run enables
it), read on its per-object endpoint as the cluster scrapes it (each queue a series).

User events go from the outbox through the broker to the SMTP server, and a poison message to the
dead letters; then every selector of the rules and dashboards that names the relay's, the
consumer's or the broker's metrics must be on their real /metrics, with the queue names and label
values they write (tests/promql_contract.py, as for the app). A Prometheus scraping the three
under the rules' jobs shows data on every outbox, events and broker panel and no messaging alert
expression true but the dead letters waiting; with the consumer stopped while events keep coming,
LookoutNotifierConsumerDown's expression becomes true.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from conftest import migrate, service_missing
from notifier_support import Publisher, SmtpServer
from promql_contract import Catalogue, grafana_to_promql, problems, selectors
from promserver import PrometheusServer, prometheus_binary

from dashboards import dashboard_queries, load_slo, rule_files, rule_groups
from dashboards.generate.dependencies import MESSAGING_PREFIXES
from dashboards.generate.rules import messaging_alerts
from dashboards.generate.target import TARGET
from loadtests.harness import free_port, launch, stop, wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
# RabbitMQ's prometheus plugin on the broker TEST_AMQP_URL names (its default port).
BROKER_METRICS = os.environ.get("TEST_RABBITMQ_METRICS_URL", "http://127.0.0.1:15692")
PREFIXES = (*MESSAGING_PREFIXES, "lookout_notifier_")  # what the three processes answer for


def answer(url: str) -> str:
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:
        return ""
    return response.text if response.ok else ""


class Outbox:
    """Writes user events into the users service's outbox, as a committed change does."""

    def __init__(self, url: str) -> None:
        from app import create_app

        self.app = create_app({"DATABASE_URL": url})
        self.written = 0

    def add(self) -> None:
        from app.extensions import db
        from app.models import OutboxEvent

        self.written += 1
        with self.app.app_context():
            db.session.add(OutboxEvent(type="user.created", user_id=self.written, payload={
                "email": f"user{self.written}@example.com", "name": "Ada", "role": "user"}))
            db.session.commit()


class Pipeline:
    """The relay and the consumer as processes, their metrics ports, the broker's endpoint."""

    def __init__(self, users_url: str, notifier_url: str, amqp_url: str, logs: Path) -> None:
        self.amqp_url = amqp_url
        self.vhost = unquote(urlsplit(amqp_url).path[1:]) or "/"
        self.outbox = Outbox(users_url)
        self.smtp = SmtpServer()
        self.smtp.start()
        self.relay_port, self.consumer_port = free_port(), free_port()
        self.logs = logs
        base = {**os.environ, "BROKER_URL": amqp_url, "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING"}
        self.relay_env = {**base, "LOOKOUT_ENV": "development", "DATABASE_URL": users_url,
                          "RELAY_METRICS_PORT": str(self.relay_port), "RELAY_METRICS_ADDRESS": "127.0.0.1"}
        self.consumer_env = {**base, "LOOKOUT_ENV": "testing", "DATABASE_URL": notifier_url,
                             "SMTP_URL": self.smtp.url, "CONSUMER_METRICS_PORT": str(self.consumer_port),
                             "CONSUMER_METRICS_ADDRESS": "127.0.0.1"}
        self.relay = self._start(["app", "events", "relay"], self.relay_env, "relay")
        self.consumer: Any = None
        self.start_consumer()

    def _start(self, args: list[str], env: dict[str, str], name: str) -> Any:
        with (self.logs / f"{name}.log").open("ab") as out:
            return launch([sys.executable, "-m", "flask", "--app", *args], cwd=ROOT, env=env,
                          stdout=out, stderr=out)

    def start_consumer(self) -> None:
        self.consumer = self._start(["app.notifier:create_app", "notifier", "consume"], self.consumer_env,
                                    "consumer")

    def metrics(self, port: int, process: Any, name: str) -> str:
        assert process.poll() is None, (self.logs / f"{name}.log").read_text()
        return answer(f"http://127.0.0.1:{port}/metrics")

    def relay_metrics(self) -> str:
        return self.metrics(self.relay_port, self.relay, "relay")

    def consumer_metrics(self) -> str:
        return self.metrics(self.consumer_port, self.consumer, "consumer")

    def broker_metrics(self) -> str:
        """The per-object exposition, this session's virtual host's series only (other test
        sessions share the broker; a cluster's broker serves Lookout alone)."""
        text = answer(f"{BROKER_METRICS}/metrics/per-object")
        return "".join(line + "\n" for line in text.splitlines()
                       if "vhost=" not in line or f'vhost="{self.vhost}"' in line)

    def close(self) -> None:
        for process in (self.consumer, self.relay):
            if process is not None:
                stop(process)
        self.smtp.stop()


@pytest.fixture(scope="module")
def pipeline(amqp_url: str, new_postgres_database: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Pipeline]:
    if not answer(f"{BROKER_METRICS}/metrics"):
        service_missing(f"RabbitMQ's prometheus plugin does not answer at {BROKER_METRICS} "
                        "(rabbitmq-plugins enable rabbitmq_prometheus)")
    from flask_migrate import upgrade

    from app.notifier import create_app as create_notifier
    from app.notifier.extensions import MIGRATIONS

    users_url, notifier_url = new_postgres_database(), new_postgres_database()
    migrate(users_url)
    with create_notifier({"DATABASE_URL": notifier_url}).app_context():
        upgrade(directory=MIGRATIONS)
    pipeline = Pipeline(users_url, notifier_url, amqp_url, tmp_path_factory.mktemp("messaging"))
    try:
        wait_until(lambda: "lookout_notifier_broker_connected 1.0" in pipeline.consumer_metrics(),
                   "the consumer connected")
        pipeline.outbox.add()
        wait_until(lambda: pipeline.smtp.catcher.messages, "the first event emailed")
        publisher = Publisher(amqp_url)
        try:
            publisher.raw(b"not json", "user.created", "poison-1")  # a poison message: dead-lettered
        finally:
            publisher.close()
        poisoned = ('lookout_notifier_dead_letters_total{reason="poison"} 1.0',
                    "lookout_notifier_dead_letter_queue_messages 1.0")
        wait_until(lambda: all(line in pipeline.consumer_metrics() for line in poisoned),
                   "the poison message dead-lettered, and counted in the dead-letter queue")
        wait_until(lambda: "lookout_outbox_backlog 0.0" in pipeline.relay_metrics(), "the outbox emptied")
        # The broker's queue statistics are emitted every 5 s (collect_statistics_interval).
        dead = f'rabbitmq_queue_messages{{vhost="{pipeline.vhost}",queue="{TARGET.dead_letter_queue}"}} 1'
        wait_until(lambda: dead in pipeline.broker_metrics(), "the broker counting the dead letter")
        yield pipeline
    finally:
        pipeline.close()


def messaging_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule and panel target reading the three processes' metrics."""
    found = [(f"{path.name}: {rule.get('record') or rule.get('alert')}", rule["expr"])
             for path in rule_files() for group in rule_groups([path]) for rule in group["rules"]]
    found += [(f"{q.dashboard}: {q.panel} [{q.ref_id}]", q.expr) for q in dashboard_queries()]
    return [(where, expr) for where, expr in found
            if any(s.name.startswith(PREFIXES) for s in selectors(expr))]


@pytest.fixture(scope="module")
def catalogue(pipeline: Pipeline) -> Catalogue:
    return (Catalogue().add_exposition(pipeline.relay_metrics()).add_exposition(pipeline.consumer_metrics())
            .add_exposition(pipeline.broker_metrics()).add_rules(rule_groups()))


# --- the contract ---------------------------------------------------------------------------------


def test_every_relay_consumer_and_broker_selector_names_a_metric_they_expose(catalogue: Catalogue):
    expressions = messaging_expressions()
    names = {s.name for _, expr in expressions for s in selectors(expr)}
    # the relay's, the consumer's and the broker's metrics are all read somewhere
    assert {"lookout_outbox_oldest_unpublished_age_seconds", "lookout_relay_broker_connected",
            "lookout_notifier_event_to_email_seconds_bucket", "rabbitmq_queue_messages_ready",
            "rabbitmq_queue_consumers", "rabbitmq_global_messages_delivered_total"} <= names
    assert [p for where, expr in expressions for p in problems(where, expr, catalogue)] == []


def test_a_metric_or_queue_no_exporter_has_breaks_the_contract(catalogue: Catalogue):
    # a name RabbitMQ's exporter does not have (the management API's, not the plugin's)
    assert problems("x", 'sum(rabbitmq_queue_messages_ready_total{queue="notifier.user-events"})', catalogue)
    assert problems("x", "max(lookout_outbox_oldest_age_seconds)", catalogue)  # the relay's is not this
    assert problems("x", 'rabbitmq_queue_messages_ready{queue="notifier.events"}', catalogue)  # no such queue
    assert not problems("x", f'rabbitmq_queue_messages_ready{{queue="{TARGET.notifier_queue}"}}', catalogue)


def test_the_queue_names_the_rules_select_are_the_apps():
    from app.platform.messaging import NOTIFIER_DEAD_LETTERS, NOTIFIER_QUEUE

    assert (TARGET.notifier_queue, TARGET.dead_letter_queue) == (NOTIFIER_QUEUE, NOTIFIER_DEAD_LETTERS)


# --- a real Prometheus ------------------------------------------------------------------------------


class Feed:
    """A user event into the outbox every 0.2 s, so the rates and quantiles have samples."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox, self.stopped = outbox, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            self.outbox.add()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(15)


@pytest.fixture(scope="module")
def prometheus(pipeline: Pipeline) -> Iterator[PrometheusServer]:
    if not prometheus_binary():
        service_missing("prometheus is not installed (Debian package prometheus)")
    broker = urlsplit(BROKER_METRICS).netloc
    scrape = [
        {"job_name": TARGET.relay_job, "static_configs": [{"targets": [f"127.0.0.1:{pipeline.relay_port}"]}]},
        {"job_name": TARGET.notifier_job,
         "static_configs": [{"targets": [f"127.0.0.1:{pipeline.consumer_port}"]}]},
        # this session's virtual host's series only, as broker_metrics() reads them
        {"job_name": TARGET.broker_job, "metrics_path": "/metrics/per-object",
         "static_configs": [{"targets": [broker]}],
         "metric_relabel_configs": [{"source_labels": ["vhost"], "regex": f"|{pipeline.vhost}",
                                     "action": "keep"}]},
    ]
    feed = Feed(pipeline.outbox)
    try:
        with PrometheusServer(scrape, rule_files()) as prom:
            def scrapes(job: str) -> float:
                found = prom.query(f'count_over_time(up{{job="{job}"}}[15s])')
                return float(found[0]["value"][1]) if found else 0

            # six scrapes of each (the panels' rate window), the broker's queue statistics (emitted
            # every 5 s), and events emailed while scraped
            prom.wait_for(lambda: min(scrapes(job) for job in (TARGET.relay_job, TARGET.notifier_job,
                                                                 TARGET.broker_job)) >= 6,
                          "six scrapes of each target")
            consumers = f'rabbitmq_queue_consumers{{queue="{TARGET.notifier_queue}"}} > 0'
            prom.wait_for(lambda: prom.query(consumers), "the broker's queue statistics")
            emailed = "increase(lookout_notifier_event_to_email_seconds_count[15s]) > 0"
            prom.wait_for(lambda: prom.query(emailed), "events emailed while scraped")
            yield prom
    finally:
        feed.stop()


def test_every_messaging_panel_has_data(prometheus: PrometheusServer):
    empty = []
    for query in dashboard_queries():
        if not any(s.name.startswith(PREFIXES) for s in selectors(query.expr)):
            continue
        result = prometheus.query_range(grafana_to_promql(query.expr), seconds=10)
        values = [float(v) for series in result for _, v in series["values"]]
        if all(math.isnan(v) for v in values):
            empty.append(f"{query.dashboard}: {query.panel} [{query.ref_id}]")
    assert empty == []


def test_only_the_waiting_dead_letter_is_an_alert_then_a_stopped_consumer_is_one(
        prometheus: PrometheusServer, pipeline: Pipeline):
    """Runs last: it stops the consumer. Before, the one poison message waits in the dead letters
    (dead-lettered before Prometheus started: not growing); every other messaging alert is quiet.
    Then, with events still coming and no consumer, the consumer-down expression becomes true."""
    rules = {a.name: a.rule(load_slo()) for a in messaging_alerts()}
    true = {name for name, rule in rules.items() if prometheus.query(rule["expr"])}
    assert true == {"LookoutNotifierDeadLetters"}
    stop(pipeline.consumer)
    down = rules["LookoutNotifierConsumerDown"]["expr"]
    prometheus.wait_for(lambda: prometheus.query(down), "LookoutNotifierConsumerDown's expression true")
    assert not prometheus.query(rules["LookoutOutboxBacklogStale"]["expr"])  # the relay still publishes

