"""What the consumer does with one delivered event, exactly once in effect.

The row of the event id (models.py) is the deduplication key and the state machine: the row is
written ``sending`` before the SMTP conversation and ``sent`` after the server's acceptance, both
committed, and only then is the delivery acknowledged. A redelivered event whose row is final is
acknowledged without a second email; one left ``sending`` by a crash is sent again with the same
Message-ID (the crash came before our record of the acceptance, almost always before the
acceptance itself).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..platform.messaging import EVENT_TYPES, EVENTS_EXCHANGE, NOTIFIER_QUEUE
from . import mailer
from .extensions import db
from .metrics import NotifierMetrics
from .models import DONE_STATES, Notification
from .templates import Email, parse_time, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What to do with the delivery: ``ack``, ``retry`` (publish to the next retry queue, then
    ack) or ``dead`` (publish to the dead-letter queue, then ack)."""

    action: str
    reason: str = ""


ACK = Outcome("ack")


class Poison(ValueError):
    """The message cannot be an event of schema version 1."""


def parse(body: bytes, message_id: str | None) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError:
        raise Poison("the body is not JSON") from None
    if not isinstance(event, dict) or event.get("version") != 1:
        raise Poison("not an event of schema version 1")
    if event.get("type") not in EVENT_TYPES or not isinstance(event.get("data"), dict):
        raise Poison(f"unknown event type {event.get('type')!r}")
    try:
        uuid.UUID(str(event.get("id")))
        parse_time(str(event.get("occurred_at")))
        int(event["user_id"])
    except (ValueError, KeyError, TypeError):
        raise Poison("the id, occurred_at or user_id is missing or malformed") from None
    if message_id is not None and message_id != event["id"]:
        raise Poison("the message_id is not the event's id")
    return event


class Handler:
    """Handles deliveries for one app (its settings, database and metrics); call in its context."""

    def __init__(self, app: Flask, metrics: NotifierMetrics | None, tracer_provider: Any = None) -> None:
        self.app = app
        self.settings = app.extensions["notifier.settings"]
        self.metrics = metrics
        self.tracer_provider = tracer_provider
        self.tracer = trace.get_tracer("app.notifier", tracer_provider=tracer_provider)
        self.max_attempts = len(self.settings.RETRY_DELAYS_SECONDS) + 1

    def handle(self, body: bytes, message_id: str | None, headers: dict[str, Any] | None,
               attempt: int) -> Outcome:
        """Process one delivery (attempt ``attempt``, counted from 1) and say how to settle it."""
        carrier = {k: v for k, v in (headers or {}).items() if isinstance(v, str)}
        parent = propagate.extract(carrier)
        # The pika instrumentation's CONSUMER span covers only the delivery callback (which queues
        # the delivery for this thread) and ends with it; the processing gets a span of its own,
        # parented on the creation context the message carries, as the relay's publish is.
        with self.tracer.start_as_current_span(
                f"{NOTIFIER_QUEUE} process", context=parent, kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "rabbitmq", "messaging.operation.type": "process",
                            "messaging.destination.name": EVENTS_EXCHANGE,
                            "messaging.consumer.group.name": NOTIFIER_QUEUE,
                            "messaging.message.id": message_id or "",
                            "lookout.attempt": attempt}) as span:
            try:
                outcome = self._handle(body, message_id, attempt)
            except Exception as exc:  # a bug or an outage: retried, then dead-lettered
                log.exception("event %s: handling failed", message_id)
                span.set_status(Status(StatusCode.ERROR, exc.__class__.__name__))
                db.session.rollback()
                outcome = self._retry_or_dead(None, f"{exc.__class__.__name__}: {exc}", attempt)
            span.set_attribute("lookout.outcome", outcome.action)
            return outcome

    def _handle(self, body: bytes, message_id: str | None, attempt: int) -> Outcome:
        try:
            event = parse(body, message_id)
        except Poison as exc:
            log.warning("poison message %s: %s", message_id, exc)
            self._record_poison(message_id, str(exc))
            return self._dead("poison", str(exc))
        event_id = event["id"]
        row = db.session.scalar(select(Notification).where(Notification.event_id == event_id))
        if row is not None and row.state in DONE_STATES:
            log.info("event %s already %s: acknowledged without a second email", event_id, row.state)
            if self.metrics is not None:
                self.metrics.duplicates.inc()
            return ACK
        try:
            email = render(event, self.settings.MAIL_SERVICE_NAME, self.settings.MAIL_SUPPORT)
        except (KeyError, ValueError, TypeError) as exc:
            reason = f"the event's data does not fit its type: {exc!r}"
            self._record_poison(event_id, reason, event)
            return self._dead("poison", reason)
        if row is None:
            row = self._insert(event, email)
            if row.state in DONE_STATES:
                return ACK
        if email is None:
            return ACK
        return self._send(row, event, email, attempt)

    def _insert(self, event: dict[str, Any], email: Email | None) -> Notification:
        row = Notification(event_id=event["id"], event_type=event["type"], user_id=int(event["user_id"]),
                           template=email.template if email else None,
                           recipient=email.recipient if email else None,
                           state="pending" if email else "skipped", attempts=0,
                           message_id=mailer.message_id(event["id"], self.settings.MAIL_FROM),
                           occurred_at=parse_time(event["occurred_at"]))
        db.session.add(row)
        try:
            db.session.commit()
        except IntegrityError:  # another consumer recorded it first: its row decides
            db.session.rollback()
            existing = db.session.scalar(select(Notification).where(Notification.event_id == event["id"]))
            assert existing is not None  # nosec B101 # the unique key just said so
            return existing
        return row

    def _send(self, row: Notification, event: dict[str, Any], email: Email, attempt: int) -> Outcome:
        if row.state == "sending":
            log.warning("event %s: a previous attempt stopped mid-send; sending again with the same "
                        "Message-ID", row.event_id)
        row.state, row.attempts = "sending", row.attempts + 1
        db.session.commit()
        message = mailer.build(email, self.settings, row.message_id or mailer.message_id(
            row.event_id, self.settings.MAIL_FROM))
        with self.tracer.start_as_current_span(
                "smtp send", kind=SpanKind.CLIENT,
                attributes={"server.address": self.settings.smtp_host, "server.port": self.settings.smtp_port,
                            "lookout.email.template": email.template}) as span:
            try:
                mailer.send(message, self.settings)
            except mailer.TemporaryFailure as exc:
                span.set_status(Status(StatusCode.ERROR, "temporary"))
                self._count_failure(email.template, "temporary")
                log.warning("event %s: temporary SMTP failure (attempt %d): %s", row.event_id, attempt, exc)
                return self._retry_or_dead(row, str(exc), attempt)
            except mailer.PermanentFailure as exc:
                span.set_status(Status(StatusCode.ERROR, "permanent"))
                self._count_failure(email.template, "permanent")
                log.error("event %s: permanent SMTP failure: %s", row.event_id, exc)
                row.state, row.last_error = "dead", str(exc)
                db.session.commit()
                return self._dead("permanent", str(exc))
        accepted = datetime.now(UTC)
        row.state, row.sent_at, row.last_error = "sent", accepted, None
        db.session.commit()
        if self.metrics is not None:
            self.metrics.sent.labels(email.template).inc()
            latency = (accepted - parse_time(event["occurred_at"])).total_seconds()
            self.metrics.latency.labels(email.template).observe(max(latency, 0.0))
        log.info("event %s: %s email sent", row.event_id, email.template)
        return ACK

    def _retry_or_dead(self, row: Notification | None, reason: str, attempt: int) -> Outcome:
        final = attempt >= self.max_attempts
        if row is not None:
            row.state, row.last_error = ("dead" if final else "retrying"), reason[:2000]
            db.session.commit()
        if final:
            return self._dead("attempts", f"{attempt} attempts; last: {reason}")
        return Outcome("retry", reason)

    def _dead(self, reason: str, detail: str) -> Outcome:
        if self.metrics is not None:
            self.metrics.dead_letters.labels(reason).inc()
        return Outcome("dead", f"{reason}: {detail}"[:500])

    def _count_failure(self, template: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.failed.labels(template, kind).inc()

    def _record_poison(self, message_id: str | None, reason: str,
                       event: dict[str, Any] | None = None) -> None:
        """Keep a visible row of what went to the dead letters (when it can be keyed)."""
        key = message_id or f"poison-{uuid.uuid4()}"
        if db.session.scalar(select(Notification.id).where(Notification.event_id == key)) is not None:
            return
        user_id = event.get("user_id") if event else None
        event_type = str((event or {}).get("type", "unknown"))[:64]
        db.session.add(Notification(event_id=key[:64], event_type=event_type,
                                    user_id=user_id if isinstance(user_id, int) else None,
                                    state="dead", attempts=1, last_error=reason[:2000]))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
