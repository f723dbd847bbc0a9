"""The outbox relay against a real RabbitMQ (``amqp_url``) and real PostgreSQL: order per user with
several relays, no row published twice at once, rows committed out of id order, an unreachable
broker, an unroutable event, the retention cleanup, the trace, and SIGTERM."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
import requests
from conftest import SERVER_PARAMS
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.orm import Session

from app import create_app
from app.extensions import db
from app.models import OutboxEvent
from app.platform.messaging import NOTIFIER_QUEUE, declare_topology
from app.relay import Relay, claim_statement
from loadtests.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 30.0  # seconds any wait in these tests may take

# Two sessions at once, or several relays: PostgreSQL and MySQL/MariaDB (SKIP LOCKED, MariaDB
# 10.6+, MySQL 8.0+); SQLite runs one relay.
SERVERS_ONLY = pytest.mark.parametrize("database_url", SERVER_PARAMS, indirect=True)


def wait_for(check: Any, what: str, timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def queue(amqp_url: str) -> Any:
    """The notifier's queue, empty before and after the test; ``drain()`` returns its messages."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    declare_topology(channel)
    channel.queue_purge(NOTIFIER_QUEUE)

    def drain() -> list[tuple[Any, dict[str, Any]]]:
        got = []
        while True:
            method, properties, body = channel.basic_get(NOTIFIER_QUEUE, auto_ack=True)
            if method is None:
                return got
            got.append((properties, json.loads(body)))

    yield drain
    channel.queue_purge(NOTIFIER_QUEUE)
    connection.close()


def add_events(session: Session, *users: int, type_: str = "user.password_changed",
               **extra: Any) -> list[int]:
    rows = [OutboxEvent(type=type_, user_id=user, payload={"email": f"u{user}@example.com", "name": "U"},
                        **extra) for user in users]
    session.add_all(rows)
    session.flush()
    return [row.seq for row in rows]


def unpublished() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(OutboxEvent)
                             .where(OutboxEvent.published_at.is_(None)))


def test_the_claim_locks_the_outbox_alone_with_skip_locked():
    sql = str(claim_statement(datetime.now(UTC), 10).compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE OF outbox_events SKIP LOCKED" in sql and "LIMIT" in sql
    assert "JOIN" not in sql.upper()
    # MariaDB has no FOR UPDATE OF; the statement names one table, so the lock is the same.
    sql = str(claim_statement(datetime.now(UTC), 10).compile(dialect=mysql.dialect(is_mariadb=True)))
    assert sql.rstrip().endswith("FOR UPDATE SKIP LOCKED") and "JOIN" not in sql.upper()


def test_publishes_each_row_once_with_its_event_and_marks_it(app, outbox, queue, amqp_url):
    seqs = add_events(db.session, 1, 2, 1)
    db.session.commit()
    relay = Relay(db.engine, amqp_url)
    try:
        assert relay.relay_once() == 2  # the heads of users 1 and 2
        assert relay.relay_once() == 1  # then user 1's second
        assert relay.relay_once() == 0
    finally:
        relay.disconnect()
    messages = queue()
    assert [m["user_id"] for _, m in messages] == [1, 2, 1]
    rows = {r.seq: r for r in db.session.scalars(select(OutboxEvent))}
    for properties, message in messages:
        row = next(r for r in rows.values() if str(r.id) == message["id"])
        assert properties.message_id == message["id"] and properties.type == "user.password_changed"
        assert properties.delivery_mode == 2 and properties.content_type == "application/json"
        assert message["version"] == 1 and message["occurred_at"].endswith("Z")
        assert message["data"] == {"email": f"u{row.user_id}@example.com", "name": "U"}
        assert row.published_at is not None and row.attempts == 1
    assert sorted(rows) == sorted(seqs) and unpublished() == 0


@SERVERS_ONLY
def test_a_row_committed_after_a_later_one_is_still_published(app, outbox, queue, amqp_url):
    """Two real sessions: A's row gets the lower seq but commits after B's (PITFALLS 1.1)."""
    relay = Relay(db.engine, amqp_url)
    try:
        with Session(db.engine) as a, Session(db.engine) as b:
            (first,) = add_events(a, 10)  # flushed, transaction open
            (second,) = add_events(b, 11)
            b.commit()
            assert first < second
            assert relay.relay_once() == 1
            a.commit()
        assert relay.relay_once() == 1
        assert relay.relay_once() == 0
    finally:
        relay.disconnect()
    assert sorted(m["user_id"] for _, m in queue()) == [10, 11]


class SlowRelay(Relay):
    """Records when each row's publish starts and ends, and takes a random moment over it."""

    def __init__(self, *args: Any, log: list[tuple[str, float, float]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    def publish(self, channel: Any, event: Any) -> None:
        start = time.monotonic()
        time.sleep(random.uniform(0, 0.004))  # nosec B311 # jitter, not a secret
        super().publish(channel, event)
        self.log.append((event.id, start, time.monotonic()))


@SERVERS_ONLY
def test_several_relays_keep_each_users_order_and_never_publish_a_row_twice_at_once(
        app, outbox, queue, amqp_url):
    users, per_user = 8, 15
    for _ in range(per_user):
        add_events(db.session, *range(100, 100 + users))
    db.session.commit()
    expected: dict[int, list[str]] = defaultdict(list)
    for row in db.session.scalars(select(OutboxEvent).order_by(OutboxEvent.seq)):
        expected[row.user_id].append(str(row.id))
    log: list[tuple[str, float, float]] = []
    relays = [SlowRelay(db.engine, amqp_url, batch_size=3, poll_seconds=0.01, log=log) for _ in range(3)]
    threads = [threading.Thread(target=r.run, kwargs={"cleanup_every": 3600}) for r in relays]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: unpublished() == 0, "every row published")
    finally:
        for relay in relays:
            relay.stop.set()
        for thread in threads:
            thread.join(DEADLINE)
    messages = queue()
    got: dict[int, list[str]] = defaultdict(list)
    for _, message in messages:
        got[message["user_id"]].append(message["id"])
    assert got == expected  # each user's events in order, each once
    by_id: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for event_id, start, end in log:
        by_id[event_id].append((start, end))
    assert all(len(spans) == 1 for spans in by_id.values())
    assert not [r for r in relays if r.failures]


def test_an_unreachable_broker_keeps_the_rows_and_they_drain_when_it_answers(app, outbox, queue, amqp_url):
    add_events(db.session, 20, 21, 20)
    db.session.commit()
    closed = pika.URLParameters(amqp_url)
    dead_url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    relay = Relay(db.engine, dead_url, poll_seconds=0.05, backoff_max=0.2, broker_timeout=1)
    thread = threading.Thread(target=relay.run, kwargs={"cleanup_every": 3600})
    thread.start()
    try:
        wait_for(lambda: relay.failures >= 3, "three failed connection attempts")
        assert unpublished() == 3
        assert relay.metrics.registry.get_sample_value("lookout_outbox_backlog") == 3
        assert relay.metrics.registry.get_sample_value("lookout_relay_broker_connected") == 0
        assert relay.metrics.registry.get_sample_value("lookout_outbox_oldest_unpublished_age_seconds") > 0
        assert closed.host  # the real broker is there all along; the relay looks at another port
        relay.broker_url = amqp_url  # the broker "returns"
        wait_for(lambda: unpublished() == 0, "the backlog drained")
        wait_for(lambda: relay.metrics.registry.get_sample_value("lookout_outbox_backlog") == 0,
                 "the backlog gauge at 0")
    finally:
        relay.stop.set()
        thread.join(DEADLINE)
    assert not thread.is_alive()
    assert [m["user_id"] for _, m in queue()] == [20, 21, 20]
    assert relay.metrics.registry.get_sample_value(
        "lookout_outbox_published_total", {"type": "user.password_changed"}) == 3


def test_an_unroutable_event_stays_in_the_outbox_and_holds_back_only_its_user(app, outbox, queue, amqp_url):
    """mandatory=True with confirms: a message no queue takes is an error, not a silent ack."""
    add_events(db.session, 30, type_="account.nobody-listens")
    add_events(db.session, 30, 31)
    db.session.commit()
    relay = Relay(db.engine, amqp_url, backoff_max=60)
    try:
        published = 0
        for _ in range(4):
            try:
                published += relay.relay_once()
            except pika.exceptions.UnroutableError:
                pass
    finally:
        relay.disconnect()
    assert [m["user_id"] for _, m in queue()] == [31]
    stuck = db.session.scalars(select(OutboxEvent).where(OutboxEvent.user_id == 30)
                               .order_by(OutboxEvent.seq)).all()
    assert stuck[0].published_at is None and stuck[0].attempts == 1 and "Unroutable" in stuck[0].last_error
    assert stuck[1].published_at is None and stuck[1].attempts == 0  # waits behind its user's head
    assert relay.metrics.registry.get_sample_value(
        "lookout_outbox_publish_failures_total", {"reason": "UnroutableError"}) == 1


def test_cleanup_deletes_old_published_rows_in_batches_only(app, outbox, amqp_url):
    old = datetime.now(UTC) - timedelta(days=30)
    add_events(db.session, *range(40, 45), published_at=old)
    add_events(db.session, 46, published_at=datetime.now(UTC))  # published, recent
    add_events(db.session, 47)  # unpublished
    db.session.commit()
    relay = Relay(db.engine, amqp_url, retention=timedelta(days=7), cleanup_batch=2)
    assert relay.cleanup() == 5
    db.session.expire_all()
    assert sorted(db.session.scalars(select(OutboxEvent.user_id))) == [46, 47]
    assert relay.metrics.registry.get_sample_value("lookout_outbox_cleaned_total") == 5


def test_each_publish_continues_its_own_requests_trace(traced_app, span_exporter, queue, amqp_url):
    """Two requests' rows published in one round: each message and PRODUCER span carries its own
    request's trace (captured at insert, not read at publish time); a row without a trace context
    (a backfill) still publishes, as a trace of its own."""
    from opentelemetry.trace import SpanKind

    from app.models import Role, User
    from app.outbox import record_event

    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    tracer = span_exporter.provider.get_tracer("test")
    requests_ = []
    for n in range(2):
        with tracer.start_as_current_span("POST /api/v1/users") as request_span:
            user = User(email=f"t{n}{uuid.uuid4().hex[:6]}@example.com", name="T", role=Role.USER,
                        password_hash="x")
            db.session.add(user)
            record_event(user, "user.created", {"email": user.email, "name": "T", "role": "user"})
            db.session.commit()
        requests_.append((user.id, request_span.get_span_context()))
    add_events(db.session, 99)  # no request around it: no traceparent
    db.session.commit()
    relay = Relay(db.engine, amqp_url, tracer=span_exporter.provider.get_tracer("lookout.relay"))
    with tracer.start_as_current_span("an unrelated span around the relay"):
        try:
            assert relay.relay_once() == 3
        finally:
            relay.disconnect()
            db.session.execute(delete(OutboxEvent))
            db.session.commit()
    messages = {m["user_id"]: (p, m) for p, m in queue()}
    producers = {s.attributes["messaging.message.id"]: s for s in span_exporter.get_finished_spans()
                 if s.kind == SpanKind.PRODUCER}
    for user_id, request in requests_:
        properties, message = messages[user_id]
        trace_id = format(request.trace_id, "032x")
        assert properties.headers["traceparent"].split("-")[1] == trace_id
        producer = producers[message["id"]]
        assert producer.context.trace_id == request.trace_id and producer.parent.span_id == request.span_id
        assert producer.attributes["messaging.system"] == "rabbitmq"
        assert producer.attributes["messaging.destination.name"] == "lookout.events"
    properties, message = messages[99]
    assert "traceparent" not in (properties.headers or {})
    assert producers[message["id"]].parent is None  # a root of its own, not the relay loop's span


@SERVERS_ONLY
def test_a_leased_row_is_left_alone_until_its_lease_ends(app, outbox, queue, amqp_url):
    """A relay that claimed a row and died holds it only until its lease ends; meanwhile another
    relay takes neither it nor the rest of its user."""
    add_events(db.session, 60, 60, 61)
    db.session.commit()
    dead, alive = Relay(db.engine, amqp_url), Relay(db.engine, amqp_url)
    try:
        claimed = dead.claim()  # then "dies": never publishes
        assert sorted(e.user_id for e in claimed) == [60, 61]
        assert alive.relay_once() == 0
        db.session.execute(update(OutboxEvent).where(OutboxEvent.published_at.is_(None))
                           .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))  # the lease ends
        db.session.commit()
        assert alive.relay_once() == 2 and alive.relay_once() == 1
    finally:
        dead.disconnect()
        alive.disconnect()
    assert [m["user_id"] for _, m in queue()] == [60, 61, 60]


def test_the_relay_command_serves_metrics_publishes_and_stops_on_sigterm(sqlite_url, queue, amqp_url,
                                                                          tmp_path):
    app = create_app({"DATABASE_URL": sqlite_url})
    with app.app_context():
        db.session.execute(delete(OutboxEvent))
        add_events(db.session, 50)
        db.session.commit()
    port = free_port()
    env = {**os.environ, "LOOKOUT_ENV": "development", "DATABASE_URL": sqlite_url, "BROKER_URL": amqp_url,
           "RELAY_METRICS_PORT": str(port), "RELAY_METRICS_ADDRESS": "127.0.0.1", "OTEL_SDK_DISABLED": "true",
           "LOG_LEVEL": "INFO"}
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "events", "relay"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        def metrics() -> str | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except requests.ConnectionError:
                assert process.poll() is None, log.read_text()
                return None

        published = 'lookout_outbox_published_total{type="user.password_changed"} 1.0'
        wait_for(lambda: (m := metrics()) and published in m, "the row published, as the metrics say")
        assert "lookout_outbox_backlog 0.0" in metrics()
        process.send_signal(signal.SIGTERM)
        assert process.wait(DEADLINE) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(DEADLINE)
        with app.app_context():
            db.session.execute(delete(OutboxEvent))
            db.session.commit()
            db.engine.dispose()
    assert "relay stopped" in log.read_text()
    assert [m["user_id"] for _, m in queue()] == [50]


def test_without_a_broker_url_the_relay_command_says_so(app):
    result = app.test_cli_runner().invoke(args=["events", "relay"])
    assert result.exit_code != 0 and "BROKER_URL is not set" in result.output


def test_a_lease_shorter_than_a_publish_may_take_is_refused():
    from app.config import ConfigError, load_config

    refusal = "RELAY_LEASE_SECONDS must be at least 3 times BROKER_TIMEOUT_SECONDS"
    with pytest.raises(ConfigError, match=refusal):
        load_config({"LOOKOUT_ENV": "development", "RELAY_LEASE_SECONDS": "10",
                     "BROKER_TIMEOUT_SECONDS": "5"})
    assert load_config({"LOOKOUT_ENV": "development", "RELAY_LEASE_SECONDS": "15",
                        "BROKER_TIMEOUT_SECONDS": "5"}).RELAY_LEASE_SECONDS == 15
