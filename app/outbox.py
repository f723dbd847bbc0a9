"""Writing user events into the transactional outbox, in the transaction of the change.

Usage, before the commit that makes the change::

    record_event(user, "user.password_changed", {"email": user.email, "name": user.name})

The row is added to the session only: it is committed with the change or rolled back with it, so
a rolled-back change publishes nothing and a committed one is never lost. app/relay.py publishes
the rows. The trace context of the current span is stored with the row (W3C ``traceparent`` and
``tracestate``), so the publish belongs to the request's trace.

``data`` by type is listed on ``app.platform.messaging.Event``; never a password or hash.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate

from .extensions import db
from .models import OutboxEvent, User
from .platform.messaging import EVENT_TYPES, EventType

# The Event data keys per type; a write never carries more (a hash cannot slip in by mistake).
DATA_KEYS: dict[str, frozenset[str]] = {
    "user.created": frozenset({"email", "name", "role"}),
    "user.password_changed": frozenset({"email", "name"}),
    "user.email_changed": frozenset({"old_email", "new_email", "name"}),
    "user.role_changed": frozenset({"email", "name", "old_role", "new_role"}),
    "user.deleted": frozenset({"email", "name"}),
}
if set(DATA_KEYS) != set(EVENT_TYPES):  # the topology module lists the types; keep both in step
    raise RuntimeError("app.outbox.DATA_KEYS and app.platform.messaging.EVENT_TYPES differ")


def record_event(user: User, type_: EventType, data: dict[str, Any], *, deleted: bool = False) -> OutboxEvent:
    """Add ``type_``'s outbox row for ``user`` to the current session and return it.

    A new or changed user is flushed before the event (the relationship orders it), which locks
    the user's row first: a user's events then get their ``seq`` in commit order. For a deleted
    user, flush the DELETE first and pass ``deleted=True``.
    """
    if set(data) != DATA_KEYS[type_]:
        raise ValueError(f"{type_} data must have exactly {sorted(DATA_KEYS[type_])}, not {sorted(data)}")
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    event = OutboxEvent(type=type_, payload=data, traceparent=carrier.get("traceparent"),
                        tracestate=carrier.get("tracestate") or None)
    if deleted:
        event.user_id = user.id
    else:
        event.user = user
    db.session.add(event)
    return event

