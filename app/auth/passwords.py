"""Argon2id password hashing, tuned per app from config."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app

KEY = "lookout.password_hasher"


def init_app(app: Flask) -> None:
    hasher = PasswordHasher(
        time_cost=app.config["PASSWORD_HASH_TIME_COST"],
        memory_cost=app.config["PASSWORD_HASH_MEMORY_KIB"],
        parallelism=1,
    )
    # Verified against when the email is unknown, so a miss costs as much as a hit and
    # response time does not reveal which emails exist.
    app.extensions[KEY] = (hasher, hasher.hash("not-a-real-password"))


def hash_password(password: str) -> str:
    hasher, _ = current_app.extensions[KEY]
    return hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    """Check ``password``; return (ok, new hash when the parameters changed)."""
    hasher, dummy = current_app.extensions[KEY]
    try:
        hasher.verify(stored_hash or dummy, password)
    except (VerificationError, InvalidHashError):
        return False, None
    if stored_hash is None:
        return False, None
    return True, hasher.hash(password) if hasher.check_needs_rehash(stored_hash) else None
