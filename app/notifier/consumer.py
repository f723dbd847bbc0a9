"""The consumer: RabbitMQ deliveries in, emails out, acknowledged only once handled.

One ``BlockingConnection`` on the main thread does all the AMQP I/O (pika is not thread-safe),
including heartbeats while an email is being sent; the deliveries are handled one at a time on a
worker thread, which hands each settlement (ack, publish to a retry queue or the dead letters
then ack) back with ``add_callback_threadsafe``. ``PREFETCH_COUNT`` bounds the unacknowledged
deliveries. A lost connection is re-made with backoff; what was not acknowledged is redelivered
and deduplicated by event id (handling.py).

Retries: one queue per delay in RETRY_DELAYS_SECONDS (``notifier.retry.<ms>ms``, ``x-message-ttl``
of that delay, dead-lettering back to the notifier's queue), so a short delay never waits behind
a long one; the attempt number rides in the ``x-lookout-attempt`` header.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import pika
import pika.exceptions
from flask import Flask
from opentelemetry import context, propagate
from opentelemetry.instrumentation.pika import PikaInstrumentor
from pika.adapters.blocking_connection import BlockingChannel

from ..platform.messaging import NOTIFIER_DEAD_LETTERS, NOTIFIER_QUEUE, declare_topology
from .handling import Handler, Outcome

log = logging.getLogger(__name__)
ATTEMPT_HEADER = "x-lookout-attempt"
LAG_EVERY_SECONDS = 5.0


def retry_queue(delay: float) -> str:
    return f"notifier.retry.{round(delay * 1000)}ms"


def declare_retry_queues(channel: BlockingChannel, delays: tuple[float, ...]) -> None:
    for delay in delays:
        channel.queue_declare(retry_queue(delay), durable=True, arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": round(delay * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": NOTIFIER_QUEUE,
        })


def connection_parameters(url: str, name: str, heartbeat: int) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.socket_timeout = params.blocked_connection_timeout = 10
    params.connection_attempts = 1
    params.client_properties = {"connection_name": name}
    return params


@dataclass
class Delivery:
    tag: int
    body: bytes
    properties: pika.BasicProperties


class Consumer:
    def __init__(self, app: Flask, handler: Handler) -> None:
        self.app = app
        self.handler = handler
        self.settings = app.extensions["notifier.settings"]
        self.metrics = handler.metrics
        self.stop = threading.Event()

    def run(self) -> None:
        """Consume until ``stop`` is set, reconnecting with backoff after a lost connection."""
        backoff = 0.5
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self._consume()
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("broker connection lost: %r; reconnecting in %.1f s", exc, backoff)
            finally:
                if self.metrics is not None:
                    self.metrics.connected.set(0)
            if time.monotonic() - started > 30:
                backoff = 0.5  # it had been working: start over
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 15.0)
        log.info("consumer stopped")

    def _consume(self) -> None:
        import os

        connection = pika.BlockingConnection(connection_parameters(
            self.settings.BROKER_URL, f"notifier-consumer pid={os.getpid()}",
            self.settings.BROKER_HEARTBEAT_SECONDS))
        work: queue.Queue[Delivery | None] = queue.Queue()
        worker = threading.Thread(target=self._work, args=(connection, work), name="notifier-worker",
                                  daemon=True)
        try:
            channel = connection.channel()
            declare_topology(channel)
            declare_retry_queues(channel, self.settings.RETRY_DELAYS_SECONDS)
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.settings.PREFETCH_COUNT)
            self.channel = channel
            channel.basic_consume(NOTIFIER_QUEUE, lambda ch, method, props, body: work.put(
                Delivery(method.delivery_tag, body, props)))
            # The official instrumentation: a receive span per delivery and a PRODUCER span with
            # injected context for each republish (retry, dead letter). After basic_consume: it
            # wraps the consumers the channel has.
            PikaInstrumentor.instrument_channel(channel, tracer_provider=self.handler.tracer_provider)
            worker.start()
            log.info("consuming %s (prefetch %d)", NOTIFIER_QUEUE, self.settings.PREFETCH_COUNT)
            if self.metrics is not None:
                self.metrics.connected.set(1)
            next_lag = 0.0
            while not self.stop.is_set():
                connection.process_data_events(time_limit=0.5)
                if time.monotonic() >= next_lag:
                    self._measure_lag(channel)
                    next_lag = time.monotonic() + LAG_EVERY_SECONDS
        finally:
            work.put(None)
            if worker.is_alive():
                # Let the delivery in hand finish (bounded by the SMTP timeout) and settle it.
                deadline = time.monotonic() + self.settings.SMTP_TIMEOUT_SECONDS * 3
                while worker.is_alive() and time.monotonic() < deadline and connection.is_open:
                    connection.process_data_events(time_limit=0.2)
            if connection.is_open:
                try:
                    connection.close()
                except pika.exceptions.AMQPError:
                    pass

    def _measure_lag(self, channel: BlockingChannel) -> None:
        if self.metrics is None:
            return
        main = channel.queue_declare(NOTIFIER_QUEUE, passive=True)
        dead = channel.queue_declare(NOTIFIER_DEAD_LETTERS, passive=True)
        self.metrics.lag.set(main.method.message_count)
        self.metrics.dead_letter_depth.set(dead.method.message_count)

    def _work(self, connection: pika.BlockingConnection, work: queue.Queue[Delivery | None]) -> None:
        with self.app.app_context():
            while (delivery := work.get()) is not None:
                if self.stop.is_set():
                    continue  # not acknowledged: redelivered to the next consumer
                headers = dict(delivery.properties.headers or {})
                attempt = int(headers.get(ATTEMPT_HEADER, 1) or 1)
                outcome = self.handler.handle(delivery.body, delivery.properties.message_id, headers, attempt)
                try:
                    connection.add_callback_threadsafe(
                        lambda d=delivery, o=outcome, a=attempt: self._settle(d, o, a))
                except (pika.exceptions.AMQPError, RuntimeError, ValueError) as exc:
                    log.warning("could not settle delivery %s: %r (it will be redelivered)",
                                delivery.tag, exc)
                    return

    def _settle(self, delivery: Delivery, outcome: Outcome, attempt: int) -> None:
        """On the connection's thread: publish where the outcome says, then acknowledge."""
        channel = self.channel
        if outcome.action != "ack":
            props = delivery.properties
            headers = dict(props.headers or {})
            if outcome.action == "retry":
                delays = self.settings.RETRY_DELAYS_SECONDS
                target = retry_queue(delays[min(attempt - 1, len(delays) - 1)])
                headers[ATTEMPT_HEADER] = attempt + 1
            else:
                target = NOTIFIER_DEAD_LETTERS
                headers["x-lookout-dead-reason"] = outcome.reason
                headers[ATTEMPT_HEADER] = attempt
            properties = pika.BasicProperties(
                content_type=props.content_type, delivery_mode=pika.DeliveryMode.Persistent,
                message_id=props.message_id, type=props.type, timestamp=props.timestamp, headers=headers)
            # Confirmed (confirm_delivery) before the original is acknowledged: a crash between
            # the two leaves a duplicate, which the event id deduplicates, never a loss. In the
            # message's own trace: the instrumentation injects its publish span's context, which
            # must continue the request's trace, not start one on this thread.
            carrier = {k: v for k, v in headers.items() if isinstance(v, str)}
            token = context.attach(propagate.extract(carrier))
            try:
                channel.basic_publish("", target, delivery.body, properties, mandatory=True)
            finally:
                context.detach(token)
        channel.basic_ack(delivery.tag)
