"""The broker's topology that both sides of the user events rely on, declared by each of them.

The users service's outbox relay publishes every event to ``EVENTS_EXCHANGE`` (topic, durable)
with the event's type as routing key (``user.created``), ``mandatory=True`` and publisher
confirms. The notifier consumes ``NOTIFIER_QUEUE``. Both declare the exchange, the queue and its
binding with the same arguments (a declaration that differs is refused by RabbitMQ with
PRECONDITION_FAILED), so an event published before the notifier ever ran waits in the queue
instead of being dropped as unroutable.

A message: ``content_type`` application/json, ``delivery_mode`` 2 (persistent), ``message_id``
the event id (a UUID, the notifier's deduplication key), ``type`` the event type, ``timestamp``
the commit time in epoch seconds, ``headers`` the W3C trace context (``traceparent``,
``tracestate``) captured when the event row was written. The body is ``Event`` as JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

EVENTS_EXCHANGE = "lookout.events"
NOTIFIER_QUEUE = "notifier.user-events"
NOTIFIER_BINDING = "user.*"
# Where the notifier parks what it gave up on (poison messages, permanent SMTP failures, too many
# attempts); a durable queue an operator can read and replay.
NOTIFIER_DEAD_LETTERS = "notifier.dead-letters"

EventType = Literal["user.created", "user.password_changed", "user.email_changed",
                    "user.role_changed", "user.deleted"]
EVENT_TYPES: tuple[EventType, ...] = ("user.created", "user.password_changed", "user.email_changed",
                                      "user.role_changed", "user.deleted")


class Event(TypedDict):
    """The body of every user event (schema version 1). ``data`` never holds a password or hash.

    data by type:
        user.created           {"email", "name", "role"}
        user.password_changed  {"email", "name"}
        user.email_changed     {"old_email", "new_email", "name"}
        user.role_changed      {"email", "name", "old_role", "new_role"}
        user.deleted           {"email", "name"}
    """

    version: int  # 1
    id: str  # UUID, also the AMQP message_id
    type: EventType
    occurred_at: str  # ISO 8601 UTC with microseconds and "Z": the commit's time
    user_id: int
    data: dict[str, Any]


def declare_topology(channel: BlockingChannel) -> None:
    """Declare the exchange, the notifier's queue, its binding and the dead-letter queue.

    Idempotent, and the one place their arguments are written: both services call it after
    connecting. Quorum queues: replicated on a RabbitMQ cluster, and durable.
    """
    channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_declare(NOTIFIER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(NOTIFIER_QUEUE, EVENTS_EXCHANGE, routing_key=NOTIFIER_BINDING)
    channel.queue_declare(NOTIFIER_DEAD_LETTERS, durable=True, arguments={"x-queue-type": "quorum"})
