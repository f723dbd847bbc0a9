"""Database models."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    Uuid,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db
from .platform.database import MYSQL_CHARSET, MYSQL_COLLATION

# Every table's character set on MySQL/MariaDB, whatever the database's default (see there).
MYSQL_TABLE = {"mysql_charset": MYSQL_CHARSET, "mysql_collate": MYSQL_COLLATION}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Store aware datetimes and always return them in UTC.

    SQLite drops the zone and returns naive values; SQLAlchemy has no built-in type that
    restores it, so this small decorator does. MySQL's DATETIME keeps no zone either (sessions
    are UTC: app/platform/database.py) and, without a precision, no fraction of a second: a
    lease or an event time would move by up to a second, so it keeps microseconds as
    PostgreSQL does.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl_instance)

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


MAX_ID = 2**31 - 1  # ids are PostgreSQL integers; a larger one cannot exist (and overflows SQLite)


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


class User(db.Model):  # type: ignore[name-defined]
    __tablename__ = "users"
    # Ids are never reused: PostgreSQL's sequence already behaves so, and so does InnoDB's
    # AUTO_INCREMENT counter, kept across restarts since MariaDB 10.2.4 and MySQL 8.0; SQLite
    # needs AUTOINCREMENT.
    __table_args__ = {"sqlite_autoincrement": True, **MYSQL_TABLE}

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=16, validate_strings=True,
             values_callable=lambda roles: [r.value for r in roles], name="role"),
        default=Role.USER,
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    # Raised when the password changes: every token issued before carries a lower one and
    # stops working at once (tokens hold it in their "ver" claim).
    token_version: Mapped[int] = mapped_column(default=0, server_default="0")
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


class OutboxEvent(db.Model):  # type: ignore[name-defined]
    """A user event written in the same transaction as the change it tells of (the transactional
    outbox); the relay (app/relay.py) publishes it to the broker and marks it published.

    ``seq`` orders a user's events: each write to a user first writes (and so locks) the user's
    row, then inserts its event, so for one user ``seq`` follows the commit order. ``user_id`` is
    no foreign key: a deleted user's ``user.deleted`` event outlives the row.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        # The relay's claim: the oldest unpublished event of each user (MySQL has no partial
        # index: there it holds every row).
        Index("ix_outbox_events_unpublished", "user_id", "seq", postgresql_where=text("published_at IS NULL"),
              sqlite_where=text("published_at IS NULL")),
        # Retention cleanup and the backlog metrics.
        Index("ix_outbox_events_published_at", "published_at"),
        MYSQL_TABLE,
    )

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), unique=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column()
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON())
    # W3C trace context of the request that wrote the row (propagate.inject at insert time), so
    # the publish continues that request's trace and not whatever the relay runs in.
    traceparent: Mapped[str | None] = mapped_column(String(55))
    tracestate: Mapped[str | None] = mapped_column(String(512))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The relay's lease: a claimed row is left alone by other relays until this time, so a relay
    # that died mid-publish gives its rows back by itself.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text())

    # Not a foreign key (see above), only the unit of work's ordering: the user's INSERT or
    # UPDATE is flushed before the event's INSERT, and a new user's id is copied into user_id.
    user: Mapped[User | None] = relationship(
        User, primaryjoin="foreign(OutboxEvent.user_id) == User.id")

    def __repr__(self) -> str:
        return f"<OutboxEvent {self.seq} {self.type} user {self.user_id}>"
