"""Bearer tokens of the users service, verified with its published public keys (JWKS).

Hand-written around PyJWT's key parsing rather than ``jwt.PyJWKClient``: that client refetches
on every unknown ``kid`` with no cooldown and a 30 s default timeout (a denial-of-service
amplifier), caches keys with no expiry, and forgets every key when a refresh fails. Here: keys
cached JWKS_CACHE_SECONDS and kept when a refresh fails, an unknown kid refetches at most once
per JWKS_REFETCH_COOLDOWN_SECONDS, each fetch bounded by JWKS_TIMEOUT_SECONDS, and the algorithm
is pinned to EdDSA (never taken from the token or the key).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from typing import Any

import jwt

log = logging.getLogger(__name__)
ALGORITHMS = ["EdDSA"]
MAX_JWKS_BYTES = 64 * 1024


class KeySet:
    def __init__(self, url: str, timeout: float, lifetime: float, cooldown: float) -> None:
        self.url, self.timeout, self.lifetime, self.cooldown = url, timeout, lifetime, cooldown
        self._keys: dict[str, Any] = {}
        self._fetched = -float("inf")  # when the keys were last fetched successfully
        self._tried = -float("inf")  # when a fetch was last attempted
        self._lock = threading.Lock()
        self.fetches = 0

    def key(self, kid: str) -> Any | None:
        now = time.monotonic()
        with self._lock:
            stale = now - self._fetched > self.lifetime
            # Stale keys or an unknown kid: fetch, but never twice within the cooldown (random
            # kids, or a JWKS endpoint that is down, cost one fetch per cooldown at most).
            if (stale or kid not in self._keys) and now - self._tried >= self.cooldown:
                self._fetch(now)
            return self._keys.get(kid)

    def _fetch(self, now: float) -> None:
        self._tried = now
        self.fetches += 1
        try:
            request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310  # nosec B310 # JWKS_URL is checked to be http(s) at start
                document = json.loads(answer.read(MAX_JWKS_BYTES))
            keys: dict[str, Any] = {}
            for jwk in document.get("keys", []):
                if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="EdDSA").key
        except (OSError, ValueError, AttributeError, jwt.PyJWTError) as exc:
            # Keep the keys already known: a JWKS outage must not become an authentication outage.
            log.warning("JWKS fetch from %s failed: %r; keeping %d known keys",
                        self.url, exc, len(self._keys))
            return
        self._keys, self._fetched = keys, now


class Verifier:
    def __init__(self, settings: Any) -> None:
        self.keys = KeySet(settings.JWKS_URL, settings.JWKS_TIMEOUT_SECONDS, settings.JWKS_CACHE_SECONDS,
                           settings.JWKS_REFETCH_COOLDOWN_SECONDS)
        self.issuer, self.audience = settings.JWT_ISSUER, settings.JWT_AUDIENCE
        self.leeway = settings.JWT_LEEWAY_SECONDS

    def claims(self, token: str) -> dict[str, Any] | None:
        """The token's claims when it is valid, else None (the reason is logged at debug)."""
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if header.get("alg") not in ALGORITHMS or not isinstance(kid, str):
                return None
            key = self.keys.key(kid)
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=ALGORITHMS, issuer=self.issuer, audience=self.audience,
                leeway=self.leeway, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            log.debug("token refused: %r", exc)
            return None
        if not str(claims.get("sub", "")).isdigit() or claims.get("role") not in ("user", "admin"):
            return None
        return claims
