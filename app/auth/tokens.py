"""JWT issue and verification (PyJWT) with a fixed algorithm and required claims."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from flask import current_app, g

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]


def issue_token(user_id: int, role: str, version: int = 0) -> tuple[str, int]:
    """Return a signed access token for the user and its lifetime in seconds.

    ``version`` is the user's token version; raising it (a password change) revokes the token.
    """
    config = current_app.config
    now = int(time.time())
    ttl = config["JWT_TTL_SECONDS"]
    claims = {
        "sub": str(user_id),
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "iss": config["JWT_ISSUER"],
        "aud": config["JWT_AUDIENCE"],
        "jti": uuid.uuid4().hex,
        "ver": version,
    }
    return jwt.encode(claims, config["JWT_SECRET_KEY"], algorithm=config["JWT_ALGORITHM"]), ttl


def decode_token(token: str) -> dict[str, Any] | None:
    """Return the verified claims, or None for any invalid token."""
    config = current_app.config
    try:
        return jwt.decode(
            token,
            config["JWT_SECRET_KEY"],
            # One algorithm, from config, never from the token header: defeats alg=none and
            # algorithm-confusion attacks.
            algorithms=[config["JWT_ALGORITHM"]],
            audience=config["JWT_AUDIENCE"],
            issuer=config["JWT_ISSUER"],
            leeway=config["JWT_LEEWAY_SECONDS"],
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.InvalidTokenError:
        return None


def request_claims(token: str) -> dict[str, Any] | None:
    """``decode_token`` once per request and token: a write's rate-limit keys (two on a PATCH)
    and its bearer-token guard all need the same claims. ``g`` lives as long as the request."""
    memo: dict[str, dict[str, Any] | None] = g.setdefault("lookout_token_claims", {})
    if token not in memo:
        memo[token] = decode_token(token)
    return memo[token]
