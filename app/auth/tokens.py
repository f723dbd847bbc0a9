"""JWT issue and verification (PyJWT): EdDSA only, a ``kid`` naming a published key, required claims.

The keys come from app/keys.py (settings JWT_PRIVATE_KEY, JWT_KEY_ID, JWT_EXTRA_PUBLIC_KEYS); a
token verifies against the published key its ``kid`` names, so tokens signed by a key that is
still published (the previous one, during a rotation) keep working until they expire.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from flask import Flask, current_app, g

from ..keys import ALGORITHM, SigningKeys, load_keys

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
KEYS = "lookout.signing_keys"


def init_app(app: Flask) -> None:
    """Load the signing key and the published set once (the settings were checked already)."""
    config = app.config
    app.extensions[KEYS] = load_keys(config["JWT_PRIVATE_KEY"], config["JWT_KEY_ID"],
                                     config["JWT_EXTRA_PUBLIC_KEYS"] or "")


def signing_keys() -> SigningKeys:
    keys: SigningKeys = current_app.extensions[KEYS]
    return keys


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
    keys = signing_keys()
    return jwt.encode(claims, keys.private_key, algorithm=ALGORITHM, headers={"kid": keys.kid}), ttl


def decode_token(token: str) -> dict[str, Any] | None:
    """Return the verified claims, or None for any invalid token."""
    config = current_app.config
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        # Only a published key, chosen by the kid; an unknown kid is refused without a lookup
        # elsewhere (this service holds every key it ever published).
        key = signing_keys().verifying.get(kid) if isinstance(kid, str) else None
        if key is None:
            return None
        return jwt.decode(
            token,
            key,
            # One algorithm, fixed here, never from the token header: defeats alg=none and
            # algorithm-confusion attacks (an HS256 token "signed" with the public key).
            algorithms=[ALGORITHM],
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
