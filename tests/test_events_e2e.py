"""One trace from the request to the email, with every part a real process: gunicorn serving the
users API, the outbox relay, the notifier's consumer, RabbitMQ, an SMTP server (aiosmtpd) and the
in-test OTLP receiver. POST /api/v1/users writes the user and its event in one transaction; the
relay publishes the event with the request's trace context; the notifier emails it. The request's
trace id is on the relay's publish span, the notifier's process and SMTP spans, and on log lines
of both services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import PASSWORD, add_admin, migrate
from flask_migrate import upgrade
from notifier_support import Publisher, SmtpServer, wait_for
from otlp import OTLPReceiver, ReceivedSpan

from app.notifier import create_app as create_notifier
from app.notifier.extensions import MIGRATIONS
from app.platform.messaging import NOTIFIER_DEAD_LETTERS, NOTIFIER_QUEUE
from loadtests.harness import GunicornServer

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """A flask command as its own process, its output in a file, stopped by PID."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ready: bytes) -> None:
        self.log = log
        self.out = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", *args], cwd=ROOT, env=env, stdout=self.out,
            stderr=subprocess.STDOUT)
        wait_for(lambda: ready in log.read_bytes() or self.process.poll() is not None, timeout=60,
                 what=f"{args} to start")
        assert self.process.poll() is None, log.read_text()

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.log.read_text().splitlines():
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self.out.close()


@pytest.fixture
def stack(new_database: Any, amqp_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    users_db, notifier_db = new_database(), new_database()  # PostgreSQL, then MySQL/MariaDB
    migrate(users_db)
    add_admin(users_db)
    with create_notifier({"DATABASE_URL": notifier_db}).app_context():
        upgrade(directory=MIGRATIONS)
    publisher = Publisher(amqp_url)  # declares the topology; starts from empty queues
    publisher.purge(NOTIFIER_QUEUE, NOTIFIER_DEAD_LETTERS)
    publisher.close()
    smtp = SmtpServer()
    smtp.start()
    with OTLPReceiver() as receiver:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                "OTEL_BSP_SCHEDULE_DELAY": "200"}
        base = {**os.environ, "LOOKOUT_ENV": "testing", **otel}
        base.pop("PROMETHEUS_MULTIPROC_DIR", None)
        relay_env = {**base, "DATABASE_URL": users_db, "BROKER_URL": amqp_url, "RELAY_POLL_SECONDS": "0.2",
                     "SERVICE_NAME": "lookout-relay"}
        notifier_env = {**base, "DATABASE_URL": notifier_db, "BROKER_URL": amqp_url, "SMTP_URL": smtp.url,
                        "SERVICE_NAME": "lookout-notifier", "CONSUMER_METRICS_PORT": "0"}
        processes: list[Process] = []
        try:
            with GunicornServer({"LOOKOUT_ENV": "testing", "DATABASE_URL": users_db, **otel}) as api:
                processes.append(Process(["--app", "app", "events", "relay"], relay_env,
                                         tmp_path / "relay.log", b"relay"))
                processes.append(Process(["--app", "app.notifier:create_app", "notifier", "consume"],
                                         notifier_env, tmp_path / "consumer.log",
                                         b"consuming notifier.user-events"))
                yield {"api": api, "relay": processes[0], "consumer": processes[1], "smtp": smtp,
                       "receiver": receiver}
        finally:
            for process in processes:
                process.stop()
            smtp.stop()


def all_spans(receiver: OTLPReceiver) -> list[ReceivedSpan]:
    with receiver._lock:
        return list(receiver.spans)


def test_one_trace_from_the_request_to_the_smtp_send(stack):
    api, smtp, receiver = stack["api"], stack["smtp"], stack["receiver"]
    token = requests.post(f"{api.url}/api/v1/auth/token", timeout=10,
                          json={"email": "admin@example.com", "password": PASSWORD}).json()["access_token"]
    created = requests.post(f"{api.url}/api/v1/users", headers={"Authorization": f"Bearer {token}"},
                            timeout=10, json={"email": "grace@example.com", "name": "Grace",
                                              "password": "a long enough password"})
    assert created.status_code == 201, created.text

    wait_for(lambda: len(smtp.catcher.messages) == 1, timeout=60, what="the welcome email")
    message = smtp.catcher.messages[0]
    assert message["To"] == "grace@example.com" and message["Subject"] == "Welcome to Lookout"

    def request_span() -> ReceivedSpan | None:
        return next((s for s in receiver.server_spans() if s.kind == "SPAN_KIND_SERVER"
                     and s.attributes.get("http.request.method") == "POST"
                     and s.attributes.get("http.route") == "/api/v1/users"), None)

    post = wait_for(request_span, timeout=30, what="the POST's span")
    trace_id = post.trace_id

    def in_trace() -> list[ReceivedSpan]:
        return [s for s in all_spans(receiver) if s.trace_id == trace_id]

    def complete() -> bool:
        names = {(s.resource.get("service.name"), s.kind, s.name) for s in in_trace()}
        return (any(kind == "SPAN_KIND_PRODUCER" for _, kind, _ in names)
                and any(name == "smtp send" for *_, name in names)
                and any(name == f"{NOTIFIER_QUEUE} process" for *_, name in names))

    wait_for(complete, timeout=30, what="the relay's and the notifier's spans in the request's trace")
    spans = in_trace()
    producer = next(s for s in spans if s.kind == "SPAN_KIND_PRODUCER")
    process = next(s for s in spans if s.name == f"{NOTIFIER_QUEUE} process")
    send = next(s for s in spans if s.name == "smtp send")
    assert process.kind == "SPAN_KIND_CONSUMER" and send.kind == "SPAN_KIND_CLIENT"
    assert send.parent_span_id == process.span_id
    assert process.resource["service.name"] == "lookout-notifier"
    assert process.attributes["messaging.system"] == "rabbitmq"
    assert producer.resource["service.name"] != "lookout-notifier"

    # The log lines may reach their files after the email and the spans: wait for them.
    def api_logged() -> bool:
        lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
        return any(line.get("trace_id") == trace_id and line.get("logger") == "lookout.access"
                   for line in lines)

    def consumer_logged() -> bool:
        return any(line.get("trace_id") == trace_id and "email sent" in line.get("message", "")
                   for line in stack["consumer"].lines())

    wait_for(api_logged, timeout=30, what="the API's access log line with the request's trace id")
    wait_for(consumer_logged, timeout=30, what="the consumer's 'email sent' line with the trace id")
