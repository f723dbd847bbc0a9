"""The users service's metrics: the platform's (RED per route, in-flight, database, build) plus
its domain counters on the same registry."""

from __future__ import annotations

from flask import Flask
from prometheus_client import Counter, Gauge

from ..platform.metrics import (  # noqa: F401  # re-exported: the service's buckets and labels
    DB_BUCKETS,
    REQUEST_BUCKETS,
    UNMATCHED,
    Metrics,
    register_endpoint,
)

RATE_LIMITS = ("login", "login-failures", "writes")  # the scopes in app/ratelimit.py
AUTH_FAILURE_REASONS = ("credentials", "token", "forbidden")  # what the auth code counts
CACHES = ("users",)  # the read caches (app/cache.py)


class UsersMetrics(Metrics):
    """The platform's instruments and the users service's own."""

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        registry = self.registry
        self.users_created = Counter("lookout_users_created", "Users created.", registry=registry)
        self.auth_failures = Counter("lookout_auth_failures", "Refused authentications, by reason.",
                                     ("reason",), registry=registry)
        self.rate_limited = Counter("lookout_rate_limited", "Requests refused with 429, by limit.",
                                    ("limit",), registry=registry)
        self.cache_hits = Counter("lookout_cache_hits", "Reads answered from the read cache, by cache.",
                                  ("cache",), registry=registry)
        self.cache_misses = Counter("lookout_cache_misses", "Reads the read cache could not answer (then "
                                    "read from the database), by cache.", ("cache",), registry=registry)
        self.cache_errors = Counter("lookout_cache_errors", "Cache calls that failed or timed out (the "
                                    "request went on with the database), by cache.", ("cache",),
                                    registry=registry)
        self.cache_invalidations = Counter("lookout_cache_invalidations", "Cached records removed after "
                                           "a committed write, by cache.", ("cache",), registry=registry)
        self.cache_bypassed = Gauge("lookout_cache_bypassed", "1 while this process reads past its cache "
                                    "because Redis failed (CACHE_RETRY_SECONDS), by cache.", ("cache",),
                                    registry=registry, multiprocess_mode="max")
        for cache in CACHES:
            for instrument in (self.cache_hits, self.cache_misses, self.cache_errors,
                               self.cache_invalidations, self.cache_bypassed):
                instrument.labels(cache)
        # Series with a fixed set of label values exist at zero from the first scrape.
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for limit in RATE_LIMITS:
            self.rate_limited.labels(limit)
        self.rate_limit_fallback = Gauge(
            "lookout_rate_limit_fallback",
            "1 while this process counts rate limits in its own memory because the shared store failed.",
            registry=registry, multiprocess_mode="livesum")
