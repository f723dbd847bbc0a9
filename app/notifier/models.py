"""What the notifier did with each event: one row per event id, the deduplication key.

States: ``pending`` (recorded, nothing sent), ``sending`` (an SMTP attempt began: a crash now
leaves the row here, and the redelivered event is sent again with the same Message-ID),
``retrying`` (a temporary failure; waits in a retry queue), ``sent`` (the SMTP server accepted
it), ``dead`` (permanent failure, poison or out of attempts: in the dead-letter queue),
``skipped`` (an event no email is written for).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from ..platform.database import MYSQL_CHARSET, MYSQL_COLLATION
from .extensions import db

STATES = ("pending", "sending", "retrying", "sent", "dead", "skipped")
# A redelivered event in one of these states sends nothing. A ``dead`` one is tried again: it sent
# nothing, and it comes back only when an operator replays the dead letters after a fix.
DONE_STATES = frozenset({"sent", "skipped"})


# MySQL's DATETIME keeps fractions of a second only when asked to (as PostgreSQL does).
Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Notification(db.Model):  # type: ignore[name-defined]
    __tablename__ = "notifications"
    __table_args__ = {"mysql_charset": MYSQL_CHARSET, "mysql_collate": MYSQL_COLLATION}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    template: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    recipient: Mapped[str | None] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    message_id: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime | None] = mapped_column(Timestamp)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
