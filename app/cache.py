"""A Redis read cache for user records (cache-aside), shared by every process and pod.

Usage:
    cache = cache_of(app)             # None when CACHE_URL is empty: every read from the database
    value, ticket = cache.get(7)      # a hit: (bytes, None); a miss: (None, ticket)
    cache.fill(7, ticket, value)      # after the database read; refused if a write came between
    cache.invalidate([7])             # after a committed write

Settings: CACHE_URL, CACHE_TTL_SECONDS, CACHE_TIMEOUT, CACHE_RETRY_SECONDS, CACHE_KEY_PREFIX.

Values are raw records (app/records.py), never a view: the caller's view is applied after the
read, so what one kind of caller may see cannot be served to another.

Fills are versioned. Each user has a generation key next to its record; a write raises it and
deletes the record in one transaction, after the database commit. A miss reads the generation
together with the (absent) record, and the fill stores the record only if the generation is
still the one read before the database was (one Lua script, atomic in Redis). A read that
began before a write and reaches Redis after its invalidation cannot put the older record back
(the stale-set race). An invalidation that failed (Redis unreachable from the writer while other
processes still reach it) is repeated by the outbox relay when it publishes the user's event
(app/relay.py); the TTL is the last backstop.

Redis is never needed to answer. Every call is bounded by CACHE_TIMEOUT with one retry; a
failure is counted (``lookout_cache_errors_total``) and the request goes on with the database;
for CACHE_RETRY_SECONDS afterwards this process reads and fills past Redis
(``lookout_cache_bypassed`` is 1), so a dead Redis costs one timeout per interval, not one per
request. Invalidations are always attempted: skipping one would leave a stale record for
processes that still reach Redis.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any, cast

from flask import Flask, current_app
from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

KEY = "lookout.cache"
NAME = "users"  # the label of this cache's metrics
log = logging.getLogger(__name__)

# KEYS: the record, its generation. ARGV: the generation read before the database ("" for none),
# the record, the TTL in ms. Stores only when no write has raised the generation since.
FILL = """
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
GENERATION_TTL_FACTOR = 10  # a generation outlives any record filled under it


class _Off:
    """A stand-in for a metric when telemetry is off."""

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass


class UserCache:
    """Cache-aside for user records in Redis: bounded, versioned, bypassed while Redis fails."""

    def __init__(self, url: str, ttl_seconds: int, timeout: float, retry_seconds: float, prefix: str,
                 metrics: Any | None = None) -> None:
        self.url, self.timeout, self.retry_seconds = url, timeout, retry_seconds
        self.ttl_ms = ttl_seconds * 1000
        self.generation_ttl_ms = self.ttl_ms * GENERATION_TTL_FACTOR
        self.prefix = prefix
        off = _Off()
        self.hits = metrics.cache_hits.labels(NAME) if metrics else off
        self.misses = metrics.cache_misses.labels(NAME) if metrics else off
        self.errors = metrics.cache_errors.labels(NAME) if metrics else off
        self.invalidations = metrics.cache_invalidations.labels(NAME) if metrics else off
        self.bypassed = metrics.cache_bypassed.labels(NAME) if metrics else off
        self._lock = threading.Lock()
        self._pid = -1
        self._client: Redis | None = None
        self._fill: Any = None
        self._retry_at = 0.0  # 0: Redis in use; else monotonic time of the next try

    def client(self) -> Redis:
        """This process's client, built on first use after a fork: gunicorn's workers never share
        the master's sockets."""
        client = self._client
        if client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = build_client(self.url, self.timeout)
                    self._fill = self._client.register_script(FILL)
                    self._pid = os.getpid()
                client = self._client
        return client

    def keys(self, user_id: int) -> tuple[str, str]:
        return f"{self.prefix}:user:{user_id}", f"{self.prefix}:user-generation:{user_id}"

    def get(self, user_id: int) -> tuple[bytes | None, bytes | None]:
        """(the cached record, None) on a hit; (None, a ticket for ``fill``) on a miss;
        (None, None) while Redis is bypassed or failed: do not fill."""
        if self._retry_at and not self._try_again():
            return None, None
        try:
            value, generation = cast(list[bytes | None], self.client().mget(self.keys(user_id)))
        except RedisError as error:
            self._failed("read", error)
            return None, None
        if value is not None:
            self.hits.inc()
            return value, None
        self.misses.inc()
        return None, generation or b""

    def fill(self, user_id: int, ticket: bytes | None, value: bytes) -> None:
        """Store ``value`` unless a write raised the user's generation since ``ticket`` was read."""
        if ticket is None or self._retry_at:
            return
        try:
            self.client()
            self._fill(keys=self.keys(user_id), args=[ticket, value, self.ttl_ms])
        except RedisError as error:
            self._failed("fill", error)

    def invalidate(self, user_ids: Iterable[int]) -> bool:
        """Remove the records of ``user_ids`` and raise their generations (after a commit);
        False when Redis failed (the outbox relay repeats it on the user's event)."""
        ids = list(user_ids)
        if not ids:
            return True
        try:
            with self.client().pipeline(transaction=True) as pipe:
                for user_id in ids:
                    record, generation = self.keys(user_id)
                    pipe.incr(generation)
                    pipe.pexpire(generation, self.generation_ttl_ms)
                    pipe.delete(record)
                pipe.execute()
        except RedisError as error:
            # The write is committed and stays so. Processes that reach Redis may serve the old
            # record until the outbox relay forgets it again on the user's event (app/relay.py),
            # CACHE_TTL_SECONDS at most; this one reads past the cache meanwhile.
            self._failed("invalidation", error)
            return False
        self.invalidations.inc(len(ids))
        if self._retry_at:
            self._recovered()
        return True

    def _try_again(self) -> bool:
        """While bypassed: whether this call should try Redis again (one per interval)."""
        with self._lock:
            if time.monotonic() < self._retry_at:
                return False
            self._retry_at = time.monotonic() + self.retry_seconds  # the others wait on this one
        self._recovered()
        return True

    def _recovered(self) -> None:
        self._retry_at = 0.0
        self.bypassed.set(0)

    def _failed(self, what: str, error: RedisError) -> None:
        self.errors.inc()
        self.bypassed.set(1)
        self._retry_at = time.monotonic() + self.retry_seconds
        log.warning("cache %s failed (%s); reading from the database for %g s", what,
                    type(error).__name__, self.retry_seconds)


def build_client(url: str, timeout: float) -> Redis:
    """A client that gives up fast: every call bounded by ``timeout`` with one immediate retry.

    redis-py's defaults differ by version (no timeout at all up to 7.x; 5 s and ten retries
    from 8.0), and the client retries three times with back-off since 6.0: none is a cache's.
    """
    pool = BlockingConnectionPool.from_url(
        url, timeout=timeout, max_connections=32, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1), health_check_interval=30)
    return Redis(connection_pool=pool)


def init_app(app: Flask) -> UserCache | None:
    """Attach the read cache to ``app`` when CACHE_URL is set; needs telemetry initialised."""
    config = app.config
    if not config["CACHE_URL"]:
        app.extensions[KEY] = None
        return None
    telemetry = app.extensions.get("lookout.telemetry")
    cache = UserCache(config["CACHE_URL"], config["CACHE_TTL_SECONDS"], config["CACHE_TIMEOUT"],
                      config["CACHE_RETRY_SECONDS"], config["CACHE_KEY_PREFIX"],
                      telemetry.metrics if telemetry is not None else None)
    app.extensions[KEY] = cache
    return cache


def cache_of(app: Flask | None = None) -> UserCache | None:
    """The app's read cache, or None when it has none."""
    cache: UserCache | None = (app or current_app).extensions.get(KEY)
    return cache
