"""The notifier's consumer against a real RabbitMQ, PostgreSQL or MariaDB, and SMTP server (aiosmtpd): every
template, one email per event however often it is delivered, retries, dead letters."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import SERVER_PARAMS, SERVERS
from flask_migrate import upgrade
from notifier_support import Publisher, SmtpServer, make_event, wait_for
from sqlalchemy import select

from app.notifier import create_app
from app.notifier.consumer import Consumer, retry_queue
from app.notifier.extensions import MIGRATIONS, db
from app.notifier.handling import Handler
from app.notifier.metrics import LATENCY_BUCKETS
from app.notifier.models import Notification
from app.platform.messaging import NOTIFIER_DEAD_LETTERS, NOTIFIER_QUEUE

DELAYS = (0.3, 0.6)


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=SERVER_PARAMS)
def notifier_db(request: pytest.FixtureRequest) -> str:
    """The notifier's database: every test here runs on PostgreSQL and on MySQL/MariaDB."""
    return str(request.getfixturevalue(SERVERS[request.param])())


@contextmanager
def running_notifier(notifier_db: str, amqp_url: str, smtp: SmtpServer, tracer_provider: Any = None,
                     **settings: str) -> Iterator[Any]:
    """The notifier's app with its consumer running on a thread, from empty queues and table."""
    app = create_app({"DATABASE_URL": notifier_db, "BROKER_URL": amqp_url, "SMTP_URL": smtp.url,
                      "RETRY_DELAYS_SECONDS": ",".join(map(str, DELAYS)), "MAIL_SERVICE_NAME": "Lookout",
                      "PREFETCH_COUNT": "5", **settings})
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        db.session.execute(db.delete(Notification))
        db.session.commit()
    smtp.catcher.messages.clear()
    smtp.catcher.refuse.clear()
    publisher = Publisher(amqp_url)
    publisher.purge(NOTIFIER_QUEUE, NOTIFIER_DEAD_LETTERS)
    metrics = app.extensions["lookout.telemetry"].metrics
    consumer = Consumer(app, Handler(app, metrics, tracer_provider))
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    app.publisher, app.consumer = publisher, consumer
    try:
        yield app
    finally:
        consumer.stop.set()
        thread.join(30)
        app.publisher.close()
        smtp.catcher.data_delay = 0.0
        if smtp.controller is None:
            smtp.start()
    assert not thread.is_alive()


@pytest.fixture
def notifier(notifier_db: str, amqp_url: str, smtp: SmtpServer) -> Iterator[Any]:
    with running_notifier(notifier_db, amqp_url, smtp) as app:
        yield app


def rows(app: Any) -> list[Notification]:
    with app.app_context():
        found = list(db.session.scalars(select(Notification).order_by(Notification.id)))
        db.session.remove()
        return found


def row_of(app: Any, event_id: str) -> Notification | None:
    with app.app_context():
        found = db.session.scalar(select(Notification).where(Notification.event_id == event_id))
        db.session.remove()
        return found


def sample(app: Any, name: str, labels: dict[str, str] | None = None) -> float:
    registry = app.extensions["lookout.telemetry"].metrics.registry
    return registry.get_sample_value(name, labels or {}) or 0.0


def test_each_template_is_sent_to_the_right_address(notifier, smtp):
    kinds = ("user.created", "user.password_changed", "user.email_changed", "user.role_changed",
             "user.deleted")
    events = [make_event(kind, user_id=11) for kind in kinds]
    for event in events:
        notifier.publisher.event(event)
    wait_for(lambda: len(smtp.catcher.messages) == 4 and all(
        (r := row_of(notifier, e["id"])) is not None and r.state in ("sent", "skipped") for e in events),
        what="four emails")
    by_to = {m["To"]: m for m in smtp.catcher.messages}
    assert set(by_to) == {"user11@example.com", "old11@example.com"}  # email change: to the OLD address
    subjects = sorted(m["Subject"] for m in smtp.catcher.messages)
    assert subjects == ["Welcome to Lookout", "Your Lookout password was changed",
                        "Your Lookout role was granted", "Your Lookout sign-in email was changed"]
    for message, event in zip(sorted(smtp.catcher.messages, key=lambda m: m["Message-ID"]),
                              sorted(events[:4], key=lambda e: f"<{e['id']}.notifier@lookout.localhost>"),
                              strict=True):
        assert message["Message-ID"] == f"<{event['id']}.notifier@lookout.localhost>"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "Lookout" in text and " UTC" in text and "contact your administrator" in text
        assert "<p>" in html and " UTC" in html and "contact your administrator" in html
    changed = next(m for m in smtp.catcher.messages if m["To"] == "old11@example.com")
    assert "new11@example.com" in changed.get_body(("plain",)).get_content()
    states = {r.event_type: r.state for r in rows(notifier)}
    assert states == {"user.created": "sent", "user.password_changed": "sent", "user.email_changed": "sent",
                      "user.role_changed": "sent", "user.deleted": "skipped"}
    assert sample(notifier, "lookout_notifier_emails_sent_total", {"template": "welcome"}) == 1
    assert sample(notifier, "lookout_notifier_event_to_email_seconds_count", {"template": "welcome"}) == 1


def test_html_escapes_what_the_user_chose(notifier, smtp):
    event = make_event("user.created", name="<script>alert(1)</script>")
    notifier.publisher.event(event)
    wait_for(lambda: len(smtp.catcher.messages) == 1, what="the email")
    html = smtp.catcher.messages[0].get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_redelivered_event_sends_no_second_email(notifier, smtp):
    event = make_event("user.password_changed")
    notifier.publisher.event(event)
    wait_for(lambda: (r := row_of(notifier, event["id"])) is not None and r.state == "sent", what="sent")
    notifier.publisher.event(event)  # the relay published it again (at-least-once)
    wait_for(lambda: sample(notifier, "lookout_notifier_duplicates_total") == 1, what="the duplicate")
    assert len(smtp.catcher.messages) == 1
    assert rows(notifier)[0].attempts == 1


def test_smtp_down_then_up_is_retried_and_delivered_once(notifier, smtp):
    smtp.stop()
    event = make_event("user.created", user_id=21)
    notifier.publisher.event(event)
    wait_for(lambda: (r := row_of(notifier, event["id"])) is not None and r.state == "retrying",
             what="a temporary failure")
    assert sample(notifier, "lookout_notifier_emails_failed_total",
                  {"template": "welcome", "kind": "temporary"}) >= 1
    smtp.start()
    wait_for(lambda: (r := row_of(notifier, event["id"])) is not None and r.state == "sent", what="delivery")
    assert [m["To"] for m in smtp.catcher.messages] == ["user21@example.com"]
    assert notifier.publisher.count(NOTIFIER_DEAD_LETTERS) == 0


def test_permanent_failure_and_poison_are_dead_lettered_while_the_rest_flow(notifier, smtp):
    smtp.catcher.refuse["gone@example.com"] = "550 5.1.1 No such user"
    bounced = make_event("user.created", user_id=31, email="gone@example.com")
    notifier.publisher.event(bounced)
    notifier.publisher.raw(b"{not json", "user.created", "not-an-event")
    wrong = make_event("user.email_changed", user_id=32)
    del wrong["data"]["old_email"]
    notifier.publisher.event(wrong)
    fine = make_event("user.created", user_id=33)
    notifier.publisher.event(fine)
    wait_for(lambda: notifier.publisher.count(NOTIFIER_DEAD_LETTERS) == 3, what="three dead letters")
    wait_for(lambda: (r := row_of(notifier, fine["id"])) is not None and r.state == "sent", what="the rest")
    assert [m["To"] for m in smtp.catcher.messages] == ["user33@example.com"]
    assert row_of(notifier, bounced["id"]).state == "dead"
    assert row_of(notifier, "not-an-event").state == "dead"
    assert row_of(notifier, wrong["id"]).state == "dead"
    reasons = sorted(str(notifier.publisher.get(NOTIFIER_DEAD_LETTERS)[1].headers["x-lookout-dead-reason"])
                     .split(":")[0] for _ in range(3))
    assert reasons == ["permanent", "poison", "poison"]
    assert sample(notifier, "lookout_notifier_dead_letters_total", {"reason": "poison"}) == 2
    assert sample(notifier, "lookout_notifier_dead_letters_total", {"reason": "permanent"}) == 1


def test_a_failure_that_never_clears_is_dead_lettered_after_every_attempt(notifier, smtp):
    smtp.catcher.refuse["busy@example.com"] = "451 4.3.0 Try again later"
    event = make_event("user.created", user_id=41, email="busy@example.com")
    notifier.publisher.event(event)
    wait_for(lambda: notifier.publisher.count(NOTIFIER_DEAD_LETTERS) == 1, what="the dead letter")
    _, props, body = notifier.publisher.get(NOTIFIER_DEAD_LETTERS)
    assert json.loads(body)["id"] == event["id"] and props.message_id == event["id"]
    assert props.headers["x-lookout-attempt"] == len(DELAYS) + 1
    assert str(props.headers["x-lookout-dead-reason"]).startswith("attempts")
    row = row_of(notifier, event["id"])
    assert row.state == "dead" and row.attempts == len(DELAYS) + 1 and "451" in row.last_error
    assert smtp.catcher.messages == []
    for delay in DELAYS:
        assert notifier.publisher.count(retry_queue(delay)) == 0
    # The server recovers and an operator replays the dead letter: delivered, once.
    smtp.catcher.refuse.clear()
    notifier.publisher.channel.basic_publish("", NOTIFIER_QUEUE, body, props)
    wait_for(lambda: row_of(notifier, event["id"]).state == "sent", what="the replayed event")
    assert [m["To"] for m in smtp.catcher.messages] == ["busy@example.com"]


def test_a_retried_event_stays_in_the_requests_trace(notifier_db, amqp_url, smtp, span_exporter):
    from opentelemetry.trace import SpanKind

    def trace_ids(spans: list[Any]) -> set[str]:
        return {format(s.context.trace_id, "032x") for s in spans}

    with running_notifier(notifier_db, amqp_url, smtp, span_exporter.provider) as app:
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        smtp.stop()
        event = make_event("user.created", user_id=51)
        app.publisher.event(event, {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "tracestate": ""})
        wait_for(lambda: (r := row_of(app, event["id"])) is not None and r.state == "retrying",
                 what="a retry")
        smtp.start()
        wait_for(lambda: (r := row_of(app, event["id"])) is not None and r.state == "sent", what="delivery")
    spans = span_exporter.get_finished_spans()
    processes = [s for s in spans if s.name == f"{NOTIFIER_QUEUE} process"]
    assert len(processes) == 2  # the failed attempt and the one after the retry queue
    assert trace_ids(processes) == {trace_id} and {s.kind for s in processes} == {SpanKind.CONSUMER}
    received = [s for s in spans if s.kind == SpanKind.CONSUMER and s not in processes]  # pika's
    assert len(received) == 2 and trace_ids(received) == {trace_id}
    republished = [s for s in spans if s.kind == SpanKind.PRODUCER]  # to the retry queue
    assert len(republished) == 1 and trace_ids(republished) == {trace_id}
    assert trace_ids([s for s in spans if s.name == "smtp send"]) == {trace_id}


def test_heartbeats_go_on_while_a_slow_email_is_sent(notifier_db, amqp_url, smtp):
    """The SMTP server takes 5 s to accept; with a 1 s heartbeat the broker would drop a connection
    whose thread sat in the send, and redeliver the event (a duplicate)."""
    smtp.catcher.data_delay = 5.0
    with running_notifier(notifier_db, amqp_url, smtp, BROKER_HEARTBEAT_SECONDS="1") as app:
        event = make_event("user.created", user_id=61)
        app.publisher.event(event)
        wait_for(lambda: (r := row_of(app, event["id"])) is not None and r.state == "sent", timeout=30,
                 what="the slow email")
        wait_for(lambda: app.publisher.count(NOTIFIER_QUEUE) == 0, what="the acknowledgement")
        assert sample(app, "lookout_notifier_duplicates_total") == 0
        assert sample(app, "lookout_notifier_broker_connected") == 1
    assert len(smtp.catcher.messages) == 1 and row_of(app, event["id"]).attempts == 1


def test_the_consumer_reconnects_after_the_broker_closes_its_connection(notifier_db, amqp_url, smtp):
    import shutil
    import subprocess
    from urllib.parse import unquote, urlsplit

    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl is not on this machine (it runs beside the broker)")
    vhost = unquote(urlsplit(amqp_url).path[1:])
    with running_notifier(notifier_db, amqp_url, smtp) as app:
        wait_for(lambda: sample(app, "lookout_notifier_broker_connected") == 1, what="the connection")
        # This session's virtual host only: other sessions on the broker keep theirs.
        subprocess.run([ctl, "close_all_connections", "-p", vhost, "closed by a test"], check=True,
                       capture_output=True, timeout=60)
        wait_for(lambda: sample(app, "lookout_notifier_broker_connected") == 0, what="the loss")
        wait_for(lambda: sample(app, "lookout_notifier_broker_connected") == 1, timeout=30,
                 what="the reconnection")
        app.publisher = Publisher(amqp_url)  # the test's own connection was closed too
        event = make_event("user.password_changed", user_id=62)
        app.publisher.event(event)
        wait_for(lambda: (r := row_of(app, event["id"])) is not None and r.state == "sent", what="delivery")


def test_the_latency_buckets_hold_the_slo_threshold():
    from dashboards import load_slo

    assert load_slo().notifier_threshold_seconds in LATENCY_BUCKETS
