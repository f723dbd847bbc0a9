"""User records for reads: the columns a read needs, without ORM objects, and their two views.

Reads (the token check's re-read of the caller, one user, a page of users) select the columns
with Core and build a ``UserRecord``, a small frozen value: no identity map, no change
tracking, no attribute instrumentation. A record is also what the read cache (app/cache.py)
stores: the raw record, never a view; ``full_view`` and ``public_view`` are applied after the
read, and give exactly the fields of the UserFull and UserPublic schemas (tests/test_records.py
checks them against the schemas' own dump).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import bindparam, select

from .cache import cache_of
from .extensions import db
from .models import MAX_ID, Role, User

# The table's columns, not the mapped attributes: a statement of those skips the ORM's compile
# and result machinery in Session.execute (the types, Role and UTC datetimes, still apply).
USERS = User.__table__
COLUMNS = tuple(USERS.c[name] for name in ("id", "email", "name", "role", "token_version",
                                             "created_by_id", "created_at", "updated_at"))
BY_ID = select(*COLUMNS).where(USERS.c.id == bindparam("user_id"))


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as reads see it (no password hash)."""

    id: int
    email: str
    name: str
    role: Role
    token_version: int
    created_by_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def dumps(self) -> bytes:
        """The record as the cache stores it."""
        return orjson.dumps((self.id, self.email, self.name, self.role.value, self.token_version,
                             self.created_by_id, self.created_at.isoformat(), self.updated_at.isoformat()))

    @classmethod
    def loads(cls, value: bytes) -> UserRecord:
        id_, email, name, role, version, created_by, created_at, updated_at = orjson.loads(value)
        return cls(id_, email, name, Role(role), version, created_by, datetime.fromisoformat(created_at),
                   datetime.fromisoformat(updated_at))

    @classmethod
    def of_row(cls, row: Any) -> UserRecord:
        return cls(*row)


class UserLike(Protocol):
    """What the views and the policy read: a UserRecord or an ORM User (after a write)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def created_by_id(self) -> int | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def is_admin(self) -> bool: ...


def full_view(user: UserLike) -> dict[str, Any]:
    """The UserFull schema's fields: the user themself and admins."""
    return {"id": user.id, "name": user.name, "email": user.email, "role": user.role.value,
            "created_by": user.created_by_id, "created_at": user.created_at.isoformat(),
            "updated_at": user.updated_at.isoformat()}


def public_view(user: UserLike) -> dict[str, Any]:
    """The UserPublic schema's fields: any other authenticated caller."""
    return {"id": user.id, "name": user.name}


def read_user(user_id: int) -> UserRecord | None:
    """The user ``user_id`` from the cache, else from the database (and then into the cache)."""
    if user_id > MAX_ID:  # cannot exist (and overflows the column's type)
        return None
    cache = cache_of()
    ticket = None
    if cache is not None:
        cached, ticket = cache.get(user_id)
        if cached is not None:
            return UserRecord.loads(cached)
    row = db.session.execute(BY_ID, {"user_id": user_id}).first()
    if row is None:
        return None
    record = UserRecord.of_row(row)
    if ticket is not None and cache is not None:
        cache.fill(user_id, ticket, record.dumps())
    return record


def forget_users(*user_ids: int) -> None:
    """Drop the cached records of ``user_ids``: call after the commit that changed them."""
    cache = cache_of()
    if cache is not None:
        cache.invalidate(user_ids)
