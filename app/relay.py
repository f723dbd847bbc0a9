"""The outbox relay: publishes the outbox's rows (app/outbox.py) to RabbitMQ, in order per user.

Run it as its own process, one or several (pods share the work):

    flask --app app events relay        # BROKER_URL must be set; SIGTERM/SIGINT stop it cleanly

One round:
  1. Claim, in a short transaction: the oldest unpublished row of each user (only the head, so a
     user's events leave in order however many relays run), not leased by another relay,
     ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite: run one relay). The claimed rows get a
     lease (``claimed_until``) and the transaction commits at once: no transaction stays open
     while the broker is called (a hung broker would otherwise hold back vacuum).
  2. Publish each row OUTSIDE any transaction: publisher confirms, ``mandatory=True`` (an
     unroutable message is an error, not a silent ack), the connection's
     ``blocked_connection_timeout`` bounding a broker that blocks publishers. The stored trace
     context goes in the headers, and the PRODUCER span continues that trace.
  3. Mark the published rows; a failed row keeps its lease for a backoff (its user waits, others
     do not) and records ``last_error``.

Publish-then-mark is at-least-once: a crash between the two publishes the row again, with the
same ``message_id`` (the event id), which the notifier deduplicates. A broker that is down is
retried with capped exponential backoff; the API never waits for it, the rows wait in the
outbox and drain when it returns. Published rows older than OUTBOX_RETENTION_HOURS are deleted
in batches. Metrics on RELAY_METRICS_PORT: backlog, oldest unpublished age, published and
failed counts, broker connection state.

With CACHE_URL set, the relay also forgets the cached records (app/cache.py) of the users whose
events it has just published. The write path forgets them after its commit already; this second
invalidation corrects a record that the writer's own call failed to remove (Redis unreachable from
that process only), so a stale record, or an old password's token version, lives for the relay's
latency rather than CACHE_TTL_SECONDS. An invalidation that fails is owed: kept and tried again
on later rounds (at most one try per CACHE_RETRY_SECONDS, so a dead Redis costs publishing one
bounded call per interval), counted in ``lookout_relay_cache_invalidation_failures`` with the
owed users in ``lookout_relay_cache_owed``. A user owed longer than CACHE_TTL_SECONDS is dropped:
any record cached before its write has expired by then.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from .cache import UserCache
from .models import OutboxEvent
from .platform.messaging import EVENTS_EXCHANGE, declare_topology

if TYPE_CHECKING:
    import pika
    from pika.adapters.blocking_connection import BlockingChannel

log = logging.getLogger("lookout.relay")
events_cli = AppGroup("events", help="The user events: the outbox relay.")


def utcnow() -> datetime:
    return datetime.now(UTC)


def claim_statement(now: datetime, limit: int) -> Select[Any]:
    """The claim: each user's oldest unpublished row, unleased, locked with SKIP LOCKED.

    The heads come from an uncorrelated subquery (no JOIN: PostgreSQL refuses FOR UPDATE on the
    nullable side of an outer join, and SQLAlchemy documents FOR UPDATE with eager loads as
    unsupported). A head leased by another relay is skipped, and so is the rest of its user:
    the user's next row is not a head until the first is published.
    """
    heads = (select(func.min(OutboxEvent.seq)).where(OutboxEvent.published_at.is_(None))
             .group_by(OutboxEvent.user_id))
    return (select(OutboxEvent)
            .where(OutboxEvent.seq.in_(heads), OutboxEvent.published_at.is_(None),
                   or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now))
            .order_by(OutboxEvent.seq).limit(limit)
            .with_for_update(skip_locked=True, of=OutboxEvent))


@dataclass(frozen=True)
class Claimed:
    """What a publish needs, read inside the claim so no ORM object outlives its session."""

    seq: int
    id: str
    type: str
    user_id: int
    occurred_at: datetime
    payload: dict[str, Any]
    traceparent: str | None
    tracestate: str | None

    def body(self) -> bytes:
        """The ``Event`` of app/platform/messaging.py, schema version 1."""
        occurred = self.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return json.dumps({"version": 1, "id": self.id, "type": self.type, "occurred_at": occurred,
                           "user_id": self.user_id, "data": self.payload}).encode()

    def headers(self) -> dict[str, str]:
        carrier = {"traceparent": self.traceparent or "", "tracestate": self.tracestate or ""}
        return {k: v for k, v in carrier.items() if v}


class RelayMetrics:
    """The relay's own registry, served on its own port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.backlog = Gauge("lookout_outbox_backlog", "Outbox rows not yet published.",
                             registry=self.registry)
        self.oldest_age = Gauge("lookout_outbox_oldest_unpublished_age_seconds",
                                "Age of the oldest unpublished outbox row; 0 when none waits.",
                                registry=self.registry)
        self.published = Counter("lookout_outbox_published", "Outbox rows published (broker confirmed).",
                                 ["type"], registry=self.registry)
        self.failed = Counter("lookout_outbox_publish_failures", "Publish attempts that failed.",
                              ["reason"], registry=self.registry)
        self.broker_up = Gauge("lookout_relay_broker_connected",
                               "1 while the relay holds a broker connection.", registry=self.registry)
        self.cleaned = Counter("lookout_outbox_cleaned", "Published rows deleted after the retention.",
                               registry=self.registry)
        self.cache_forgotten = Counter("lookout_relay_cache_invalidations",
                                       "Cached user records forgotten after their events were published.",
                                       registry=self.registry)
        self.cache_failed = Counter("lookout_relay_cache_invalidation_failures",
                                    "Cache invalidations that failed (Redis); their users are owed.",
                                    registry=self.registry)
        self.cache_owed = Gauge("lookout_relay_cache_owed",
                                "Users whose cached record the relay still has to forget.",
                                registry=self.registry)


class Relay:
    """One relay process's work; ``run`` loops until ``stop`` is set."""

    def __init__(self, engine: Engine, broker_url: str, *, batch_size: int = 100, lease_seconds: float = 30,
                 poll_seconds: float = 1.0, broker_timeout: float = 5.0, backoff_max: float = 30.0,
                 retention: timedelta = timedelta(days=7), cleanup_batch: int = 1000,
                 tracer: Tracer | None = None, metrics: RelayMetrics | None = None,
                 cache: UserCache | None = None) -> None:
        # Its own sessions, not Flask-SQLAlchemy's request-scoped one.
        self.sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self.broker_url = broker_url
        self.batch_size, self.lease = batch_size, timedelta(seconds=lease_seconds)
        self.poll_seconds, self.broker_timeout, self.backoff_max = poll_seconds, broker_timeout, backoff_max
        self.retention, self.cleanup_batch = retention, cleanup_batch
        self.tracer = tracer or trace.NoOpTracer()
        self.metrics = metrics or RelayMetrics()
        self.stop = threading.Event()
        self.connection: pika.BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.failures = 0  # consecutive broker failures: the backoff's exponent
        self.next_cleanup = self.next_measure = 0.0
        self.cache = cache
        self.owed: dict[int, float] = {}  # user id -> monotonic time after which it is dropped
        self.cache_retry_at = 0.0  # after a failed invalidation, the next try waits for this

    # -- the broker -----------------------------------------------------------------------------

    def connect(self) -> BlockingChannel:
        import pika

        if self.channel is not None and self.channel.is_open:
            return self.channel
        self.disconnect()
        params = pika.URLParameters(self.broker_url)
        # Bounded waits everywhere: connecting, a silent socket, and a broker that blocks
        # publishers (memory or disk alarm), which otherwise hangs basic_publish for ever.
        params.socket_timeout = params.stack_timeout = self.broker_timeout
        params.blocked_connection_timeout = self.broker_timeout
        params.connection_attempts, params.retry_delay = 1, 0
        params.client_properties = {"connection_name": f"lookout-relay {threading.get_native_id()}"}
        self.connection = pika.BlockingConnection(params)
        channel = self.connection.channel()
        channel.confirm_delivery()
        declare_topology(channel)
        self.channel = channel
        self.metrics.broker_up.set(1)
        log.info("relay connected to the broker")
        return channel

    def disconnect(self) -> None:
        connection, self.connection, self.channel = self.connection, None, None
        self.metrics.broker_up.set(0)
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # a broken connection may fail to close; it is dropped anyway
                log.debug("closing the broker connection failed", exc_info=True)

    def publish(self, channel: BlockingChannel, event: Claimed) -> None:
        import pika

        # The row's own context, never the ambient one: without a stored one (a backfill) the
        # publish starts a trace of its own rather than join whatever the relay runs in.
        context = extract(event.headers()) if event.traceparent else Context()
        attributes: dict[str, str | int] = {
            "messaging.system": "rabbitmq", "messaging.operation.type": "send",
            "messaging.operation.name": "publish", "messaging.destination.name": EVENTS_EXCHANGE,
            "messaging.rabbitmq.destination.routing_key": event.type, "messaging.message.id": event.id,
            "lookout.user_id": event.user_id}
        with self.tracer.start_as_current_span(f"publish {EVENTS_EXCHANGE}", context=context,
                                               kind=SpanKind.PRODUCER, attributes=attributes):
            properties = pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=event.id, type=event.type,
                timestamp=int(event.occurred_at.timestamp()), headers=event.headers())
            channel.basic_publish(EVENTS_EXCHANGE, event.type, event.body(), properties, mandatory=True)

    # -- the outbox ------------------------------------------------------------------------------

    def claim(self) -> list[Claimed]:
        now = utcnow()
        with self.sessions.begin() as session:
            rows: Sequence[OutboxEvent] = session.scalars(claim_statement(now, self.batch_size)).all()
            for row in rows:
                row.claimed_until = now + self.lease
            return [Claimed(r.seq, str(r.id), r.type, r.user_id, r.occurred_at, dict(r.payload),
                            r.traceparent, r.tracestate) for r in rows]

    def settle(self, published: Sequence[Claimed], failed: Claimed | None, error: str | None,
               untried: Sequence[Claimed]) -> None:
        now = utcnow()
        with self.sessions.begin() as session:
            if published:
                session.execute(update(OutboxEvent).where(OutboxEvent.seq.in_([e.seq for e in published]))
                                .values(published_at=now, claimed_until=None,
                                        attempts=OutboxEvent.attempts + 1, last_error=None))
            if failed is not None:
                session.execute(update(OutboxEvent).where(OutboxEvent.seq == failed.seq)
                                .values(claimed_until=now + timedelta(seconds=self.backoff()),
                                        attempts=OutboxEvent.attempts + 1, last_error=(error or "")[:2000]))
            if untried:
                session.execute(update(OutboxEvent).where(OutboxEvent.seq.in_([e.seq for e in untried]))
                                .values(claimed_until=None))
        for event in published:
            self.metrics.published.labels(event.type).inc()
        self.forget(e.user_id for e in published)

    def forget(self, user_ids: Iterable[int]) -> None:
        """Forget the cached records of ``user_ids`` and of the users still owed; never raises
        (the cache catches Redis's errors) and never waits longer than one bounded Redis call."""
        cache = self.cache
        if cache is None:
            return
        now = time.monotonic()
        until = now + cache.ttl_ms / 1000
        for user_id in user_ids:
            self.owed.setdefault(user_id, until)
        self.owed = {user_id: end for user_id, end in self.owed.items() if end > now}
        if self.owed and now >= self.cache_retry_at:
            ids = sorted(self.owed)
            if cache.invalidate(ids):
                self.metrics.cache_forgotten.inc(len(ids))
                self.owed.clear()
                self.cache_retry_at = 0.0
            else:
                self.metrics.cache_failed.inc()
                self.cache_retry_at = now + cache.retry_seconds
                log.warning("forgetting %d cached user records failed; trying again in %g s",
                            len(ids), cache.retry_seconds)
        self.metrics.cache_owed.set(len(self.owed))

    def relay_once(self) -> int:
        """Claim, publish, mark; return how many rows were published. Raises on a broker failure
        after settling what it did (the caller backs off and reconnects)."""
        import pika.exceptions

        channel = self.connect()  # a broker that is down claims nothing: no row is at fault
        batch = self.claim()
        if not batch:
            self.forget(())  # what an earlier round still owes
            return 0
        done: list[Claimed] = []
        try:
            for event in batch:
                if self.stop.is_set():
                    break
                self.publish(channel, event)
                done.append(event)
        except (pika.exceptions.AMQPError, OSError) as exc:
            failed = batch[len(done)]
            reason = type(exc).__name__
            self.metrics.failed.labels(reason).inc()
            self.settle(done, failed, f"{reason}: {exc}", batch[len(done) + 1:])
            if not isinstance(exc, pika.exceptions.UnroutableError | pika.exceptions.NackError):
                self.disconnect()  # the connection is in doubt: a fresh one next time
            raise
        self.settle(done, None, None, batch[len(done):])
        return len(done)

    def measure(self) -> None:
        with self.sessions.begin() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(OutboxEvent.occurred_at))
                .where(OutboxEvent.published_at.is_(None))).one()
        self.metrics.backlog.set(count)
        if oldest is not None and oldest.tzinfo is None:  # SQLite drops the zone of a bare aggregate
            oldest = oldest.replace(tzinfo=UTC)
        self.metrics.oldest_age.set((utcnow() - oldest).total_seconds() if oldest is not None else 0)

    def cleanup(self) -> int:
        """Delete published rows past the retention, ``cleanup_batch`` at a time (each batch its
        own short transaction: no long lock, no huge single DELETE)."""
        cutoff, total = utcnow() - self.retention, 0
        while not self.stop.is_set():
            with self.sessions.begin() as session:
                # A derived table around the LIMIT: MySQL and MariaDB refuse LIMIT directly
                # inside IN (...), and a subquery on the table a DELETE changes (error 1093).
                old = (select(OutboxEvent.seq).where(OutboxEvent.published_at < cutoff)
                       .order_by(OutboxEvent.seq).limit(self.cleanup_batch).subquery("batch"))
                result: Any = session.execute(
                    delete(OutboxEvent).where(OutboxEvent.seq.in_(select(old.c.seq))).execution_options(
                        synchronize_session=False))
                deleted = int(result.rowcount)
            total += deleted
            self.metrics.cleaned.inc(deleted)
            if deleted < self.cleanup_batch:
                break
        return total

    def backoff(self) -> float:
        return float(min(self.backoff_max, 0.5 * 2 ** min(self.failures, 10)))

    def run(self, cleanup_every: float = 60.0) -> None:
        """Loop until ``stop``: relay, measure, clean up now and then; back off on failures."""
        import pika.exceptions
        from sqlalchemy.exc import SQLAlchemyError

        log.info("relay started")
        try:
            while not self.stop.is_set():
                wait = self.poll_seconds
                try:
                    published = self.relay_once()
                    self.failures = 0
                    if published:
                        wait = 0  # more may wait: go on at once
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self.failures += 1
                    wait = self.backoff()
                    log.warning("publishing failed (%s: %s); retrying in %.1f s",
                                type(exc).__name__, exc, wait)
                except SQLAlchemyError as exc:
                    self.failures += 1
                    wait = self.backoff()
                    log.warning("the outbox is unreachable (%s); retrying in %.1f s",
                                type(exc).__name__, wait)
                try:
                    if time.monotonic() >= self.next_measure:  # a count per second, not per batch
                        self.next_measure = time.monotonic() + 1.0
                        self.measure()
                    if time.monotonic() >= self.next_cleanup:
                        self.next_cleanup = time.monotonic() + cleanup_every
                        if removed := self.cleanup():
                            log.info("deleted %d published outbox rows past the retention", removed)
                except SQLAlchemyError as exc:
                    log.warning("outbox metrics or cleanup failed (%s)", type(exc).__name__)
                if wait:
                    self.stop.wait(wait)
        finally:
            self.disconnect()
            log.info("relay stopped")


def relay_from_app(app: Flask) -> Relay:
    from .extensions import db
    from .platform.telemetry import telemetry_of

    config = app.config
    telemetry = telemetry_of(app)
    tracer = (telemetry.tracing.provider.get_tracer("lookout.relay")
              if telemetry is not None and telemetry.tracing is not None else None)
    # The relay's own cache client: its counts go to the relay's registry, not the API's.
    cache = (UserCache(config["CACHE_URL"], config["CACHE_TTL_SECONDS"], config["CACHE_TIMEOUT"],
                       config["CACHE_RETRY_SECONDS"], config["CACHE_KEY_PREFIX"])
             if config["CACHE_URL"] else None)
    return Relay(db.engine, config["BROKER_URL"], batch_size=config["RELAY_BATCH_SIZE"],
                 lease_seconds=config["RELAY_LEASE_SECONDS"], poll_seconds=config["RELAY_POLL_SECONDS"],
                 broker_timeout=config["BROKER_TIMEOUT_SECONDS"],
                 retention=timedelta(hours=config["OUTBOX_RETENTION_HOURS"]), tracer=tracer, cache=cache)


@events_cli.command("relay")
def relay_command() -> None:
    """Publish the outbox to the broker until SIGTERM or SIGINT."""
    import logging.config

    from prometheus_client import start_http_server

    from .platform.logs import logging_config

    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the real app, for the loop
    logging.config.dictConfig(logging_config(app.config["LOG_LEVEL"]))  # JSON lines, as the API's
    if not app.config["BROKER_URL"]:
        raise click.ClickException("BROKER_URL is not set: the relay has nowhere to publish "
                                   "(events wait in the outbox)")
    relay = relay_from_app(app)
    if (port := app.config["RELAY_METRICS_PORT"]) is not None:
        start_http_server(port, addr=app.config["RELAY_METRICS_ADDRESS"], registry=relay.metrics.registry)
        log.info("relay metrics on port %d", port)

    def stop(signum: int, frame: object) -> None:
        log.info("relay stopping on signal %d", signum)
        relay.stop.set()

    previous: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, stop)
    try:
        relay.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        from .platform.telemetry import telemetry_of

        if (telemetry := telemetry_of(app)) is not None:
            telemetry.shutdown(5.0)


def init_app(app: Flask) -> None:
    app.cli.add_command(events_cli)
